"""client-py (PyPI `falco` 0.4.0, Falco's Python gRPC client) run as users run it, in a
process of its own, from the virtual env tools/setup/15-falco-client.sh makes: its
generated code needs protobuf 3 (pure-Python implementation), and its message names
(`falco.outputs.response`, ...) would clash with the sensor's generated modules in one
process. Prints one JSON object per line (client-py's `output_format="json"`).

    .venv-falco-client/bin/python falco_client.py ENDPOINT version|get|sub [CERT KEY CA]
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__)
#: The client's interpreter (tools/setup/15-falco-client.sh).
PYTHON = Path(os.environ.get("FALCONER_ROOT", SCRIPT.parents[2])) / ".venv-falco-client" / "bin" / "python"


def command(endpoint: str, call: str, tls: tuple[Path, Path, Path] | None = None) -> list[str]:
    """The argv running the client: `call` is version, get or sub."""
    return [str(PYTHON), str(SCRIPT), endpoint, call, *(str(p) for p in tls or ())]


def env() -> dict[str, str]:
    """The client's environment: protobuf's pure-Python implementation."""
    return dict(os.environ, PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION="python", PYTHONUNBUFFERED="1")


def run(endpoint: str, call: str, tls: tuple[Path, Path, Path] | None = None,
        timeout_s: float = 30.0) -> subprocess.CompletedProcess[str]:
    """Run a call that ends (version, get)."""
    return subprocess.run(command(endpoint, call, tls), env=env(), text=True, capture_output=True,
                          timeout=timeout_s, check=False)


def main(argv: list[str]) -> None:
    from falco import Client  # type: ignore[import-untyped]  # noqa: PLC0415

    endpoint, call, *tls = argv
    crt, key, ca = tls or (None, None, None)
    client = Client(endpoint, client_crt=crt, client_key=key, ca_root=ca, output_format="json")
    if call == "version":
        print(client.version(), flush=True)
        return
    for line in getattr(client, call)():
        print(line, flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
