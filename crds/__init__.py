"""The CustomResourceDefinitions of group falconer.io (data only; see falconer/paths.py)."""
