"""Kubeconfig files for the local control plane's identities.

Certificates are embedded (the *-data keys) rather than referenced by path, so a
kubeconfig stays usable when copied out of the work dir, e.g. into a container or CI log.
"""

from __future__ import annotations

import base64
from pathlib import Path

import yaml

from falconer_e2e.pki import KeyPair


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode("ascii")


def write(path: Path, *, server: str, ca_cert: Path, client: KeyPair, user: str,
          context: str = "falconer") -> Path:
    """Write a kubeconfig for `client` talking to `server`; readable by its owner only."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{
            "name": context,
            "cluster": {"server": server, "certificate-authority-data": _b64(ca_cert)},
        }],
        "users": [{
            "name": user,
            "user": {
                "client-certificate-data": _b64(client.cert),
                "client-key-data": _b64(client.key),
            },
        }],
        "contexts": [{"name": context, "context": {"cluster": context, "user": user}}],
        "current-context": context,
        "preferences": {},
    }
    path.touch(mode=0o600, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path
