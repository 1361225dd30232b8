"""`hosts:` the machines of the fleet: which profile each has and which groups it is in.

Addresses and users are not here: they come from the inventory (production.py reads them from
the environment or an untracked file; lab.py from the lab's state)."""

from __future__ import annotations

from pydantic import Field

from .base import Name, StrictModel


class HostSpec(StrictModel):
    profile: Name = Field(description="Machine profile file profiles/<profile>.yml")
    groups: list[Name] = Field(default_factory=list, description="Inventory groups, e.g. gpu")
