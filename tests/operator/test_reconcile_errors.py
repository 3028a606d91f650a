"""API failures below HTTP (server unreachable) become a TransientError, which the
handlers turn into a delayed retry, never a crash or a tight loop."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest

from falconer.operator.kube import Kube
from falconer.operator.reconcile import Reconciler, TransientError

if TYPE_CHECKING:
    from falconer_e2e.controlplane import ControlPlane

pytestmark = pytest.mark.kube


@pytest.fixture
def unreachable(control_plane: ControlPlane) -> Iterator[Reconciler]:
    """A Reconciler whose API server goes away after discovery (a closed loopback port)."""
    api_client = control_plane.api_client()
    kube = Kube(api_client)  # discovery happens here, against the live server
    api_client.configuration.host = "https://127.0.0.1:1"
    posted: list[Any] = []
    try:
        yield Reconciler(kube, lambda *args: posted.append(args))
    finally:
        api_client.close()


def test_unreachable_server_is_transient(unreachable: Reconciler) -> None:
    with pytest.raises(TransientError, match="reading FalcoInstance ns/i: MaxRetryError"):
        unreachable.reconcile_instance("ns", "i")
    with pytest.raises(TransientError, match="deleting ClusterRoleBinding"):
        unreachable.instance_deleted("ns", "i")
