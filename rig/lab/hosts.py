"""Lab hosts: Debian 13 containers running systemd as PID 1 and sshd as a unit, reached over
SSH exactly like a real machine. Docker is not preinstalled: bootstrap installs it from apt."""

from __future__ import annotations

import io
import json
import tarfile
import time
from pathlib import Path

from docker.errors import NotFound

from ..errors import RigError
from ..proc import run
from . import gpu
from .engine import Engine
from .layout import LABEL, OPERATOR, container_name, host_run_argv, volume_name


def _put_file(container, folder: str, name: str, data: bytes, mode: int) -> None:
    stream = io.BytesIO()
    with tarfile.open(fileobj=stream, mode="w") as tar:
        info = tarfile.TarInfo(name)
        info.size, info.mode = len(data), mode
        tar.addfile(info, io.BytesIO(data))
    container.put_archive(folder, stream.getvalue())


def _exec(container, command: str) -> str:
    code, output = container.exec_run(["sh", "-c", command])
    if code != 0:
        raise RigError(f"{container.name}: `{command}` failed (exit {code})",
                       *("  " + line for line in output.decode().splitlines()[-5:]))
    return output.decode()


def ensure_host(engine: Engine, host: str, address: str, public_key: bytes) -> tuple[str, list[str]]:
    """(what happened, known_hosts lines). Creates or starts the host, installs the lab key."""
    client = engine.client()
    name = container_name(host)
    try:
        container = client.containers.get(name)
        if container.status == "running":
            action = "running"
        else:
            container.start()
            action = "started"
    except NotFound:
        client.volumes.create(volume_name(host), labels={LABEL: "1"})
        run(host_run_argv(host, address), env=engine.env(), timeout=120)
        container = client.containers.get(name)
        action = "created"
    _wait_booted(container)
    _make_operator(container, public_key)
    known: list[str] = []
    deadline = time.monotonic() + 20
    while not known:  # seen once on a loaded machine: no key read back; never write a host out
        keys = _exec(container, "cat /etc/ssh/ssh_host_*_key.pub 2>/dev/null || true")
        known = [f"{address} {' '.join(line.split()[:2])}" for line in keys.splitlines()
                 if line.startswith(("ssh-", "ecdsa-"))]
        if not known and time.monotonic() > deadline:
            raise RigError(f"{container.name}: no SSH host keys to put in known_hosts")
        if not known:
            time.sleep(0.5)
    return action, known


OPERATOR_SETUP = " && ".join([
    # the account rig logs in as, like MainPC's and PC2's: passwordless sudo, no root login
    "id -u ops >/dev/null 2>&1 || useradd -m -s /bin/bash ops",
    "install -d -m 0700 -o ops -g ops /home/ops/.ssh",
    "echo 'ops ALL=(ALL) NOPASSWD: ALL' > /etc/sudoers.d/ops",
    "chmod 0440 /etc/sudoers.d/ops",
    "rm -f /root/.ssh/authorized_keys",
    "echo 'PermitRootLogin no' > /etc/ssh/sshd_config.d/rig-lab.conf",
    "systemctl reload ssh",
])
assert OPERATOR == "ops"  # the lines above name it


def ensure_gpu_standin(engine: Engine, host: str, profile_gpu) -> dict:
    """The stand-in nvidia-smi (rig/lab/nvidia_smi.py) at /usr/local/bin/nvidia-smi, and its
    state for the profile's GPU unless the host has one already (a scenario set by
    `rig lab gpu` survives a second `rig lab up`)."""
    container = engine.client().containers.get(container_name(host))
    script = (Path(__file__).with_name("nvidia_smi.py")).read_bytes()
    _put_file(container, str(Path(gpu.STANDIN_PATH).parent), Path(gpu.STANDIN_PATH).name,
              script, 0o755)
    current = _read_gpu_state(container)
    if current is None:
        current = gpu.standin_state(profile_gpu)
        _write_gpu_state(container, current)
    return current


def set_gpu_standin(engine: Engine, host: str, profile_gpu, reset: bool = False,
                    **changes) -> dict:
    """Rewrite a host's stand-in state (`rig lab gpu`)."""
    try:
        container = engine.client().containers.get(container_name(host))
    except NotFound:
        raise RigError(f"no lab host {host!r} (rig lab up)") from None
    current = None if reset else _read_gpu_state(container)
    state = gpu.standin_state(profile_gpu, current=current, **changes)
    _write_gpu_state(container, state)
    return state


def _read_gpu_state(container) -> dict | None:
    code, output = container.exec_run(["cat", gpu.STATE_PATH])
    if code != 0:
        return None
    try:
        value = json.loads(output)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _write_gpu_state(container, state: dict) -> None:
    folder = str(Path(gpu.STATE_PATH).parent)
    code, output = container.exec_run(["install", "-d", "-m", "0755", folder])
    if code != 0:
        raise RigError(f"{container.name}: cannot make {folder}: {output.decode()[-200:]}")
    _put_file(container, folder, Path(gpu.STATE_PATH).name,
              (json.dumps(state, indent=2, sort_keys=True) + "\n").encode(), 0o644)


def _make_operator(container, public_key: bytes) -> None:
    _exec(container, OPERATOR_SETUP)
    _put_file(container, "/home/ops/.ssh", "authorized_keys", public_key, 0o600)
    _exec(container, "chown ops:ops /home/ops/.ssh/authorized_keys")


def _wait_booted(container, timeout: float = 90) -> None:
    """Until systemd has finished booting and sshd is active."""
    deadline = time.monotonic() + timeout
    state = ""
    while time.monotonic() < deadline:
        code, out = container.exec_run(
            ["sh", "-c", "systemctl is-system-running; systemctl is-active ssh"]
        )
        lines = out.decode().split()
        state = " ".join(lines)
        if len(lines) == 2 and lines[0] in ("running", "degraded") and lines[1] == "active":
            return
        time.sleep(0.3)
    raise RigError(f"{container.name}: not booted after {timeout:.0f} s (systemd/ssh: {state})")


def remove_all(engine: Engine) -> list[str]:
    """Remove every lab host container and its volume. Returns the names removed."""
    client = engine.client()
    removed = []
    for container in client.containers.list(all=True, filters={"label": LABEL}):
        container.remove(force=True, v=True)
        removed.append(container.name)
    for volume in client.volumes.list(filters={"label": LABEL}):
        volume.remove(force=True)
    return removed
