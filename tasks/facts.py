"""Facts: small classes with `command` and `process`, read from the host.

HostState reads everything bootstrap decides on in ONE command (each fact is an SSH round trip,
and round trips are where converge time goes: LAB-NOTES)."""

from __future__ import annotations

from dataclasses import dataclass, field

from pyinfra.api import FactBase

from rig.commands.facts import host_facts_command, nvidia_gpus_command
from rig.gpu.smi import Gpu, parse_gpus


@dataclass
class HostFacts:
    os_id: str = ""
    os_like: str = ""
    os_version: str = ""
    os_codename: str = ""
    has_apt: bool = False
    packages: dict[str, str] = field(default_factory=dict)     # installed name -> version
    docker_active: bool = False
    docker_enabled: bool = False
    buildx_version: str | None = None
    file_hashes: dict[str, str | None] = field(default_factory=dict)  # path -> sha256 or None
    docker_group: list[str] = field(default_factory=list)
    login_hash: str | None = None
    users: list[str] = field(default_factory=list)
    haproxy_active: bool = False
    haproxy_enabled: bool = False
    haproxy_socket: bool = False      # rig's admin socket file is there
    networks: dict[str, str] = field(default_factory=dict)      # name -> driver

    @property
    def apt_based(self) -> bool:
        return self.has_apt and ("debian" in (self.os_id, *self.os_like.split())
                                 or self.os_id == "ubuntu")


def parse_host_facts(lines: list[str]) -> HostFacts:
    facts = HostFacts()
    for line in lines:
        key, _, value = line.partition("=")
        if key == "os_id":
            facts.os_id = value
        elif key == "os_like":
            facts.os_like = value
        elif key == "os_version":
            facts.os_version = value
        elif key == "os_codename":
            facts.os_codename = value
        elif key == "apt":
            facts.has_apt = value == "1"
        elif key == "pkg":
            parts = value.split()
            if len(parts) >= 3 and parts[2] == "installed":
                facts.packages[parts[0]] = parts[1]
        elif key == "docker_active":
            facts.docker_active = value == "active"
        elif key == "docker_enabled":
            facts.docker_enabled = value == "enabled"
        elif key == "buildx":
            # "github.com/docker/buildx 0.13.1+ds1 0.13.1+ds1-3" or "... v0.17.1 cd4..."
            parts = value.split()
            if len(parts) >= 2:
                facts.buildx_version = parts[1].lstrip("v").split("+")[0]
        elif key == "sha":
            path, _, digest = value.partition(" ")
            facts.file_hashes[path] = digest or None
        elif key == "docker_group":
            facts.docker_group = [u for u in value.split(",") if u]
        elif key == "login":
            facts.login_hash = value or None
        elif key == "user":
            facts.users.append(value)
        elif key == "haproxy_active":
            facts.haproxy_active = value == "active"
        elif key == "haproxy_enabled":
            facts.haproxy_enabled = value == "enabled"
        elif key == "haproxy_socket":
            facts.haproxy_socket = value == "1"
        elif key == "net":
            name, _, driver = value.partition(" ")
            facts.networks[name] = driver
    return facts


class HostState(FactBase):
    """Everything bootstrap decides on, in one round trip. Args: files to hash, the registry
    whose login to check, users whose existence to check."""

    def command(self, paths: list[str], registry: str, users: list[str],
                network: str | None = None) -> str:
        return host_facts_command(paths, registry, users, network)

    def process(self, output) -> HostFacts:
        return parse_host_facts(list(output))


class NvidiaGpus(FactBase):
    """GPUs nvidia-smi sees (rig/gpu/smi.py: name, compute capability, memory total and used,
    driver); empty when there is no driver or no GPU."""

    def command(self) -> str:
        return nvidia_gpus_command()

    def process(self, output) -> list[Gpu]:
        return parse_gpus("\n".join(output))
