"""`rollout:` canary first, then batches, with a health gate and automatic rollback."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator

from .base import Duration, Name, StrictModel, parse_duration
from .runtime import SizeOrZero

PERCENT = re.compile(r"^([0-9]{1,3})%\Z")  # a batch share: "50%"


def parse_pause(value: object) -> float | str | None:
    """`manual`, a duration such as 5m (0 or none: no pause), or None."""
    if value is None or value in ("none", "no", 0, "0"):
        return None
    if value == "manual":
        return "manual"
    try:
        seconds = parse_duration(value)
    except ValueError:
        raise ValueError("pause must be a duration such as 5m or 30s, or manual") from None
    return seconds or None


class RolloutSpec(StrictModel):
    canary: list[Name] = Field(
        min_length=1, description="Hosts of the first wave (MainPC in the real fleet)"
    )
    batch: int | str = Field(
        default=1,
        description="Hosts per later wave: a count (2) or a share of the remaining hosts ('50%')",
    )
    auto_rollback: Literal["wave", "fleet", "none"] = Field(
        default="wave",
        description="On failure revert the failing wave (wave), every host touched (fleet), "
        "or nothing (none)",
    )
    min_healthy: Duration = Field(
        default=3.0, description="A new container must stay healthy this long to pass the gate"
    )
    stop_timeout: Duration = Field(default=10.0, description="docker stop -t for old containers")
    lock_stale_after: Duration = Field(
        default=3600.0, description="A lock whose heartbeat is older than this is reported as stale"
    )
    pause: float | Literal["manual"] | None = Field(
        default=None,
        description="After the canary passes its gate: a duration (5m) to keep watching its "
        "health before the batches (a failure rolls it back like a failed gate), or manual: stop "
        "after the canary, locks held, until `rig promote` or `rig abort`",
    )
    require_signed: bool | None = Field(
        default=None,
        description="Refuse, before any host is touched, an image without a valid signature by "
        "one of build.signing.public_keys. Default: on when public keys are set; false turns it "
        "off (and every rollout says so)",
    )
    require_provenance: bool | None = Field(
        default=None,
        description="With signatures required: refuse also an image without rig's SLSA provenance "
        "signed by one of those keys, naming the service's own build target and the commit its "
        "tag names. Default: as require_signed; false turns it off (images signed with `rig images "
        "sign`, which were not built by rig, have none; every rollout says so)",
    )
    keep_images: int = Field(
        default=3, ge=1, le=1000,
        description="`rig prune` keeps this many newest images per service on each host (plus "
        "whatever runs and what a rollback would need)")
    gpu_reserve: SizeOrZero = Field(
        default=1024 * 2**20,
        description="GPU memory kept free on every card for the driver, CUDA contexts and a "
        "display (1g; 0 for none): a host's GPU services' gpu_memory must fit in the card's "
        "memory less this")
    strategy: Literal["auto", "start_first", "stop_first"] = Field(
        default="auto",
        description="How each service is swapped behind the host's proxy (a service's runtime "
        "or by_profile may say otherwise): start_first, stop_first, or auto: start_first for a "
        "service that uses no GPU or whose gpu_memory fits twice on the card next to the other "
        "services', stop_first otherwise (`rig plan` says which and why)")
    drain: Duration = Field(
        default=30.0, ge=0,
        description="After a switch, how long the old container keeps serving the connections it "
        "has (WebSocket streams) before it is stopped")
    host_timeout: Duration = Field(
        default=120.0, gt=0,
        description="Deadline for any one remote step (pull, stop, run, ledger, lock); a host "
        "that passes it is failed with the reason, like a failed gate",
    )

    @field_validator("pause", mode="before")
    @classmethod
    def _pause_shape(cls, pause: object) -> float | str | None:
        return parse_pause(pause)

    @field_validator("batch")
    @classmethod
    def _batch_shape(cls, batch: int | str) -> int | str:
        if isinstance(batch, bool):
            raise ValueError("batch must be a count such as 2 or a percentage such as '50%'")
        if isinstance(batch, int):
            if not 1 <= batch <= 10000:
                raise ValueError("batch must be between 1 and 10000 hosts")
            return batch
        match = PERCENT.match(batch.strip()) if len(batch) < 16 else None
        if not match or not 1 <= int(match.group(1)) <= 100:
            raise ValueError("batch must be a count such as 2 or a percentage such as '50%'")
        return batch.strip()
