"""`build:` how and where images are built."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from .base import URL_PATTERN, EnvName, Line, Name, SpecPath, SpecPathOrAbsolute, StrictModel

_PLATFORM = r"[a-z0-9]+/[a-z0-9_]+(/[a-z0-9.]+)?"


class SigningSpec(StrictModel):
    key: SpecPathOrAbsolute | None = Field(
        default=None,
        description="Private key that signs every image rig pushes: cosign's encrypted format "
        "(`rig keys generate`, `cosign generate-key-pair`) or a PEM P-256 key. None: pushed "
        "unsigned",
    )
    password_env: EnvName | None = Field(
        default=None,
        description="Name of the variable holding the key's password (never the password "
        "itself: not in the spec, not in argv)",
    )
    password_file: SpecPath | None = Field(
        default=None,
        description="File (mode 0600) holding the password, read when password_env is unset "
        "(the lab's key); relative to the spec and inside its folder",
    )
    public_keys: list[SpecPathOrAbsolute] = Field(
        default_factory=list, max_length=32,
        description="Public keys (PEM, cosign.pub) whose signature a rollout accepts; with any "
        "set, rollout.require_signed is on unless turned off",
    )
    sbom: bool = Field(
        default=True,
        description="With a key: attest an SPDX SBOM of each pushed image, made by syft from the "
        "image in the registry (false: provenance only)",
    )


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
    signing: SigningSpec = Field(
        default_factory=SigningSpec,
        description="cosign-compatible signatures of pushed images, checked before rollouts",
    )
    source_url: Line = Field(
        default="",
        pattern=rf"^$|{URL_PATTERN}",
        description="org.opencontainers.image.source label (the repository URL)",
    )
