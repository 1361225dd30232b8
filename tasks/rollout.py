"""Rollout work on one host: read what runs, start a release, restore, record.

The orchestration (rig/rollout/engine.py) adds these for one wave at a time; hosts outside the
wave get no operations. Health gates are not operations: a gate lasts as long as the service's
health settings say, so the engine runs its probe loop itself (rig/rollout/probing.py), each
probe a short command with its own deadline."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field

from pyinfra import host
from pyinfra.api import FactBase, FunctionCommand, deploy, operation

from rig.commands import container as cmd
from rig.commands import proxy as proxy_cmd
from rig.commands.base import all_of, fail
from rig.commands.base import spooled as base_spooled
from rig.commands.host import undone_if_late
from rig.commands.lock import read_lock
from rig.gpu.smi import parse_apps, parse_gpus
from rig.rollout.decide import KEEP, Version, decide, runs, same
from rig.rollout.strategy import START_FIRST, strategy_for

from .util import fleet_of, host_shell


@dataclass
class Container:
    name: str
    state: str
    service: str
    tag: str
    digest: str
    profile_hash: str
    config_hash: str = ""
    config: str = ""
    slot: str = ""      # behind the proxy: the slot it is published on (a or b)

    @property
    def running(self) -> bool:
        return self.state == "running"


@dataclass
class RolloutFacts:
    docker_active: bool = False
    profile_hash: str | None = None
    containers: dict[str, Container] = field(default_factory=dict)
    state: dict = field(default_factory=dict)      # /var/lib/rig/state.json
    lock: dict | None = None    # /var/lib/rig/rollout.lock; {"malformed": why} when unreadable
    lock_sha: str | None = None  # its sha256: `rig lock release` removes exactly what it saw
    host_time: float | None = None                  # the host's clock (kernel log windows)
    gpus: list = field(default_factory=list)        # rig.gpu.smi.Gpu, as nvidia-smi lists them
    gpu_apps: list = field(default_factory=list)    # rig.gpu.smi.App: what uses the card
    gpu_error: str | None = None                    # why nvidia-smi gave no answer
    gpu_containers: dict = field(default_factory=dict)  # pid on the GPU -> its container
    warnings: list[str] = field(default_factory=list)
    state_rebuilt: bool = False   # state.json was unreadable: the next record writes it whole
    proxy: dict | None = None     # service -> slot -> live|drain|maint (None: not read)
    proxy_missing: bool = False   # read, and no proxy answers on the admin socket

    def in_maintenance(self, service: str) -> bool:
        """An operator put the service in maintenance (`rig maintenance on`, in state.json)."""
        return bool((self.state.get(service) or {}).get("maintenance"))

    def running(self, service: str) -> Container | None:
        """What serves the service here: rig-<service>, or the kept rig-<service>-prev when the
        proxy still sends to its slot (live_previous)."""
        if self.live_previous(service):
            return self.containers[cmd.previous(service)]
        found = self.containers.get(cmd.current(service))
        return found if found and found.running else None

    def live_previous(self, service: str) -> bool:
        """A start_first rollout that never switched (its gate failed under auto_rollback: none,
        or rig was killed between the swap and the switch): the kept container still runs and
        the proxy still sends to its slot; rig-<service> beside it never took a request. The
        next rollout replaces the unswitched one and keeps the live one (never `docker rm` of
        what serves)."""
        kept = self.containers.get(cmd.previous(service))
        found = self.containers.get(cmd.current(service))
        live = proxy_cmd.live_slot((self.proxy or {}).get(service))
        return bool(kept is not None and kept.running and kept.slot == live
                    and (found is None or found.slot != live))


def parse_rollout_facts(lines: list[str]) -> RolloutFacts:
    facts, section = RolloutFacts(), None
    chunks: dict[str, list[str]] = {"state": [], "lock": [], "gpu": [], "gpu-apps": [],
                                    "gpu-pids": [], "proxy": []}
    for line in lines:
        if line.startswith("--- "):
            section = line[4:].strip()
            continue
        if section == "time":
            facts.host_time = float(line) if line.strip().isdigit() else None
        elif section == "docker":
            facts.docker_active = line.strip() == "active"
        elif section == "profile" and line.strip():
            facts.profile_hash = line.strip()
        elif section == "containers" and line.strip():
            parts = line.rstrip("\n").split("\t")
            if 6 <= len(parts) <= 9:  # labels rig did not set print as nothing
                facts.containers[parts[0]] = Container(*parts)
        elif section in chunks:
            chunks[section].append(line)
    gpu_text = "\n".join(chunks["gpu"])
    facts.gpus = parse_gpus(gpu_text)
    facts.gpu_apps = parse_apps("\n".join(chunks["gpu-apps"]))
    for line in chunks["gpu-pids"]:
        pid, _, name = line.strip().partition(" ")
        if pid.isdigit() and name:
            facts.gpu_containers[int(pid)] = name.lstrip("/")
    if not facts.gpus and gpu_text.strip():
        facts.gpu_error = ("nvidia-smi is not installed" if gpu_text.strip() == "no nvidia-smi"
                           else "nvidia-smi failed: " + gpu_text.strip().splitlines()[0][:160])
    if any(line.strip() for line in chunks["proxy"]):   # (a host that printed nothing: unread)
        facts.proxy = proxy_cmd.parse_state(chunks["proxy"])
        facts.proxy_missing = facts.proxy is None
    lock = chunks["lock"]
    if lock and lock[0].startswith(cmd.LOCK_PRESENT):
        facts.lock_sha = lock[0][len(cmd.LOCK_PRESENT):].strip() or None
        facts.lock = read_lock(facts.lock_sha or "", "".join(lock[1:]))[0]
    for name in ("state",):
        text = "\n".join(chunks[name]).strip()
        if text:
            try:
                value = json.loads(text)
            except ValueError:
                value = None   # not JSON: rebuilt from the labels below
            if name == "state":
                facts.state = value if _state_shape(value) else _from_labels(facts, text)
    return facts


def _state_shape(value) -> bool:
    return isinstance(value, dict) and all(
        isinstance(v, dict) and isinstance(v.get("digest"), str) for v in value.values())


def _from_labels(facts: RolloutFacts, text: str) -> dict:
    """state.json unreadable: rebuilt from what runs (the containers' labels), with a warning;
    the next record writes it whole again."""
    facts.state_rebuilt = True
    facts.warnings.append(f"state.json was unreadable ({text[:60]!r}...): rebuilt from the "
                          "running containers' labels")
    return {c.service: {"tag": c.tag, "digest": c.digest, "profile_hash": c.profile_hash,
                        "config_hash": c.config_hash or None, "since": None, "previous": None}
            for name, c in facts.containers.items() if c.running and name == cmd.current(c.service)}


class RolloutState(FactBase):
    """Engine state, profile hash, rig's containers, state.json and the lock: one round trip."""

    def command(self) -> str:
        return cmd.rollout_state_command()

    def process(self, output) -> RolloutFacts:
        return parse_rollout_facts(list(output))


# -- operations -------------------------------------------------------------------------------
def run_label(release: cmd.Release) -> str:
    """The name of a service's swap: its operation's (several services' swaps in one
    operation: theirs joined by ", "), and its part's in a side-by-side step (FAILED_MARK)."""
    return f"{release.service}: run {release.tag}"


def swap_named(step: str, service: str) -> bool:
    """Whether a step's name (the swap's: run_label, or several joined by ", ") or a part's
    label (run_label) names the service's swap."""
    return any(label.startswith(f"{service}: run ") for label in step.split(", "))


def spooled(command: cmd.Cmd) -> cmd.Cmd:
    """A step that changes the host runs to its end even if rig stops reading (base.spooled):
    rig killed, or a frozen host rig gave up on that woke with the step in flight."""
    return base_spooled(command, cmd.SPOOL)


@operation()
def images_pulled(releases: list[cmd.Release], known: RolloutFacts | None = None):
    """Every image a release on this host still needs is pulled, all at once (several
    services in one wave: their pulls overlap, then each is swapped).

    + releases: what this host is to run
    + known: the host's RolloutState as pre-flight read it (None: read it now)
    """
    facts = known or host.get_fact(RolloutState)
    refs = sorted({r.pinned for r in releases if not runs(facts.running(r.service), r)})
    if not refs:
        host.noop("every release already runs")
        return
    yield cmd.pull_all(refs)


@operation()
def secrets_written(releases: list[cmd.Release], secrets: dict | None = None,
                    known: RolloutFacts | None = None):
    """The secrets of every release this host does not run yet, each version in its file (the
    value on stdin), before any swap: a step of its own, so that the swap's step is the swap
    alone (a host lost in it may have begun it; one lost before it never did).

    + releases: what this host is to run
    + secrets: service -> {name: rig.secrets.Secret}
    + known: the host's RolloutState as pre-flight read it (None: read it now)
    """
    facts = known or host.get_fact(RolloutState)
    for release in releases:
        if not runs(facts.running(release.service), release):
            yield from _secret_writes(release, (secrets or {}).get(release.service))


@operation()
def releases_running(releases: list[cmd.Release], known: RolloutFacts | None = None):
    """Each release this host does not run yet swapped in (swap_for), their images pulled
    (images_pulled) and secrets written (secrets_written) already: all in one command, side
    by side (several services: their containers start at once; it fails if any swap failed,
    after all have ended, naming those that did). The container a swap replaces is kept
    stopped as rig-<service>-prev until the rollout finishes.

    + releases: what this host is to run
    + known: the host's RolloutState as pre-flight read it (None: read it now)
    """
    facts = known or host.get_fact(RolloutState)
    swaps = [(run_label(r), swap, undo_for(r, facts)) for r in releases
             if (swap := swap_for(r, facts)) is not None]
    if swaps:
        yield spooled(swap_step(swaps))


def swap_step(swaps: list[tuple[str, cmd.Cmd, cmd.Cmd]]) -> cmd.Cmd:
    """(label, swap, undo) of each service: the swaps side by side, then, if the host ended
    them after rig gave up on the step (it froze in it), the undos (undone_if_late)."""
    late = cmd.Cmd(undone_if_late(cmd.seq(*(u for _, _, u in swaps)).line))   # (one `if`)
    labels = [n for n, _, _ in swaps] if len(swaps) > 1 else None   # (one: the step's name)
    return cmd.concurrently(*(s for _, s, _ in swaps), then=late, labels=labels)


def undo_for(release: cmd.Release, facts: RolloutFacts) -> cmd.Cmd:
    """What puts back what swap_for's swap replaces: the running one is kept as -prev by it
    (rig-<service>, or a live kept one beside a stray), or nothing ran."""
    service = release.service
    kept = cmd.current(service) in facts.containers or facts.live_previous(service)
    return cmd.undo_swap(service, kept, strategy_for(fleet_of(host), host.name, service).proxied)


def swap_for(release: cmd.Release, facts: RolloutFacts) -> cmd.Cmd | None:
    """rig-<service> to run release.digest with the current profile and settings (config
    hash), in the slot the running one is not in; None when it runs the release already (a
    noop, said)."""
    if runs(facts.running(release.service), release):
        host.noop(f"{release.service} already runs {release.tag}")
        return None
    name = cmd.current(release.service)
    fleet = fleet_of(host)
    strategy = strategy_for(fleet, host.name, release.service)
    if facts.live_previous(release.service):    # the kept one serves: it stays, kept
        return cmd.swap_unswitched(fleet, host.name, release, strategy=strategy.name,
                                   slot=next_slot(facts.running(release.service)),
                                   drain=strategy.drain)
    return cmd.swap_command(fleet, host.name, release, has_current=name in facts.containers,
                            has_previous=cmd.previous(release.service) in facts.containers,
                            strategy=strategy.name, slot=next_slot(facts.containers.get(name)),
                            drain=strategy.drain)


def _secret_writes(release: cmd.Release, secrets: dict | None):
    """One FunctionCommand per secret of the release (_write_secret), in name order."""
    versions = release.secret_versions
    for secret_name, secret in sorted((secrets or {}).items()):
        yield FunctionCommand(_write_secret, (release.service, secret_name, secret,
                                              versions.get(secret_name)), {})


def next_slot(running: Container | None) -> str:
    """The slot a new container starts in: the one the container it replaces is not in."""
    return proxy_cmd.other(running.slot) if running is not None \
        and running.slot in proxy_cmd.SLOTS else "a"


@operation(is_idempotent=False)
def proxy_switched(services: list[str], then: str = "stop"):
    """The host's proxy sends each of `services` to the slot rig-<service> runs in (after its
    gate passed); the other slot drains and goes to maintenance. Then, for start_first, the
    kept container rig-<service>-prev (it served until now): `stop`: stops once drained, still
    kept for a rollback (a rollout); `remove`: goes once drained (a restore switching back:
    -prev is the version rolled back from); `keep`: stays as it is. The services switch at
    once, in one command (their drains and stops overlap); it fails if any of them failed.

    + services: the services whose gates passed
    + then: stop, remove or keep rig-<service>-prev
    """
    fleet = fleet_of(host)
    switches = []
    for service in services:
        strategy = strategy_for(fleet, host.name, service)
        if not strategy.proxied:
            host.noop(f"{service}: no proxy")
        elif then == "remove":
            switches.append((service, strategy.drain, None, True))
        else:
            stop = int(fleet.runtime(service, host.name).stop_timeout) if then == "stop" \
                and strategy.name == START_FIRST else None
            switches.append((service, strategy.drain if stop is not None else 0, stop, False))
    if switches:
        yield spooled(cmd.switch_all(switches))


@operation(is_idempotent=False)
def previous_settled(service: str):
    """rig-<service>-prev serves what the rollout wants, and rig-<service> beside it never took
    a request (a rollout or an abort killed before its switch): that one goes, and the one that
    serves is rig-<service> again (commands/container.py settle_previous).

    + service: the service whose kept container serves
    """
    yield spooled(cmd.settle_previous(service))


def _write_secret(state, host, service: str, name: str, secret, version: str | None = None) -> bool:
    """One secret version to /etc/rig/secrets/<service>/<name>@<version>: the value on stdin,
    never in argv."""
    encoded = base64.b64encode(secret.value.encode()).decode()
    result = host_shell(host, cmd.write_secret(service, name, version), stdin=encoded, timeout=30)
    if not result.ok:
        from pyinfra import logger

        logger.error(f"{host.print_prefix}could not write secret {name} of {service}: "
                     f"{' '.join(result.stderr[-1:])}")
    return result.ok


def needs_restore(facts: RolloutFacts, service: str, before: dict | None,
                  proxied: bool) -> bool:
    """Whether a service is off the version it ran before the rollout (or, with nothing
    before, whether a container is there at all); or, behind the proxy, runs it while the proxy
    sends elsewhere: a restore that did not reach its switch back (rig killed, the host frozen),
    the version rolled back from still serving as -prev, or the restore's 503 answer still up
    (not an operator's maintenance: that 503 is meant)."""
    if decide(before, facts.containers.get(cmd.current(service)), before) != KEEP:
        return True
    return proxied and switched_away(facts, service) and not facts.in_maintenance(service)


def back_under_own_name(facts: RolloutFacts, service: str, before: dict | None) -> bool:
    """rig-<service> (running or stopped) is the version before the rollout again: a restore
    that did not reach its switch back (the two names swapped): -prev is then the version
    rolled back from, never what to go back to."""
    return same(Version.of(facts.containers.get(cmd.current(service))), Version.of(before))


def switched_away(facts: RolloutFacts, service: str) -> bool:
    """rig-<service> runs in a slot the host's proxy (read) does not send to."""
    found = facts.containers.get(cmd.current(service))
    return facts.proxy is not None and found is not None and found.running \
        and found.slot in proxy_cmd.SLOTS \
        and proxy_cmd.live_slot(facts.proxy.get(service)) != found.slot


@operation()
def release_restored(service: str, before: dict | None):
    """rig-<service> runs what it ran before the rollout: the kept container (-prev) starts
    again; with nothing before (a first rollout) the service is not running. rig-<service>
    already the version before (a restore that did not reach its switch back: needs_restore):
    started if it is stopped, and its restore gate and the switch back finish it.

    + service: the service to restore
    + before: {tag, digest} it ran before, or None
    """
    facts = host.get_fact(RolloutState)
    strategy = strategy_for(fleet_of(host), host.name, service)
    if not needs_restore(facts, service, before, strategy.proxied):
        host.noop(f"{service} already runs its previous version")
        return
    if back_under_own_name(facts, service, before):    # (not both None: needs_restore said no)
        if facts.containers[cmd.current(service)].running:
            host.noop(f"{service} already runs its previous version; the proxy goes back to "
                      "it once its restore gate passes")
        else:
            yield spooled(cmd.control_command("start", service, 0))
        return
    has_previous = cmd.previous(service) in facts.containers
    if before is not None and not has_previous:
        yield fail(f"{service}: no kept container to go back to {before.get('tag')}")
        return
    warm, drain = restore_way(facts, service, strategy)
    # one spooled command: a host frozen or rig killed between its parts (the new container
    # removed, the kept one not yet renamed back) would leave the service with nothing running
    yield spooled(all_of(*cmd.restore_commands(service, has_previous, warm=warm, drain=drain)))


def restore_way(facts: RolloutFacts, service: str, strategy) -> tuple[bool, float | None]:
    """How a restore reaches the kept container without a refused request: (warm, drain).
    When the proxy sends to the new container (the switch came, the rollback after it),
    start_first restores warm, the kept one started beside the new one, which serves until the
    switch back; otherwise (two copies do not fit) the proxy answers 503 first, open requests
    drained. When the new one never took a request (its gate failed: the proxy is still on the
    kept one, or in maintenance), neither: it just goes."""
    found = facts.containers.get(cmd.current(service))
    kept = facts.containers.get(cmd.previous(service))
    live = proxy_cmd.live_slot((facts.proxy or {}).get(service))
    serving = strategy.proxied and found is not None and found.running and found.slot == live
    if not serving:
        return False, None
    if strategy.name == START_FIRST and kept is not None and kept.slot in proxy_cmd.SLOTS \
            and kept.slot != found.slot:
        return True, None
    return False, strategy.drain


@operation(is_idempotent=False)
def recorded(finished: list[str], entries: list[dict], state_doc: dict | None):
    """The record step, in one round trip: the kept containers (-prev) of `finished` services
    removed, secret versions no rig container mounts removed (old versions once the kept
    containers are gone, the secrets of services dropped from the spec), the ledger lines
    appended and state.json written (commands/container.py record_command).

    + finished: services whose kept containers go (their rollout finished on this host)
    + entries: ledger lines for this host (none: no ledger line)
    + state_doc: the host's new current-state document (None: state.json is not written)
    """
    yield spooled(cmd.record_command(finished, entries, state_doc))


# -- deploys the orchestration adds, one wave at a time ---------------------------------------
@deploy("Roll out")
def roll_out(releases: dict, secrets: dict | None = None, known: dict | None = None):
    """releases: host -> [Release]; secrets: service -> {name: Secret}, for the services that
    have any; known: host -> RolloutFacts pre-flight read (the hosts are locked since, and a
    wave's hosts untouched until now: not read again). The engine gates what started."""
    mine = releases.get(host.name, [])
    facts = (known or {}).get(host.name)
    if not mine:
        return
    # the pulls (side by side), the secrets, then the swaps, each a step of its own: the swap's
    # step is the swap command alone (engine._not_gated: begun, or never sent)
    images_pulled(name="pull images" if len(mine) > 1 else f"{mine[0].service}: pull "
                  f"{mine[0].tag}", releases=mine, known=facts)
    if any((secrets or {}).get(r.service) for r in mine):
        secrets_written(name="secrets", releases=mine, secrets=secrets, known=facts)
    releases_running(name=", ".join(map(run_label, mine)), releases=mine, known=facts)


@deploy("Roll back")
def roll_back(services: dict, restored: dict):
    """services: host -> {service: what it ran before (or None)}. Only services that are off
    their previous version get operations (read now, after the failed wave); restored[host]
    lists them, for the engine to gate."""
    wanted = services.get(host.name, {})
    if not wanted:
        return
    facts, fleet = host.get_fact(RolloutState), fleet_of(host)
    restored[host.name] = [s for s, before in wanted.items() if needs_restore(
        facts, s, before, strategy_for(fleet, host.name, s).proxied)]
    for service in restored[host.name]:
        release_restored(name=f"{service}: restore previous", service=service,
                         before=wanted[service])


SWITCH_STEP = {"stop": "proxy to the new container",           # a rollout's switch
               "remove": "proxy back to the restored container",  # a rollback's or an abort's
               "keep": "proxy back to the container that runs"}   # after a 503 no one asked for


@deploy("Switch")
def switch(services: dict, then: str = "stop"):
    """services: host -> [service]: each host's proxy goes to what passed its gate there;
    then: what becomes of the kept container (proxy_switched)."""
    mine = services.get(host.name, [])
    if mine:
        proxy_switched(name=f"{', '.join(mine)}: {SWITCH_STEP[then]}", services=mine, then=then)


@deploy("Settle")
def settle(services: dict):
    """services: host -> [service] whose kept container serves what is wanted (previous_settled)."""
    for service in services.get(host.name, []):
        previous_settled(name=f"{service}: remove the container the proxy never sent to",
                         service=service)


@deploy("Record")
def record(entries: dict, states: dict, finished: dict, repair: tuple = ()):
    """After a finished wave, a rollback or an abort alike (a rotated secret whose new
    container was rolled back goes too). repair: hosts whose state.json was unreadable, written
    whole again even without a ledger line."""
    mine = entries.get(host.name) or []
    recorded(name="ledger, state and clean-up", finished=finished.get(host.name) or [],
             entries=mine, state_doc=states.get(host.name) if mine or host.name in repair
             else None)
