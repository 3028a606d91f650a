"""The names the operator shares with the cluster: its API group, labels, annotations.

The renderer writes them, the reconciler reads them back and the kopf handlers filter
watches by them; one definition keeps the three in agreement.
"""

from __future__ import annotations

GROUP = "falconer.io"
VERSION = "v1alpha1"
#: apiVersion of FalcoRule, FalcoInstance and FalcoAlert objects.
API_VERSION = f"{GROUP}/{VERSION}"
#: The label on everything the operator makes; its DaemonSet watch selects by it.
MANAGED_BY = {"app.kubernetes.io/managed-by": "falconer-operator"}
#: The ConfigMap annotation holding the hash of the rules the sensors were given.
RULES_HASH_ANNOTATION = f"{GROUP}/rules-hash"
