"""The local lab: a Docker engine, a TLS+auth registry and SSH-reachable systemd hosts."""

from .lab import Lab
from .layout import LabPaths
from .state import LabState

__all__ = ["Lab", "LabPaths", "LabState"]
