"""`registry:` where images live (GHCR in production, the lab registry in the lab)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from .base import EnvName, StrictModel


class RegistrySpec(StrictModel):
    host: str = Field(
        description="Registry host[:port], e.g. ghcr.io",
        pattern=r"^[A-Za-z0-9.-]+(:\d{1,5})?$",
    )
    namespace: str = Field(
        description="Path under the host; images are <host>/<namespace>/<image>:<tag>",
        pattern=r"^[a-z0-9]+([._/-][a-z0-9]+)*$",
    )
    username: str = Field(description="Account that logs in (docker login -u)", min_length=1)
    token_env: EnvName = Field(
        description="Name of the environment variable holding the token or password. "
        "The token itself never goes in the spec."
    )
    token_file: str | None = Field(
        default=None,
        description="Optional file (mode 0600) read when token_env is unset; relative to the spec",
    )
    auth: Literal["token", "basic"] = Field(
        default="token",
        description="token: Docker/GHCR bearer-token exchange; basic: HTTP basic auth",
    )
    ca_file: str | None = Field(
        default=None,
        description="PEM CA that signed the registry's TLS certificate, for private registries; "
        "installed on hosts under /etc/docker/certs.d/<host>/ca.crt",
    )

    def repository(self, image: str) -> str:
        """Full repository name for an image: host/namespace/image."""
        return f"{self.host}/{self.namespace}/{image}"
