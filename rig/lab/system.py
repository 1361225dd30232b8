"""The control machine: Debian packages, processes the lab owns. Only the lab calls this."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from ..errors import RigError
from ..proc import run


def missing_packages(packages: list[str]) -> list[str]:
    """Debian packages from the list that are not installed."""
    if not shutil.which("dpkg-query"):
        return list(packages)
    result = run(["dpkg-query", "-W", "-f", "${Package} ${db:Status-Status}\n", *packages],
                 check=False)
    installed = {
        line.split()[0] for line in result.stdout.decode().splitlines()
        if line.endswith(" installed")
    }
    return [p for p in packages if p not in installed]


def ensure_packages(packages: list[str], say) -> None:
    """apt-get install what is missing; only as root on an apt-based machine."""
    missing = missing_packages(packages)
    if not missing:
        return
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise RigError(
            f"the lab needs these Debian packages: {' '.join(missing)}",
            "install them as root (apt-get install ...) and run `rig lab up` again",
        )
    say("packages", f"installing {' '.join(missing)} from apt")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    run(["apt-get", "update", "-qq"], env=env, timeout=600)
    run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing], env=env,
        timeout=1200)


def pid_alive(pid_file: Path) -> int | None:
    """The pid in pid_file if that process is alive, else None."""
    try:
        pid = int(pid_file.read_text().strip())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    # A recycled pid would belong to something else: check it is not a zombie or gone.
    stat = Path(f"/proc/{pid}/stat")
    if not stat.exists() or stat.read_text().split()[2] == "Z":
        return None
    return pid


def start_daemon(argv: list[str], log: Path, pid_file: Path) -> int:
    """Start argv detached from this process group (it outlives `rig`); record its pid."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        process = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    pid_file.write_text(f"{process.pid}\n")
    return process.pid


def stop_daemon(pid_file: Path, timeout: float = 20.0) -> bool:
    """SIGTERM, wait, then SIGKILL. True if a process was stopped."""
    pid = pid_alive(pid_file)
    if pid is None:
        pid_file.unlink(missing_ok=True)
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and pid_alive(pid_file):
        time.sleep(0.1)
    if pid_alive(pid_file):
        os.kill(pid, signal.SIGKILL)
        time.sleep(0.5)
    pid_file.unlink(missing_ok=True)
    return True


def wait_for(check, what: str, timeout: float, log: Path | None = None) -> None:
    """Poll check() until truthy; on timeout raise with the log's last lines."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    lines = [f"{what}: not ready after {timeout:.0f} s"]
    if log and log.exists():
        lines += ["  " + line for line in log.read_text(errors="replace").splitlines()[-8:]]
    raise RigError(*lines)
