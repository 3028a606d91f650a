"""The aggregated ClusterRoles (operator/manifests/rbac.yaml): a user with only the
built-in `edit` role in one namespace (a RoleBinding; impersonated on the real API
server) manages FalcoRules and reads FalcoAlerts there, and nothing else of Falconer's:
not in another namespace, not ClusterFalcoRules, not statuses, not FalcoAlert writes.
`view` users read FalcoRules and FalcoAlerts."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from operator_harness import kubectl, wait_for

pytestmark = pytest.mark.kube

USER = "tenant-alice"
VIEWER = "tenant-bob"


@pytest.fixture(scope="module")
def namespaces(installed: Path, op_namespace: str) -> Iterator[tuple[str, str]]:
    own, other = f"{op_namespace}-own", f"{op_namespace}-other"
    for ns in (own, other):
        kubectl(installed, "create", "namespace", ns)
    kubectl(installed, "create", "rolebinding", "alice-edit", "--clusterrole=edit", f"--user={USER}", "-n", own)
    kubectl(installed, "create", "rolebinding", "bob-view", "--clusterrole=view", f"--user={VIEWER}", "-n", own)
    # the controller manager aggregates the rules into edit/view
    wait_for(lambda: kubectl(installed, "auth", "can-i", "create", "falcorules.falconer.io", "-n", own,
                             f"--as={USER}", check=False).stdout.strip() == "yes", timeout=60,
             what="the aggregation into edit")
    yield own, other
    kubectl(installed, "delete", "namespace", own, other, "--wait=false", check=False)


def can(installed: Path, user: str, *args: str) -> bool:
    done = kubectl(installed, "auth", "can-i", *args, f"--as={user}", check=False)
    return done.stdout.strip() == "yes"


@pytest.mark.parametrize(("verb", "resource", "in_own", "allowed"), [
    ("create", "falcorules.falconer.io", True, True),
    ("update", "falcorules.falconer.io", True, True),
    ("delete", "falcorules.falconer.io", True, True),
    ("list", "falcoalerts.falconer.io", True, True),
    ("create", "falcorules.falconer.io", False, False),
    ("list", "falcorules.falconer.io", False, False),
    ("list", "falcoalerts.falconer.io", False, False),
    ("patch", "falcorules.falconer.io/status", True, False),
    ("create", "falcoalerts.falconer.io", True, False),
    ("delete", "falcoalerts.falconer.io", True, False),
    ("create", "falcoinstances.falconer.io", True, False),
])
def test_edit_user_rights(installed: Path, namespaces: tuple[str, str], verb: str, resource: str, in_own: bool,
                          allowed: bool) -> None:
    ns = namespaces[0] if in_own else namespaces[1]
    resource, _, sub = resource.partition("/")  # `kubectl auth can-i` reads r/x as a name
    extra = [f"--subresource={sub}"] if sub else []
    assert can(installed, USER, verb, resource, "-n", ns, *extra) is allowed


def test_edit_user_cannot_touch_cluster_rules(installed: Path, namespaces: tuple[str, str]) -> None:
    assert not can(installed, USER, "create", "clusterfalcorules.falconer.io")
    assert not can(installed, USER, "list", "clusterfalcorules.falconer.io")


def test_edit_user_applies_a_falcorule_in_its_namespace_only(installed: Path, namespaces: tuple[str, str]) -> None:
    own, other = namespaces
    manifest = ("apiVersion: falconer.io/v1alpha1\nkind: FalcoRule\nmetadata: {name: mine}\nspec:\n"
                "  items:\n  - list: my_tools\n    items: [curl]\n")
    kubectl(installed, "apply", "-n", own, f"--as={USER}", "-f", "-", stdin=manifest)
    refused = kubectl(installed, "apply", "-n", other, f"--as={USER}", "-f", "-", stdin=manifest, check=False)
    assert refused.returncode != 0 and "forbidden" in refused.stderr


def test_view_user_reads_only(installed: Path, namespaces: tuple[str, str]) -> None:
    own, _ = namespaces
    assert can(installed, VIEWER, "list", "falcorules.falconer.io", "-n", own)
    assert can(installed, VIEWER, "list", "falcoalerts.falconer.io", "-n", own)
    assert not can(installed, VIEWER, "create", "falcorules.falconer.io", "-n", own)
