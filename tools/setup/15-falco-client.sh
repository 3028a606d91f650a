#!/usr/bin/env bash
# client-py (PyPI `falco`), the Python client of Falco's gRPC outputs API, for
# tests/sensor/test_output_grpc.py. Its only release, 0.4.0, pins grpcio==1.26.0 and
# protobuf==3.12.2 (no builds for Python 3.11), so it goes into the dev env without its
# pins (--no-deps): grpcio and python-dateutil are already there, and its old generated
# code runs on protobuf's pure-Python implementation (the test sets
# PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION=python in the client's process).
set -euo pipefail
ROOT="${FALCONER_ROOT:?}"
VENV="$ROOT/.venv"
FALCO_CLIENT_VERSION=0.4.0
[ "$("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("falco"))' 2>/dev/null)" \
    = "$FALCO_CLIENT_VERSION" ] && exit 0
echo "    installing client-py (falco $FALCO_CLIENT_VERSION) without its pins" >&2
"$VENV/bin/pip" install -q --no-deps "falco==$FALCO_CLIENT_VERSION"
