"""Falconer's default rules files (data only; found with importlib.resources, see falconer/paths.py)."""
