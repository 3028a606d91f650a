"""The README's main job (`./dev run`): Falconer's all-in-one demo on this host.

The orchestration lives in `falconer.e2e.allinone`: local control plane, CRDs, operator,
default FalcoRules and FalcoInstance, a kubelet stand-in and the sensor, until Ctrl-C.
"""

from __future__ import annotations

import sys

from falconer.e2e.allinone import main

if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
