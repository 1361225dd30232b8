"""The declarative spec: pydantic models (one module per section) and the one loader."""

from .fleet import Fleet
from .loader import load_fleet, load_profile
from .profiles import ProfileSpec

__all__ = ["Fleet", "ProfileSpec", "load_fleet", "load_profile"]
