"""The operator's API access (falconer.operator.kube.Kube) against the real API server:
discovery from many handler threads at once (kopf runs sync handlers in threads)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from kubernetes.client import ApiClient

from falconer.operator.kube import Kube


def test_discovery_from_many_threads_at_once(kube_client: ApiClient) -> None:
    # A kind the API server does not serve makes the client rebuild its discovery cache
    # on every search; two searches at once once failed with KeyError 'resources' in CI.
    kube = Kube(kube_client)

    def ask(i: int) -> tuple[bool, bool]:
        return (kube.serves("monitoring.coreos.com/v1", "ServiceMonitor"),
                kube.serves("v1", "ConfigMap" if i % 2 else "Secret"))

    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(ask, range(48)))
    assert answers == [(False, True)] * 48
