"""`proxy:` the per-host HAProxy that owns each service's public port.

Containers leave the host network: each runs on a rig-managed bridge network, published on a
loopback port of one of two slots (a and b), and the proxy forwards the public port to the slot
that is live. A rollout starts the new version on the other slot (start_first) or puts the
service in maintenance while it swaps (stop_first); see rig/commands/proxy.py."""

from __future__ import annotations

from pydantic import Field, field_validator

from .base import Duration, Name, StrictModel


class ProxySpec(StrictModel):
    enabled: bool = Field(
        default=True,
        description="HAProxy on every host owns the services' public ports (installed by "
        "bootstrap from the distribution); false: containers bind their ports on the host "
        "network, and every swap refuses connections while the new version loads")
    network: Name = Field(
        default="rig", description="The bridge network service containers run on")
    slot_offsets: tuple[int, int] = Field(
        default=(10000, 20000),
        description="Slot a and b of a service listen on 127.0.0.1:<port + offset>")
    retry_after: Duration = Field(
        default=10.0, gt=0,
        description="Retry-After (seconds) of the 503 maintenance answer")

    @field_validator("slot_offsets")
    @classmethod
    def _distinct(cls, offsets: tuple[int, int]) -> tuple[int, int]:
        if offsets[0] == offsets[1] or min(offsets) < 1:
            raise ValueError("slot_offsets must be two different positive numbers")
        return offsets

    def slot_port(self, port: int, slot: str) -> int:
        return port + self.slot_offsets[0 if slot == "a" else 1]
