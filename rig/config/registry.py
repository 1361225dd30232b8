"""`registry:` where images live (GHCR in production, the lab registry in the lab)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from .base import EnvName, Line, SpecPath, StrictModel


class RegistrySpec(StrictModel):
    host: str = Field(
        description="Registry host[:port], e.g. ghcr.io",
        pattern=r"^[A-Za-z0-9.-]+(:[0-9]{1,5})?$",
        max_length=255,
    )
    namespace: str = Field(
        description="Path under the host; images are <host>/<namespace>/<image>:<tag>",
        pattern=r"^[a-z0-9]+([._/-][a-z0-9]+)*$",
        max_length=255,
    )
    username: Line = Field(
        description="Account that logs in (docker login -u); no spaces or ':'",
        min_length=1,
        pattern=r"^[^:\s]+$",
    )
    token_env: EnvName = Field(
        description="Name of the environment variable holding the token or password. "
        "The token itself never goes in the spec."
    )
    token_file: SpecPath | None = Field(
        default=None,
        description="Optional file (mode 0600) read when token_env is unset; relative to the spec "
        "and inside its folder (no absolute path, no escaping `..`)",
    )
    auth: Literal["token", "basic"] = Field(
        default="token",
        description="token: Docker/GHCR bearer-token exchange; basic: HTTP basic auth",
    )
    ca_file: SpecPath | None = Field(
        default=None,
        description="PEM CA that signed the registry's TLS certificate, for private registries; "
        "relative to the spec and inside its folder; "
        "installed on hosts under /etc/docker/certs.d/<host>/ca.crt",
    )

    def repository(self, image: str) -> str:
        """Full repository name for an image: host/namespace/image."""
        return f"{self.host}/{self.namespace}/{image}"
