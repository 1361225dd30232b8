"""`bootstrap:` what a ready host has: engine, buildx, daemon settings, user, NVIDIA toolkit."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from .base import ImageRef, Name, StrictModel, Url, Word

APT_VERSION = r"^[A-Za-z0-9][A-Za-z0-9.+~:-]*$"


class DockerEngineSpec(StrictModel):
    source: Literal["distro", "docker-ce"] = Field(
        default="distro",
        description="distro: the distribution's docker.io; docker-ce: Docker's apt repository",
    )
    version: str | None = Field(
        default=None,
        pattern=APT_VERSION,
        max_length=255,
        description="Pinned docker-ce package version (apt version string); docker-ce only",
    )
    repo_url: Url = Field(
        default="https://download.docker.com/linux",
        description="Docker apt repository base (an internal mirror for air-gapped hosts); "
        "http(s), no spaces or quotes: it becomes a field of an apt source line",
    )

    @model_validator(mode="after")
    def _pin_for_docker_ce(self) -> DockerEngineSpec:
        if self.source == "docker-ce" and not self.version:
            raise ValueError("source docker-ce needs a pinned version")
        return self


class BuildxSpec(StrictModel):
    source: Literal["distro", "docker-ce", "binary"] = Field(
        default="distro",
        description="distro: docker-buildx; docker-ce: docker-buildx-plugin; binary: url+sha256",
    )
    version: str | None = Field(
        default=None, pattern=APT_VERSION, max_length=255,
        description="Expected version (e.g. 0.13.1); a different one is replaced",
    )
    url: Url | None = Field(default=None, description="Binary URL, for source binary")
    sha256: str | None = Field(
        default=None, pattern=r"^[0-9a-f]{64}$", description="sha256 of the binary at url"
    )

    @model_validator(mode="after")
    def _binary_needs_url(self) -> BuildxSpec:
        if self.source == "binary" and not (self.url and self.sha256 and self.version):
            raise ValueError("source binary needs url, sha256 and version")
        return self


class DaemonSpec(StrictModel):
    log_driver: Word = Field(default="json-file", description="Container log driver")
    log_max_size: str = Field(default="10m", pattern=r"^[0-9]{1,9}[kmg]$", description="Per log file")
    log_max_file: int = Field(default=3, ge=1, le=1000, description="Rotated log files kept")
    storage_driver: Word | None = Field(default=None, description="e.g. overlay2; empty = default")
    registry_mirrors: list[Url] = Field(default_factory=list, description="Pull-through mirrors")
    bridge: Word | None = Field(default=None, description="'none' disables the default bridge")
    iptables: bool | None = Field(default=None, description="false stops dockerd's iptables")
    ip_forward: bool | None = Field(
        default=None, description="false: dockerd leaves the host's IP forwarding off, so "
        "containers on rig's bridge network reach the host (its proxy) and nothing beyond")
    live_restore: bool = Field(default=True, description="Keep containers up across restarts")
    icc: bool = Field(
        default=False, description="Inter-container traffic on the default bridge (CIS Docker "
        "Benchmark 2.1: off); dockerd needs iptables for it to be off, so with iptables: false "
        "it is left to dockerd's default")
    userland_proxy: bool = Field(
        default=False, description="docker-proxy for published ports (CIS 2.15: off; the "
        "kernel's NAT does it)")
    no_new_privileges: bool = Field(
        default=True, description="Containers cannot gain privileges through setuid unless "
        "they ask (CIS 2.18: on); rig's services ask for it anyway")


class NvidiaSpec(StrictModel):
    enabled: bool = Field(
        default=True,
        description="rig manages the GPU of hosts whose profile has one: reads it with "
        "nvidia-smi, checks it against the profile, checks driver and free memory before a "
        "rollout, and fails a canary on new Xid errors",
    )
    toolkit: bool = Field(
        default=True,
        description="Install the NVIDIA container toolkit (nvidia as the default runtime) and "
        "give GPU services their GPUs (--gpus); false where it cannot be installed (the lab: "
        "an nvidia-smi stand-in, no NVIDIA repository), GPU facts and checks only",
    )
    repo_url: Url = Field(
        default="https://nvidia.github.io/libnvidia-container",
        description="NVIDIA container toolkit apt repository",
    )
    smoke_image: ImageRef | None = Field(
        default=None, description="If set, `docker run --rm --gpus all <image> nvidia-smi` once"
    )


class BootstrapSpec(StrictModel):
    docker: DockerEngineSpec = Field(default_factory=DockerEngineSpec)
    buildx: BuildxSpec = Field(default_factory=BuildxSpec)
    daemon: DaemonSpec = Field(default_factory=DaemonSpec)
    nvidia: NvidiaSpec = Field(default_factory=NvidiaSpec)
    deploy_user: Name | None = Field(
        default=None, description="Existing user added to the docker group"
    )
