"""Falco's legacy gRPC API (`falco.outputs`, `falco.version`, `falco.schema`): the .proto
files written for Falconer and the code grpcio-tools generates from them (`generate.py`;
never edited by hand)."""
