#!/usr/bin/env bash
# client-py (PyPI `falco`), the Python client of Falco's gRPC outputs API, for
# tests/sensor/test_output_grpc.py, in a virtual env of its own: its only release, 0.4.0,
# pins grpcio==1.26.0 and protobuf==3.12.2 (no builds for Python 3.11), and its generated
# code needs protobuf 3 (on protobuf 7, which the sensor's generated code needs, its map
# fields do not decode). So: falco without its pins, grpcio as the dev env has it, the
# last protobuf 3 (run with PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION=python).
set -euo pipefail
ROOT="${FALCONER_ROOT:?}"
export PYTHONSAFEPATH=1   # never the repository root on sys.path (its operator/ folder)
VENV="$ROOT/.venv-falco-client"
PINS=(grpcio==1.85.3 protobuf==3.20.3 python-dateutil==2.9.0.post0)
FALCO_CLIENT=falco==0.4.0
stamp="$VENV/.installed-$(echo "${PINS[*]} $FALCO_CLIENT" | sha256sum | cut -c1-16)"
[ -e "$stamp" ] && exit 0
echo "    installing client-py ($FALCO_CLIENT) into $VENV" >&2
rm -rf "$VENV"
/usr/bin/python3 -m venv "$VENV"
"$VENV/bin/pip" install -q "${PINS[@]}"
"$VENV/bin/pip" install -q --no-deps "$FALCO_CLIENT"
touch "$stamp"
