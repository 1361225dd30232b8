"""Names, addresses and paths of the lab. Pure: nothing here touches the machine."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

NETWORK = "rig-lab"
BRIDGE = "rig-lab0"
SUBNET = "10.77.0.0/24"
GATEWAY = "10.77.0.1"
REGISTRY_PORT = 5000
REGISTRY = f"{GATEWAY}:{REGISTRY_PORT}"
REGISTRY_USER = "rig"
LABEL = "io.rig.lab"
SUITE = "trixie"
MIRROR = os.environ.get("RIG_LAB_MIRROR", "http://deb.debian.org/debian")
HOST_IMAGE = f"rig-lab/host:{SUITE}"
BASE_REPO = "rig/lab-base"
BASE_TAG = SUITE
BASE_IMAGE = f"{REGISTRY}/{BASE_REPO}:{BASE_TAG}"
# The environment NVIDIA's CUDA 12.1 runtime image sets (nvidia/cuda 12.1.1 Dockerfile,
# gitlab.com/nvidia/container-images/cuda), which the real family builds FROM: the lab's base
# carries it too, so rig's pre-flight reads the same CUDA requirement from the lab's images.
BASE_ENV = {
    "CUDA_VERSION": "12.1.1",
    "NVIDIA_REQUIRE_CUDA": (
        "cuda>=12.1 brand=tesla,driver>=450,driver<451 brand=tesla,driver>=470,driver<471 "
        "brand=unknown,driver>=470,driver<471 brand=nvidia,driver>=470,driver<471 "
        "brand=nvidiartx,driver>=470,driver<471 brand=geforce,driver>=470,driver<471 "
        "brand=geforcertx,driver>=470,driver<471 brand=quadro,driver>=470,driver<471"),
    "NVIDIA_VISIBLE_DEVICES": "all",
    "NVIDIA_DRIVER_CAPABILITIES": "compute,utility",
}
MAX_HOSTS = 20
OPERATOR = "ops"  # lab hosts are reached as this user with sudo, never as root

# debootstrap --include lists: what a lab host and the image base need (LAB-NOTES).
HOST_PACKAGES = (
    "systemd", "systemd-sysv", "dbus", "openssh-server", "python3", "curl",
    "ca-certificates", "sudo", "iproute2", "gnupg", "procps",
)
BASE_PACKAGES = ("ca-certificates",)

# Docker-in-Docker without --privileged, which fails here (LAB-NOTES).
HOST_CAPS = (
    "SYS_ADMIN", "NET_ADMIN", "MKNOD", "SYS_PTRACE", "NET_RAW", "SYS_CHROOT", "SETFCAP",
    "SYS_NICE", "IPC_LOCK",
)
HOST_SECURITY_OPTS = ("seccomp=unconfined", "apparmor=unconfined", "systempaths=unconfined")


def host_names(count: int) -> list[str]:
    """mainpc, pc2, then node3, node4, ... like the real fleet plus extra nodes for scale."""
    if not 1 <= count <= MAX_HOSTS:
        raise ValueError(f"the lab runs 1 to {MAX_HOSTS} hosts, not {count}")
    return ["mainpc", "pc2", *(f"node{i}" for i in range(3, count + 1))][:count]


def host_address(index: int) -> str:
    """Fixed address of the index-th host (0-based): 10.77.0.11, .12, ..."""
    return f"10.77.0.{11 + index}"


def container_name(host: str) -> str:
    return f"rig-lab-{host}"


def volume_name(host: str) -> str:
    return f"rig-lab-{host}-docker"


def extra_host_spec(host: str) -> dict | None:
    """Hosts the lab adds beyond fleet.yml behave like PC2 (same profile and groups)."""
    return None if host in ("mainpc", "pc2") else {"profile": "pc2", "groups": ["gpu"]}


def package_key(suite: str, packages: tuple[str, ...]) -> str:
    """Cache key of a debootstrap tarball: changes when the suite or the package list does."""
    return hashlib.sha256(f"{suite}:{','.join(sorted(packages))}".encode()).hexdigest()[:12]


SPEC_FILES = ("fleet.yml", "lab.yml")
SPEC_FOLDERS = ("profiles", "inventory", "group_data", "dockerfiles", "tests")
# what a spec copy needs of the lab: its state, keys, CA and token (copies: spec paths may not
# lead out of the spec's folder, symlinks included)
LAB_PARTS = ("state.json", "ssh", "ca/ca.crt", "registry/token", "secrets", "signing")


def copy_spec(repo: Path, target: Path) -> Path:
    """The spec, inventories, dockerfiles and the verify suite in `target`, a folder the lab
    tests and the bench may edit (not a git checkout), with the lab's parts in its .lab/."""
    import shutil

    for name in SPEC_FILES:
        shutil.copy(repo / name, target / name)
    for folder in SPEC_FOLDERS:
        shutil.copytree(repo / folder, target / folder, ignore=shutil.ignore_patterns("__pycache__"))
    lab = LabPaths.for_repo(repo).root
    for part in LAB_PARTS:
        source, copy = lab / part, target / ".lab" / part
        copy.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if source.is_dir() else shutil.copy2)(source, copy)
    return target


