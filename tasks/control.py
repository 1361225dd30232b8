"""An operator's stop, start and restart of one service on a host (rig stop/start/restart).

start and restart are gated like a rollout (by the ops layer, rig/rollout/probing.py); stop is
not."""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import deploy, operation

from rig.commands import container as cmd
from rig.commands import proxy
from rig.commands.base import fail
from rig.rollout.strategy import strategy_for

from .rollout import RolloutState
from .util import fleet_of

VERBS = ("stop", "start", "restart", "maintenance-on", "maintenance-off")


@operation()
def container_controlled(service: str, verb: str):
    """rig-<service> is stopped (stop) or running (start); restart always restarts it;
    maintenance-on puts the proxy's 503 answer in front of it, maintenance-off takes it away.

    + service: the service
    + verb: stop, start, restart, maintenance-on or maintenance-off
    """
    facts = host.get_fact(RolloutState)
    name = cmd.current(service)
    found = facts.containers.get(name)
    if found is None:
        yield fail(f"{service} has no container on this host (never rolled out here)")
        return
    fleet = fleet_of(host)
    timeout = int(fleet.runtime(service, host.name).stop_timeout)
    strategy = strategy_for(fleet, host.name, service)
    if verb == "maintenance-on":      # new requests get the 503 answer; open ones finish
        yield proxy.maintenance(service, strategy.drain)
    elif verb == "maintenance-off":   # back to the container (its gate passed just now)
        yield cmd.switch_to_current(service, 0, None)
    elif verb == "stop" and not found.running:
        host.noop(f"{service} is already stopped")
    elif verb == "start" and found.running:
        host.noop(f"{service} already runs")
    else:
        if verb in ("stop", "restart") and strategy.proxied and facts.proxy is not None:
            # clients get the 503 answer at once, not a connection the proxy retries in vain;
            # after a restart the proxy goes back once the gate passed (rig/ops/service.py)
            yield proxy.maintenance(service, strategy.drain)
        yield cmd.control_command(verb, service, timeout)


@deploy("Control a service")
def control(service: str, verb: str):
    container_controlled(name=f"{service}: {verb}", service=service, verb=verb)
