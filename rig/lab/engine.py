"""The lab's Docker engine: the one that answers, or a private dockerd the lab owns."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass

import docker
from docker.errors import DockerException

from ..errors import RigError
from .layout import LabPaths
from .system import ensure_packages, pid_alive, start_daemon, stop_daemon, wait_for


@dataclass(frozen=True)
class Engine:
    docker_host: str
    owned: bool

    def client(self, timeout: int = 120) -> docker.DockerClient:
        return docker.DockerClient(base_url=self.docker_host, version="auto", timeout=timeout)

    def env(self) -> dict[str, str]:
        """Environment for the docker CLI to reach this engine."""
        return {**os.environ, "DOCKER_HOST": self.docker_host}


def answers(docker_host: str) -> bool:
    try:
        client = docker.DockerClient(base_url=docker_host, version="auto", timeout=5)
        ok = client.ping()
        client.close()
        return bool(ok)
    except (DockerException, OSError):
        return False


def dockerd_argv(paths: LabPaths) -> list[str]:
    """A private dockerd that cannot collide with a user's engine: own socket, data, exec root,
    pid file, and no default bridge (the lab makes its one network itself)."""
    return [
        "dockerd",
        "--host", f"unix://{paths.engine_socket}",
        "--data-root", str(paths.engine_dir / "data"),
        "--exec-root", str(paths.run_dir / "exec"),
        "--pidfile", str(paths.engine_dir / "dockerd.pid"),
        "--bridge", "none",
        "--log-level", "warn",
    ]


def owned_engine(paths: LabPaths) -> Engine | None:
    if pid_alive(paths.engine_dir / "dockerd.pid") and answers(f"unix://{paths.engine_socket}"):
        return Engine(f"unix://{paths.engine_socket}", owned=True)
    return None


def find_or_start(paths: LabPaths, say) -> tuple[Engine, bool]:
    """(engine, started_now). Prefers the lab's own engine, then one that answers, then starts
    a private dockerd (root on Debian only)."""
    engine = owned_engine(paths)
    if engine:
        return engine, False
    for candidate in filter(None, [os.environ.get("DOCKER_HOST"), "unix:///var/run/docker.sock"]):
        if answers(candidate):
            return Engine(candidate, owned=False), False
    if os.geteuid() != 0:
        raise RigError(
            "no Docker engine answers (tried $DOCKER_HOST and /var/run/docker.sock)",
            "start one (systemctl start docker), or run `rig lab up` as root to let the lab "
            "start a private engine",
        )
    ensure_packages(["docker.io"], say)
    if not shutil.which("dockerd"):
        raise RigError("dockerd not found after installing docker.io")
    paths.engine_dir.mkdir(parents=True, exist_ok=True)
    paths.run_dir.mkdir(parents=True, exist_ok=True)
    say("engine", "starting a private dockerd (no engine answered)")
    start_daemon(dockerd_argv(paths), paths.engine_dir / "dockerd.log",
                 paths.engine_dir / "dockerd.launcher.pid")
    engine = Engine(f"unix://{paths.engine_socket}", owned=True)
    wait_for(lambda: answers(engine.docker_host), "private dockerd", 60,
             paths.engine_dir / "dockerd.log")
    return engine, True


def stop_owned(paths: LabPaths) -> bool:
    stopped = stop_daemon(paths.engine_dir / "dockerd.pid", timeout=30)
    (paths.engine_dir / "dockerd.launcher.pid").unlink(missing_ok=True)
    return stopped
