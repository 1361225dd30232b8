"""`families:` and `services:` the images rig builds and the containers it runs."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, Field, field_validator

from .base import (
    NAME_PATTERN,
    Duration,
    EnvName,
    ImageRef,
    Line,
    Name,
    SpecPath,
    StrictModel,
    Text,
    check_json_value,
)
from .checks import CheckSpec
from .runtime import RuntimeSpec, SecretSource

JsonObject = Annotated[dict[Line, Any], AfterValidator(check_json_value)]
SecretName = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", max_length=64)]


class FamilySpec(StrictModel):
    context: SpecPath = Field(
        description="Build context holding the Dockerfile, relative to the spec and inside its folder"
    )
    base_image: ImageRef = Field(description="Passed as ARG BASE_IMAGE, e.g. a CUDA runtime image")
    description: Text = Field(default="", description="What the family provides")


class HealthSpec(StrictModel):
    path: str = Field(
        default="/health",
        pattern=r"^/[A-Za-z0-9._~!$&()*+,;=:@%/?-]*$",
        max_length=1024,
        description="HTTP path probed on the host (a URL path: no spaces or quotes)",
    )
    expect: JsonObject = Field(
        default_factory=lambda: {"status": "ok"},
        description="JSON body keys and values a healthy answer must contain",
    )
    start_period: Duration = Field(default=30.0, description="Grace time before failures count")
    interval: Duration = Field(default=1.0, gt=0, description="Time between probes")
    timeout: Duration = Field(default=2.0, gt=0, description="Time one probe may take")
    retries: int = Field(default=3, ge=1, le=1000,
                         description="Consecutive failures that mean unhealthy")


class ServiceSpec(StrictModel):
    family: Name = Field(description="Family image the service builds on (FROM the family)")
    context: SpecPath = Field(
        description="Build context with Dockerfile, app and requirements.lock; relative to the "
        "spec and inside its folder"
    )
    port: int = Field(ge=1, le=65535, description="Port the service listens on (host network)")
    health: HealthSpec = Field(default_factory=HealthSpec, description="How health is judged")
    gpu: bool = Field(default=False, description="Shorthand for runtime: {gpus: all} (GPU hosts)")
    hosts: list[Name] = Field(min_length=1, description="Host names or group names that run it")
    per_machine: bool = Field(
        default=False,
        description="Build one image per machine profile (ARG MACHINE) instead of one for all",
    )
    env: dict[EnvName, Line] = Field(
        default_factory=dict, description="Extra environment (one line per value)"
    )
    volumes: list[Line] = Field(
        default_factory=list,
        description="Extra mounts as src:dst[:ro] (caches and logs: runtime.cache_volume, "
        "runtime.log_volume)",
    )
    runtime: RuntimeSpec = Field(default_factory=RuntimeSpec,
                                 description="Resources, security, GPUs over the fleet's defaults")
    by_profile: dict[Annotated[str, Field(pattern=NAME_PATTERN, max_length=63)], RuntimeSpec] = Field(
        default_factory=dict, description="Runtime settings per machine profile, over `runtime`")
    secrets: dict[SecretName, SecretSource] = Field(
        default_factory=dict, description="name -> where the control machine reads it; mounted "
        "read-only at /run/secrets/<name>, never in the environment or the spec")
    checks: list[CheckSpec] = Field(
        default_factory=list, description="Requests beyond /health the services suite sends")

    @field_validator("volumes")
    @classmethod
    def _volume_shape(cls, volumes: list[str]) -> list[str]:
        for volume in volumes:
            parts = volume.split(":")
            if len(parts) not in (2, 3) or not all(parts[:2]) or not parts[1].startswith("/"):
                raise ValueError(f"volume {volume!r} should look like src:/dst or src:/dst:ro")
            if len(parts) == 3 and parts[2] not in ("ro", "rw"):
                raise ValueError(f"volume {volume!r}: mode must be ro or rw")
            if any(c.isspace() or c in "'\"\\,$`" for c in volume):
                raise ValueError(f"volume {volume!r}: no spaces, quotes, commas or $ in a mount")
        return volumes
