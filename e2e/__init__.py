"""Falconer's test harness, `falconer_e2e` (distribution `falconer-e2e`, e2e/pyproject.toml):
the local control plane, a real kubelet node, the locally built images, the all-in-one
main job and the end-to-end suite. It imports the product (`falconer`); the product never
imports it, and it is never in the product's wheel.
"""
