"""User-facing errors: the CLI prints these as plain lines, never as a traceback."""

from __future__ import annotations


class RigError(Exception):
    """A mistake or a condition the user can act on. `lines` are printed one per line."""

    def __init__(self, *lines: str):
        self.lines = [line for line in lines if line]
        super().__init__("\n".join(self.lines))


class SpecError(RigError):
    """The declarative spec (fleet.yml, profiles, overlay) is invalid."""