@dataclass(frozen=True)
class LabPaths:
    """Where the lab keeps its state (git-ignored), its cache, and its runtime files."""

    root: Path

    @classmethod
    def for_repo(cls, repo: Path) -> LabPaths:
        return cls(Path(os.environ.get("RIG_LAB_DIR", repo / ".lab")).resolve())

    @property
    def state_file(self) -> Path:
        return self.root / "state.json"

    @property
    def ca_dir(self) -> Path:
        return self.root / "ca"

    @property
    def registry_dir(self) -> Path:
        return self.root / "registry"

    @property
    def secrets_dir(self) -> Path:
        """The lab's stand-ins for service secrets (lab.yml points services' secrets here)."""
        return self.root / "secrets"

    @property
    def ssh_dir(self) -> Path:
        return self.root / "ssh"

    @property
    def signing_dir(self) -> Path:
        """The lab's image-signing pair, cosign's format (lab.yml's build.signing)."""
        return self.root / "signing"

    @property
    def engine_dir(self) -> Path:
        return self.root / "engine"

    @property
    def docker_config(self) -> Path:
        """DOCKER_CONFIG for the control machine's client: the lab login lives here, not ~/.docker."""
        return self.root / "docker-config"

    @property
    def run_dir(self) -> Path:
        """Short runtime path for sockets (unix socket paths are limited to 108 bytes)."""
        digest = hashlib.sha256(str(self.root).encode()).hexdigest()[:8]
        return Path("/run/rig-lab") / digest

    @property
    def engine_socket(self) -> Path:
        return self.run_dir / "docker.sock"

    @staticmethod
    def cache_dir() -> Path:
        base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        return Path(base) / "rig" / "lab"


def host_run_argv(host: str, address: str) -> list[str]:
    """`docker run` for one lab host: systemd as PID 1, Docker-in-Docker capabilities without
    --privileged (which fails here), a fixed address on the lab network, /var/lib/docker on a
    volume, no IP forwarding. The CLI, not the API: `systempaths=unconfined` is a client-side option."""
    argv = ["docker", "run", "--detach", "--name", container_name(host), "--hostname", host,
            "--network", NETWORK, "--ip", address,
            "--label", f"{LABEL}=1", "--label", f"{LABEL}.host={host}"]
    for cap in HOST_CAPS:
        argv += ["--cap-add", cap]
    for opt in HOST_SECURITY_OPTS:
        argv += ["--security-opt", opt]
    argv += ["--volume", "/sys/fs/cgroup:/sys/fs/cgroup:rw",
             "--volume", f"{volume_name(host)}:/var/lib/docker",
             "--tmpfs", "/run", "--tmpfs", "/run/lock", "--tmpfs", "/tmp",
             # the host forwards nothing: service containers on its bridge network reach the
             # host (its proxy) and nothing beyond it (LAB-NOTES: no traffic off the lab)
             "--sysctl", "net.ipv4.ip_forward=0",
             "--env", "container=docker", "--stop-signal", "SIGRTMIN+3",
             HOST_IMAGE, "/sbin/init"]
    return argv
