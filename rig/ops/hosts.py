"""bootstrap, verify and host keys: bring hosts to ready, check them, trust them."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass

from tasks.bootstrap import bootstrap as bootstrap_deploy
from tasks.facts import HostState
from tasks.state import host_state_args

from ..errors import RigError
from ..hosts import check_releases
from ..rollout.locks import HostLocks
from ..runner import HostResult
from ..secrets import registry_token
from . import hostkeys
from .job import Job, select_hosts


@dataclass
class ConvergeReport:
    results: dict[str, HostResult]
    seconds: float

    @property
    def changes(self) -> int:
        return sum(len(r.changed) for r in self.results.values())

    @property
    def failed(self) -> list[str]:
        return [name for name, r in self.results.items() if not r.ok]


def bootstrap(job: Job, limit: list[str] | None, say, on_start=None,
              break_lock: bool = False, force: bool = False) -> ConvergeReport:
    """Engine, buildx, daemon.json, registry CA and login, docker group, NVIDIA toolkit on GPU
    hosts, machine profile. Pre-flight (nothing changes if any fails): the registry token is
    set, every host answers, sudo works, it runs a supported Debian or Ubuntu, and no rollout
    holds its lock (bootstrap may restart Docker under it): bootstrap takes the same lock."""
    hosts = select_hosts(job.fleet, limit)
    token = registry_token(job.fleet)
    with job.session(hosts, say=say) as session:
        check_releases(session.facts(HostState, **host_state_args(job.fleet)))
        locks = HostLocks(session, job.fleet.rollout.lock_stale_after, "bootstrap", "")
        try:
            problems = locks.take(break_lock, force)
            if problems:
                raise RigError(*problems, "nothing was changed")
            locks.start_beating()
            if on_start:
                on_start(session.names())
            results = session.run(bootstrap_deploy, token=token)
        finally:
            locks.release()
    return ConvergeReport(results, job.elapsed())


SUITES = ("all", "bootstrap", "services")


def verify(job: Job, suite: str, pytest_args=(), limit: list[str] | None = None) -> int:
    """The testinfra suite in <spec folder>/tests/verify against this environment's hosts;
    returns pytest's exit code. The suite reads the same spec and environment (RIG_CONFIG,
    RIG_ENV), so it checks MainPC/PC2 exactly as it checks the lab."""
    folder = job.repo / "tests" / "verify"
    if not folder.is_dir():
        raise RigError(f"{folder}: the verify suite is not there (it lives beside the spec)")
    paths = [str(folder)] if suite == "all" else [str(folder / f"test_{suite}.py")]
    env = {**os.environ, "RIG_CONFIG": str(job.config.resolve()), "RIG_ENV": job.env}
    if limit:
        env["RIG_LIMIT"] = ",".join(select_hosts(job.fleet, limit))
    argv = [sys.executable, "-m", "pytest", *paths, "-q", "-p", "no:cacheprovider",
            "--import-mode=importlib", "--rootdir", str(folder), *pytest_args]
    # a frozen host fails its tests within seconds (verify.py ssh_config); this only stops a
    # suite that hangs some other way
    budget = VERIFY_BASE + VERIFY_PER_HOST * len(select_hosts(job.fleet, limit))
    try:
        return subprocess.run(argv, env=env, cwd=folder, timeout=budget).returncode
    except subprocess.TimeoutExpired:
        raise RigError(f"verify: the suite did not end within {budget} s and was stopped (a "
                       "host that stopped answering? `rig status` shows which)") from None


VERIFY_BASE, VERIFY_PER_HOST = 300, 60   # seconds the verify suite may take, at the most


def trust(job: Job, host: str, fingerprint: str | None, confirm) -> tuple[hostkeys.HostKey, str]:
    """Add a host's SSH key to the known_hosts file its inventory names."""
    target = next((t for t in job.targets if t.name == host), None)
    if target is None:
        raise RigError(f"unknown host {host!r} (hosts: {', '.join(t.name for t in job.targets)})")
    return hostkeys.trust(target, fingerprint, confirm)
