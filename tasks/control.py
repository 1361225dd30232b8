"""An operator's stop, start and restart of one service on a host (rig stop/start/restart).

start and restart are gated like a rollout (by the ops layer, rig/rollout/probing.py); stop is
not."""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import deploy, operation

from rig.commands import container as cmd
from rig.commands.base import fail

from .rollout import RolloutState
from .util import fleet_of

VERBS = ("stop", "start", "restart")


@operation()
def container_controlled(service: str, verb: str):
    """rig-<service> is stopped (stop) or running (start); restart always restarts it.

    + service: the service
    + verb: stop, start or restart
    """
    facts = host.get_fact(RolloutState)
    name = cmd.current(service)
    found = facts.containers.get(name)
    if found is None:
        yield fail(f"{service} has no container on this host (never rolled out here)")
        return
    timeout = int(fleet_of(host).runtime(service, host.name).stop_timeout)
    if verb == "stop" and not found.running:
        host.noop(f"{service} is already stopped")
    elif verb == "start" and found.running:
        host.noop(f"{service} already runs")
    else:
        yield cmd.control_command(verb, service, timeout)


@deploy("Control a service")
def control(service: str, verb: str):
    container_controlled(name=f"{service}: {verb}", service=service, verb=verb)
