"""The image tests' fixtures: a private containerd (tests/support/private_containerd.py)."""

from private_containerd import containerd

__all__ = ["containerd"]
