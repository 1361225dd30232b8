"""`build:` how and where images are built."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from .base import Name, StrictModel


class BuildSpec(StrictModel):
    host: Name | None = Field(
        default=None,
        description="Inventory host that builds (context synced over SSH); "
        "empty means the control machine",
    )
    platform: str = Field(default="linux/amd64", description="Target platform for buildx")
    cache: Literal["auto", "registry", "inline", "none"] = Field(
        default="auto",
        description="auto: registry cache where the builder can export it, inline otherwise",
    )
    cache_image: Name = Field(default="buildcache", description="Registry image holding the cache")
    ca_bundle: str | None = Field(
        default=None,
        description="CA bundle passed to builds as the secret 'pip_ca' (pip --cert), "
        "for PyPI behind a TLS-intercepting proxy",
    )
    network: Literal["default", "host", "none"] = Field(
        default="default",
        description="Network for RUN steps; host where the engine has no bridge (the lab)",
    )
    source_url: str = Field(
        default="",
        description="org.opencontainers.image.source label (the repository URL)",
    )
