"""What every verb starts from: the spec, loaded once, in one environment; host selection;
connected sessions whose connection errors say what to do (unknown host keys included)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from ..config import Fleet
from ..errors import RigError
from ..inventory import Target, load_spec, targets
from ..secrets import SecretStore

if TYPE_CHECKING:   # pyinfra and paramiko only for verbs that reach hosts (a build does not)
    from ..connector import SshPool
    from ..runner import Session

Say = Callable[[str, str], None]


@dataclass
class Job:
    """The spec file and environment a command runs against. `fleet` is read from disk once."""

    config: Path
    env: str
    started: float = field(default_factory=time.monotonic)

    @property
    def repo(self) -> Path:
        """The spec's folder: profiles/, inventory/, dockerfiles/, tests/verify/, .lab/."""
        return self.config.resolve().parent

    @cached_property
    def fleet(self) -> Fleet:
        return load_spec(self.config, self.env)

    @cached_property
    def secrets(self) -> SecretStore:
        """The services' secrets, each read once per command when first needed."""
        return SecretStore(self.fleet)

    @cached_property
    def registry(self):
        """One registry client per command: it authenticates once and keeps its connection."""
        from ..registry import client_for

        return client_for(self.fleet)

    @cached_property
    def targets(self) -> list[Target]:
        return targets(self.fleet, self.env)

    @cached_property
    def pool(self) -> SshPool:
        """The command's SSH connections, one per host, shared by all its Sessions (promote
        and abort read the paused rollout's lock, then roll out, on the same connection)."""
        from ..connector import SshPool

        return SshPool()

    def session(self, hosts: list[str], say: Say | None = None, partial: bool = False) -> Session:
        """partial: a read that shows what it can (runner.Session: unreachable hosts left out)."""
        from ..runner import Session
        from . import hostkeys

        chosen = [t for t in self.targets if t.name in hosts]
        return Session(chosen, say=say, describe_connect_error=hostkeys.describe_connect_error,
                       pool=self.pool, partial=partial)

    def close(self) -> None:
        """The command's SSH connections closed (the CLI calls it when the command ends)."""
        if "pool" in self.__dict__:
            self.pool.close()

    def hook(self, name: str, say, **variables) -> int | None:
        """Run hooks/<name> beside the spec (ops/hooks.py), without the spec's credentials."""
        from .hooks import credential_variables, run_hook

        return run_hook(self.repo, name, say, withheld=credential_variables(self.fleet),
                        **variables)

    def elapsed(self) -> float:
        return time.monotonic() - self.started


def split(value: str | None) -> list[str] | None:
    """'a, b,c' -> ['a', 'b', 'c']; None or '' -> None."""
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


def check_services(fleet: Fleet, services: list[str] | None, what: str = "--services") -> None:
    unknown = [s for s in services or [] if s not in fleet.services]
    if unknown:
        raise RigError(f"{what}: unknown service {', '.join(unknown)} "
                       f"(services: {', '.join(fleet.services)})")


def select_hosts(fleet: Fleet, limit: list[str] | None = None,
                 services: list[str] | None = None) -> list[str]:
    """The one host-selection rule every verb uses: hosts (in fleet order) that run any of
    `services` (default: all hosts), narrowed by --limit host or group names."""
    check_services(fleet, services)
    hosts = list(fleet.hosts)
    if services:
        hosts = [h for h in hosts if any(s in services for s in fleet.services_on(h))]
    if limit:
        known = set(fleet.hosts) | set(fleet.groups())
        unknown = [h for h in limit if h not in known]
        if unknown:
            raise RigError(f"--limit: unknown host or group {', '.join(unknown)} "
                           f"(hosts: {', '.join(fleet.hosts)}; groups: {', '.join(fleet.groups())})")
        chosen = set(fleet.resolve_hosts(limit))
        hosts = [h for h in hosts if h in chosen]
    if not hosts:
        raise RigError("no host selected (check --services and --limit)")
    return hosts
