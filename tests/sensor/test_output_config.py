"""The outputs as a FalcoInstance gives them: `falconer sensor --config falconer.yaml`
with `outputs.http` and `grpc` as the operator renders them (TLS Secrets by name, their
files under `--tls-root`, as the DaemonSet mounts them), one live alert reaching both."""

from __future__ import annotations

import json
import socket

import falco_client
import marked_rule
import yaml
from alert_receiver import https_receiver

from falconer_e2e import pki

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_config_outputs_deliver_a_live_alert(start_sensor, tmp_path, marker):
    tls = pki.mutual_tls(tmp_path / "tls")
    root = tmp_path / "tls-root"                 # as the operator mounts the Secrets
    root.mkdir()
    (root / "http").symlink_to(tls.client.cert.parent)
    (root / "grpc").symlink_to(tls.server.cert.parent)
    marked_rule.write_rules(tmp_path)
    port = free_port()
    with https_receiver(tls.server.cert, tls.server.key, tls.ca) as (url, got):
        config = {"rulesFiles": ["rules.yaml"], "outputs": {
            "stdout": {"format": "json"},
            "http": {"url": url, "tlsSecret": "sidekick-client"},
            "grpc": {"port": port, "tlsSecret": "grpc-server", "bindAddress": "127.0.0.1", "threads": 2}}}
        (tmp_path / "falconer.yaml").write_text(yaml.safe_dump(config))
        sensor = start_sensor("--config", str(tmp_path / "falconer.yaml"), "--tls-root", str(root))
        marked_rule.open_marked(tmp_path, marker)
        assert sensor.rules_for(marker) == {marked_rule.NAME}
        posted = got.wait(lambda a: marker in a["output"])
        taken = falco_client.run(f"localhost:{port}", "get", (tls.client.cert, tls.client.key, tls.ca))
        summary = sensor.stop()
    assert len(posted) == 1 and posted[0]["rule"] == marked_rule.NAME
    assert taken.returncode == 0, taken.stderr
    assert [json.loads(x)["rule"] for x in taken.stdout.splitlines() if marker in x] == [marked_rule.NAME]
    assert "outputs: http, grpc" in summary
