"""The README's main job (`./dev run`, i.e. `python -m falconer_e2e.main_job [--work-dir
DIR] ...`): Falconer's all-in-one demo on this host.

The orchestration lives in `falconer_e2e.allinone`: local control plane, CRDs, operator,
default FalcoRules and FalcoInstance, a kubelet stand-in and the sensor, until Ctrl-C.
It belongs to the harness, not to the product: the product package never imports it.
"""

from __future__ import annotations

import sys

from falconer_e2e.allinone import main

if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
