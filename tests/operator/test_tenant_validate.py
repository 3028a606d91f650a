"""`falconer validate` on FalcoRule/ClusterFalcoRule manifests (operator/validate.py):
multi-document YAML with other kinds (kustomize output), `kind: List`, plain rules files
given with them, tenant scopes, exit status and the operator's positions. The live
comparison with the operator's status is in test_tenant_operator.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml
from tenant_attacks import ATTACKS, CLUSTER, TENANT_OK

GV = "falconer.io/v1alpha1"


def _run(*args: str) -> tuple[int, str]:
    proc = subprocess.run([sys.executable, "-m", "falconer", "validate", *args], text=True, capture_output=True,
                          timeout=120, cwd="/", env=dict(os.environ, PYTHONSAFEPATH="1"))
    return proc.returncode, proc.stdout + proc.stderr


def _falcorule(name: str, namespace: str | None, items_text: str) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    kind = "ClusterFalcoRule"
    if namespace is not None:
        meta["namespace"], kind = namespace, "FalcoRule"
    return {"apiVersion": GV, "kind": kind, "metadata": meta, "spec": {"items": yaml.safe_load(items_text)}}


def _write(path: Path, docs: list[dict[str, Any]]) -> Path:
    path.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    return path


def test_kustomize_output_with_other_kinds_and_a_good_tenant(tmp_path: Path) -> None:
    docs = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team-a"}},
            _falcorule("base", None, CLUSTER), _falcorule("good", "team-a", TENANT_OK),
            {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"}, "spec": {}}]
    rc, out = _run(str(_write(tmp_path / "all.yaml", docs)))
    assert rc == 0, out
    assert out.startswith("ok: 2 FalcoRules/ClusterFalcoRules; 0 errors")


def test_every_attack_is_refused_with_the_operators_position(tmp_path: Path) -> None:
    docs = [_falcorule("base", None, CLUSTER)]
    docs += [_falcorule(f"attack-{i}", "team-b", a.text) for i, a in enumerate(ATTACKS)]
    rc, out = _run("--json", str(_write(tmp_path / "attacks.yaml", docs)))
    assert rc == 1, out
    report = json.loads(out)
    by_rule = {e["falcoRule"]: e for e in report["errors"]}
    assert len(by_rule) == len(ATTACKS) == len(report["errors"])
    for i, attack in enumerate(ATTACKS):
        err = by_rule[f"team-b/attack-{i}"]
        assert (err["code"], err["path"]) == ("LOAD_ERR_VALIDATE", f"spec.items[{attack.item}].{attack.field}")
        assert attack.message in err["message"] and err["documentLine"] > 1


def test_a_cluster_wide_namespace_may_change_cluster_rules(tmp_path: Path) -> None:
    docs = [_falcorule("base", None, CLUSTER), _falcorule("tune", "security", ATTACKS[4].text)]
    path = _write(tmp_path / "m.yaml", docs)
    assert _run(str(path))[0] == 1
    rc, out = _run("--cluster-namespace", "security", str(path))
    assert rc == 0, out


def test_list_and_rules_files_load_first(tmp_path: Path) -> None:
    rules_file = tmp_path / "cluster_rules.yaml"
    rules_file.write_text(CLUSTER)
    listed = {"apiVersion": "v1", "kind": "List",
              "items": [_falcorule("bad", "team-a", TENANT_OK.replace("my_tool_run\n  output",
                                                                       "my_tool_run and\n  output"))]}
    rc, out = _run(str(rules_file), str(_write(tmp_path / "list.yaml", [listed])))
    assert rc == 1, out
    (line,) = [ln for ln in out.splitlines() if ": error " in ln]
    assert line.startswith(f"{tmp_path / 'list.yaml'}:1: error team-a/bad spec.items[2].condition:1:")
    assert "LOAD_ERR_COMPILE_CONDITION" in line


def test_a_broken_manifest_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text(f"apiVersion: {GV}\nkind: FalcoRule\nmetadata: {{name: x}}\n---\n- 1\n")
    rc, out = _run(str(path))
    assert rc == 2 and "expected an object" in out
