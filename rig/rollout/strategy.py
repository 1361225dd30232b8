"""How a service is swapped behind its host's proxy (pure; rig/config/proxy.py has the why).

    start_first   the new container starts beside the old one on the other slot and is gated
                  directly; only a passed gate switches the proxy to it, and the old one drains
                  (its open connections finish, up to `drain`) before it stops
    stop_first    the proxy answers 503 maintenance while the old container stops and the new
                  one loads; the proxy goes to the new one once its gate passes
    direct        no proxy (proxy.enabled false): the old container stops and the new one
                  binds the port on the host network (clients see refused connections)

auto is start_first for a service that uses no GPU, or whose declared gpu_memory fits twice on
the card next to what the host's other GPU services declare (less rollout.gpu_reserve); a GPU
service that declares no gpu_memory cannot be known to fit twice, so it gets stop_first."""

from __future__ import annotations

from dataclasses import dataclass

from ..config import Fleet
from ..config.rules import declared_gpu_memory

START_FIRST, STOP_FIRST, DIRECT = "start_first", "stop_first", "direct"
MIB = 2**20


@dataclass(frozen=True)
class Strategy:
    name: str
    why: str
    drain: float = 0.0      # seconds the old container's connections may take after a switch

    @property
    def proxied(self) -> bool:
        return self.name != DIRECT


def strategy_for(fleet: Fleet, host: str, service: str) -> Strategy:
    runtime = fleet.runtime(service, host)
    drain = drain_for(fleet, service, host)
    if not fleet.proxy.enabled:
        return Strategy(DIRECT, "proxy.enabled is false: the port is refused during the swap")
    chosen = runtime.strategy or fleet.rollout.strategy
    where = "the service's runtime" if runtime.strategy else "rollout.strategy"
    if chosen != "auto":
        return Strategy(chosen, f"set by {where}", drain)
    name, why = _auto(fleet, host, service)
    return Strategy(name, f"auto: {why}", drain)


def drain_room(fleet: Fleet, service: str, host: str) -> float:
    """The longest drain one switch command can hold: host_timeout, less the old container's
    stop and 10 s for the rest of the command."""
    stop = fleet.runtime(service, host).stop_timeout
    return max(0.0, fleet.rollout.host_timeout - stop - 10)


def drain_for(fleet: Fleet, service: str, host: str) -> float:
    """The service's drain (its runtime's, else rollout.drain), capped by drain_room: the
    default 30 s on hosts with a short host_timeout is shortened, never refused (a drain the
    spec sets explicitly beyond the room is refused by `rig validate`)."""
    runtime = fleet.runtime(service, host)
    drain = fleet.rollout.drain if runtime.drain is None else runtime.drain
    return min(drain, drain_room(fleet, service, host))


def _auto(fleet: Fleet, host: str, service: str) -> tuple[str, str]:
    if not fleet.wants_gpu(service, host):
        return START_FIRST, "uses no GPU"
    gpu = fleet.profile_of(host).gpu
    if gpu is None:
        return START_FIRST, f"host {host}'s profile has no GPU"
    size = declared_gpu_memory(fleet, service, host)[0]
    if not size:
        return STOP_FIRST, "a GPU service without gpu_memory: two copies may not fit on the card"
    others = sum(declared_gpu_memory(fleet, s, host)[0] or 0
                 for s in fleet.services_on(host) if s != service)
    room = gpu.memory_mib * MIB - fleet.rollout.gpu_reserve
    need = 2 * size + others
    words = (f"2 x {size // MIB} MiB" + (f" + {others // MIB} MiB of other services" if others
                                         else "")
             + f" = {need // MIB} MiB against {room // MIB} MiB ({gpu.memory_mib} MiB less "
             f"gpu_reserve)")
    if need <= room:
        return START_FIRST, f"two copies fit: {words}"
    return STOP_FIRST, f"two copies do not fit: {words}"
