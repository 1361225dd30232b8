"""Waves: the canary hosts first, then the rest in batches (pure)."""

from __future__ import annotations

from .config import Fleet
from .config.rollout import PERCENT
from .errors import RigError


def parse_batch(value: str | int | None) -> int | str | None:
    """--batch 2 or --batch 50% (None: the spec's)."""
    if value is None or isinstance(value, int):
        return value
    value = value.strip()
    if value.isdigit() and int(value) >= 1:
        return int(value)
    match = PERCENT.match(value)
    if match and 1 <= int(match.group(1)) <= 100:
        return value
    raise RigError(f"--batch {value!r}: expected a count such as 2 or a share such as 50%")


def waves(fleet: Fleet, hosts: list[str], canary: list[str] | None = None,
          batch: int | str | None = None) -> list[list[str]]:
    """[[canary hosts], [batch 1], [batch 2], ...] over `hosts`, in fleet order.

    Canary hosts that are not targeted are left out; with no targeted canary, the first
    targeted host is the canary (a rollout never starts with a whole batch untested)."""
    unknown = [h for h in (canary or []) if h not in fleet.hosts]
    if unknown:
        raise RigError(f"--canary: unknown host {', '.join(unknown)} (hosts: {', '.join(fleet.hosts)})")
    ordered = [h for h in fleet.hosts if h in hosts]
    if not ordered:
        return []
    chosen = canary if canary is not None else fleet.rollout.canary
    first = [h for h in ordered if h in chosen] or ordered[:1]
    rest = [h for h in ordered if h not in first]
    size = fleet.batch_size(len(rest), batch)
    return [first] + [rest[i:i + size] for i in range(0, len(rest), size)]
