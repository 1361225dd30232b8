"""The HostState fact, read once per host and run, and again only after an operation changed
the host (pyinfra 3 re-runs a fact's command on every call, and this one command was most of
a no-change converge's time: make bench). The cache is keyed by pyinfra's State, so it ends
with the run; nothing is stored on pyinfra's objects."""

from __future__ import annotations

import functools
import weakref

from pyinfra import host

from rig.commands import host as cmd
from rig.config import Fleet

from .facts import HostState

PROFILE_FILES = [cmd.PROFILE_JSON, cmd.PROFILE_ENV, cmd.PROFILE_HASH]

_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def certs_path(fleet: Fleet) -> str | None:
    """Where the registry CA goes on a host, when the registry needs one."""
    if not fleet.registry.ca_file:
        return None
    return f"/etc/docker/certs.d/{fleet.registry.host}/ca.crt"


def watched_files(fleet: Fleet) -> list[str]:
    from rig.commands import proxy

    files = ["/etc/docker/daemon.json", *PROFILE_FILES]
    if fleet.proxy.enabled:
        files += [proxy.CONFIG, *(f"{proxy.ERRORS_DIR}/{s}.503" for s in sorted(fleet.services))]
    if certs_path(fleet):
        files.append(certs_path(fleet))
    return files


def host_state_args(fleet: Fleet) -> dict:
    """The HostState fact's arguments for this spec (also read by `rig bootstrap`'s pre-flight)."""
    users = [fleet.bootstrap.deploy_user] if fleet.bootstrap.deploy_user else []
    return {"paths": watched_files(fleet), "registry": fleet.registry.host, "users": users,
            "network": fleet.proxy.network if fleet.proxy.enabled else None}


def _cache() -> dict:
    return _CACHE.setdefault(host.state, {})


def state_of(fleet: Fleet):
    cache = _cache()
    if host.name not in cache:
        cache[host.name] = host.get_fact(HostState, **host_state_args(fleet))
    return cache[host.name]


def forget_state() -> None:
    _cache().pop(host.name, None)


def changes_host(op):
    """For operation bodies: before the first command runs, forget the cached HostState, so
    the operations after it read the host as this one leaves it."""
    @functools.wraps(op)
    def body(*args, **kwargs):
        first = True
        for command in op(*args, **kwargs):
            if first:
                forget_state()
                first = False
            yield command
    return body
