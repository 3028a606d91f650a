"""Falconer: cloud-native runtime security for Kubernetes.

The package is assembled from the component folders at the top of the repository:
`falconer.engine` (engine/), `falconer.sensor` (sensor/), `falconer.operator`
(operator/). This root package holds only what ties them together: the command line
and the paths of the shipped data.
"""

__version__ = "0.1.0"
