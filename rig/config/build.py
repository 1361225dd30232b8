"""`build:` how and where images are built."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from .base import URL_PATTERN, Line, Name, SpecPathOrAbsolute, StrictModel

_PLATFORM = r"[a-z0-9]+/[a-z0-9_]+(/[a-z0-9.]+)?"


class BuildSpec(StrictModel):
    host: Name | None = Field(
        default=None,
        description="Inventory host that builds (context synced over SSH); "
        "empty means the control machine",
    )
    platform: str = Field(
        default="linux/amd64",
        pattern=rf"^{_PLATFORM}(,{_PLATFORM})*$",
        max_length=255,
        description="Target platform for buildx",
    )
    cache: Literal["auto", "registry", "inline", "none"] = Field(
        default="auto",
        description="auto: registry cache where the builder can export it, inline otherwise",
    )
    cache_image: Name = Field(default="buildcache", description="Registry image holding the cache")
    ca_bundle: SpecPathOrAbsolute | None = Field(
        default=None,
        description="CA bundle passed to builds as the secret 'pip_ca' (pip --cert), "
        "for PyPI behind a TLS-intercepting proxy. May be absolute (a system bundle such as "
        "/etc/ssl/certs/ca-certificates.crt); a relative path must stay inside the spec's folder",
    )
    network: Literal["default", "host", "none"] = Field(
        default="default",
        description="Network for RUN steps; host where the engine has no bridge (the lab)",
    )
    source_url: Line = Field(
        default="",
        pattern=rf"^$|{URL_PATTERN}",
        description="org.opencontainers.image.source label (the repository URL)",
    )
