"""A rollout from pre-flight to ledger, driving pyinfra one wave at a time.

    pre-flight   every image resolved to a digest, every host answers, is bootstrapped and has
                 the spec's profile, then a lock on every host (a heartbeat keeps it fresh);
                 any problem -> nothing changed
    waves        canary first, then batches; per host: pull and swap (pyinfra operations, each
                 command within host_timeout), then the health gate (rollout/probing.py: as
                 long as the service's health settings say, one short probe at a time)
    on failure   the wave's hosts (or every touched host, auto_rollback: fleet) go back to the
                 containers kept for them, gated again; later waves are not touched
    pause        after the canary: watched for a while, or (manual) stopped with a record of
                 what it replaced, for `rig promote` / `rig abort`
    finally      ledger and state.json on each host, kept containers removed, locks released
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import gevent

from tasks.rollout import (
    RolloutState,
    parse_rollout_facts,
    record,
    roll_back,
    roll_out,
    settle,
    swap_named,
    switch,
)

from ..commands import container as cmd
from ..commands import proxy as proxy_cmd
from ..commands.gpu import gate_sample_command, split_gate_sample
from ..config import Fleet
from ..gpu.xid import parse_kernel_lines, since
from ..images import image_for
from ..ledger import entry, health_record, next_state, operator, recorded_health
from ..secrets import SecretStore
from . import probing
from .decide import KEEP, REGATE, REMOVE, Version, decide, same
from .locks import HostLocks, may_take
from .probing import STOPPED
from .strategy import strategy_for
from .watch import GateWatch


@dataclass
class Change:
    """One service on one host: what should run (release) against what runs and what state.json
    recorded; `decision` is rollout/decide.py's answer, and everything else follows from it."""
    host: str
    release: cmd.Release
    running: object | None          # tasks.rollout.Container or None
    recorded: dict | None = None    # what state.json says the host runs (written on a passed gate)

    @property
    def decision(self) -> str:
        return decide(self.release, self.running, self.recorded)

    @property
    def unfinished(self) -> bool:
        """The right container runs, but no passed gate was recorded for it (a rollout killed
        mid-gate): it is gated again, and replaced or rolled back by the policy."""
        return self.decision == REGATE

    @property
    def needed(self) -> bool:
        return self.decision not in (KEEP, REMOVE)

    @property
    def why(self) -> list[str]:
        """What would change, in words (image tag, settings, rotated secrets)."""
        r = self.running
        if r is None:
            return ["not running"]
        lines = [f"image {r.tag} -> {self.release.tag}"] if r.digest != self.release.digest else []
        if r.config_hash != self.release.config_hash:
            lines += cmd.config_changes(r.config, self.release.config)
        elif r.profile_hash != self.release.profile_hash:
            lines.append("machine profile changed")
        if not lines and self.unfinished:
            lines.append("not recorded as gated (an earlier rollout stopped before its end)")
        return lines

    @property
    def before(self) -> dict | None:
        """What the host ran before this change: what runs, or for an unfinished change what
        was last recorded as healthy; with the gate timings state.json recorded for that very
        version (a restore of it is judged by them)."""
        version = Version.of(self.recorded) if self.unfinished else Version.of(self.running)
        if version is None:
            return None
        found = version.to_dict()
        health = recorded_health(self.recorded) if same(Version.of(self.recorded), version) \
            else None
        if health:
            found["health"] = health
        return found


@dataclass
class Outcome:
    ok: bool
    interrupted: bool = False
    signal: int | None = None       # what interrupted it: SIGINT, SIGTERM, SIGHUP
    lines: list[str] = field(default_factory=list)
    gate_seconds: float = 0.0
    paused: list[list[str]] | None = None   # manual pause: the waves still to go


PASSED = {"stop": "the new containers passed their gates",      # what a failed switch leaves
          "remove": "the restored containers passed their restore gates",
          "keep": "what runs passed its gate"}


def at_tag(tag: str):
    """A target for resolve_releases: every service at `tag`, its digest from the registry."""
    return lambda host, service: (tag, None)


def _lookup_digests(images: list, registry) -> dict[str, str | None]:
    """image ref -> its digest in the registry (None: not there), each asked once, up to
    LOOKUPS at a time. A look-up that fails (the registry refuses us, or does not answer)
    raises, as it would on its own."""
    from ..registry import side_by_side  # (the registry's requests: only where it is read)

    wanted = {image.ref: image for image in images}
    refs = list(wanted)
    found = side_by_side(lambda ref: registry.manifest_digest(wanted[ref].path,
                                                              wanted[ref].tag), refs)
    return dict(zip(refs, found, strict=True))


def resolve_releases(fleet: Fleet, hosts: list[str], services: list[str] | None, target,
                     registry, secrets: SecretStore | None = None
                     ) -> tuple[dict[str, list[cmd.Release]], list[str]]:
    """host -> releases, each image resolved to its digest and its container config (runtime,
    env, secret hashes). `target(host, service)` says which (tag, digest) to run: digest None
    means "look the tag up in the registry" (the look-ups run together); a None target leaves
    the service out (rollback: nothing recorded to go back to). A secret that cannot be read
    raises RigError here, before any host is touched."""
    secrets = secrets or SecretStore(fleet)
    chosen = []   # (host, service, image, digest or None), each target asked once
    for host in hosts:
        for service in fleet.services_on(host):
            wanted = target(host, service) if not services or service in services else None
            if wanted is not None:
                chosen.append((host, service, image_for(fleet, service, host, wanted[0]),
                               wanted[1]))
    digests = _lookup_digests([image for _, _, image, digest in chosen if digest is None],
                              registry)
    releases: dict[str, list[cmd.Release]] = {}
    problems: list[str] = []
    for host, service, image, digest in chosen:
        if digest is None:
            digest = digests[image.ref]
            if digest is None and f"{image.ref}: not in the registry" not in problems:
                problems.append(f"{image.ref}: not in the registry")
        if digest:
            hashes = {name: cmd.secret_hash(service, name, secret.value)
                      for name, secret in secrets.of(service).items()}
            config = cmd.container_config(fleet, host, service, digest,
                                          fleet.profile_of(host).content_hash(), hashes)
            releases.setdefault(host, []).append(cmd.Release(
                service, image.tag, image.repository, digest,
                fleet.profile_of(host).content_hash(), config))
    return releases, problems


def host_problems(fleet: Fleet, facts_by_host: dict, break_lock: bool, now: float,
                  force: bool = False, adopt: str | None = None,
                  resume: str | None = None) -> list[str]:
    """Why a host cannot take a rollout: not bootstrapped, profile differs, locked (by the rules
    of rollout/locks.py: may_take)."""
    problems = []
    for host, facts in facts_by_host.items():
        if not facts.docker_active:
            problems.append(f"{host}: the Docker engine is not running (run `rig bootstrap`)")
        expected = fleet.profile_of(host).content_hash()
        if facts.profile_hash != expected:
            what = "missing" if not facts.profile_hash else "differs from the spec"
            problems.append(f"{host}: machine profile {what} (run `rig bootstrap`)")
        if fleet.proxy.enabled:
            missing = [s for s in fleet.services_on(host) if facts.proxy is not None
                       and s not in facts.proxy]
            if facts.proxy_missing:
                problems.append(f"{host}: no proxy answers on its admin socket (run `rig "
                                "bootstrap`: it installs HAProxy in front of the services)")
            elif missing:
                problems.append(f"{host}: the proxy has no backend for {', '.join(missing)} "
                                "(the spec changed since the last `rig bootstrap`: run it)")
        why = may_take(facts.lock, fleet.rollout.lock_stale_after, now, break_lock, force, adopt,
                       resume=resume)
        if why:
            problems.append(f"{host}: {why}")
    return problems


class Rollout:
    def __init__(self, session, fleet: Fleet, say: Callable[[str], None], action: str, tag: str,
                 secrets: SecretStore | None = None):
        self.session, self.fleet, self.say = session, fleet, say
        self.secrets = secrets or SecretStore(fleet)
        self.action, self.tag = action, tag
        self.who = operator()
        self.locks = HostLocks(session, fleet.rollout.lock_stale_after, action, tag)
        self.clock, self.sleep = session.clock, session.sleep  # the session keeps the time
        self.stop = threading.Event()
        self.abort = threading.Event()  # a second signal: stop gating, roll the wave back now
        self.signal: int | None = None
        self.record_failures: list[str] = []
        self.last_facts: dict = {}
        self.facts_read_at = self.clock()
        self.wave_began: dict[str, float] = {}   # host -> its clock when its wave began
        self.on_probe = None
        self.on_gpu = None      # (host, [(used MiB, total MiB) per card]) while gates run

    # -- hosts ----------------------------------------------------------------------------------
    def facts(self) -> dict:
        self.last_facts = self.session.facts(RolloutState)
        self.facts_read_at = self.clock()
        return self.last_facts

    def take_locks(self, break_lock: bool = False, force: bool = False,
                   adopt: str | None = None, resume: str | None = None) -> list[str]:
        """Every host's lock (rollout/locks.py rules); while held, a heartbeat keeps it fresh."""
        problems = self.locks.take(break_lock, force, adopt, resume)
        if not problems:
            problems = self._changed_since_read()
            if problems:     # a lock --break-lock took over goes back to its holder
                self.locks.give_back()
        if not problems:
            self.locks.start_beating()
        return problems

    def _changed_since_read(self) -> list[str]:
        """The waves act on what pre-flight read (tasks/rollout.py roll_out's `known`), and the
        hosts were read before they were locked: another rig that came and went in between
        would leave that read stale. So each locked host's containers, its services'
        maintenance (state.json) and its proxy's live slots are read again, one round trip
        (not the whole RolloutState), and must be what pre-flight saw."""
        hosts = [h for h in self.locks.locked if self.last_facts.get(h) is not None]
        if not hosts:
            return []
        answers = self.session.shell_all({h: cmd.recheck_command() for h in hosts},
                                         timeout=30, retry=True)
        problems = []
        for host in hosts:
            answer = answers[host]
            if not answer.ok:
                problems.append(f"{host}: could not read its containers again once locked: "
                                + (" ".join(answer.stderr[-1:]) or "no answer"))
                continue
            changed = _changes(self.last_facts[host], parse_rollout_facts(answer.stdout.splitlines()))
            if changed:
                problems.append(f"{host}: changed between the pre-flight read and taking the "
                                f"lock ({', '.join(changed)}): another rollout, `rig "
                                "maintenance`, or by hand? run the command again")
        return problems

    def release_locks(self) -> list[str]:
        """Release every lock taken; returns the hosts where that failed."""
        return self.locks.release()

    def gate(self, services: dict[str, list[str]], hold: float | None = None,
             allow_missing: dict[str, tuple] | None = None, restored: bool = False,
             recorded: dict[str, dict[str, dict | None]] | None = None) -> dict:
        """Health gates on every host at once: (host, service) -> Verdict. What a rollback
        restored is judged by /health alone (no gate checks the spec gained since), by the gate
        timings it passed under when it was recorded (recorded: host -> service -> timings; a
        model that loads for minutes is not judged by a newer spec's shorter start period), and
        a second signal never stops its gates."""
        def one(host: str):
            return probing.gate(lambda command, timeout: self.session.shell(
                                    host, command, timeout=timeout, retry=True),  # reads only
                                self.fleet, host, services[host], hold=hold,
                                allow_missing=(allow_missing or {}).get(host, ()),
                                abort=None if restored else self.abort, clock=self.clock,
                                sleep=self.sleep, gpu_errors=self._gpu_errors(host),
                                on_probe=self.on_probe, gate_checks=not restored,
                                timings=(recorded or {}).get(host))
        deadlines = {(h, s): j.deadline for h in services
                     for s, j in probing.judges_for(self.fleet, services[h], hold,
                                                    (recorded or {}).get(h)).items()}
        with GateWatch(self.say, deadlines, clock=self.clock) as watch:
            self.on_probe, self.on_gpu = watch.probe, watch.gpu
            jobs = {h: gevent.spawn(one, h) for h in sorted(services) if services[h]}
            gevent.joinall(list(jobs.values()))
        verdicts = {}
        for host, job in jobs.items():
            if job.successful():
                verdicts.update({(host, s): v for s, v in job.value.items()})
            else:  # a bug in the loop is a failed gate, never a half-judged host
                verdicts.update({(host, s): probing.Verdict(False, f"gate error: {job.exception}")
                                 for s in services[host]})
        return verdicts

    def _gpu_errors(self, host: str):
        """For a GPU host: a reader of its kernel log for fatal Xid errors since its wave began
        (the host's own clock, from pre-flight); None elsewhere. The same round trip reads the
        cards' memory for the gate's display (on_gpu)."""
        began = self.wave_began.get(host)
        if not self.fleet.gpu_present(host) or began is None:
            return None

        def read() -> str | None:
            answer = self.session.shell(host, gate_sample_command(began), timeout=30,
                                        retry=True)
            log, cards = split_gate_sample(answer.stdout)
            if cards and self.on_gpu is not None:
                self.on_gpu(host, cards)
            fatal = [e for e in since(parse_kernel_lines(log), began) if e.fatal]
            if not fatal:
                return None
            e = fatal[0]
            return (f"GPU error on {host}: Xid {e.xid} ({e.meaning})"
                    + (f" at {e.time}" if e.time else "") + f": {e.detail[:160]}"
                    + (f" (and {len(fatal) - 1} more)" if len(fatal) > 1 else ""))
        return read

    def _mark_wave(self, hosts) -> None:
        """Where each host's clock stands as its wave begins (Xid errors from then on count)."""
        for host in hosts:
            facts = self.last_facts.get(host)
            if facts is not None and facts.host_time is not None:
                self.wave_began[host] = facts.host_time + (self.clock() - self.facts_read_at) - 5

    # -- waves ----------------------------------------------------------------------------------
    def run(self, waves: list[list[str]], changes: dict[str, list[Change]],
            facts: dict | None = None, pause: float | str | None = None,
            cleanup: dict[str, list[str]] | None = None) -> Outcome:
        """facts: what pre-flight read (nothing has changed since: the hosts are locked).
        pause: after the canary passes, seconds to keep watching it (a failure then rolls it
        back like a failed gate), or "manual": stop there, recorded, locks kept (promote/abort).
        A paused canary keeps its previous containers (-prev) for `rig abort`; cleanup names
        hosts whose kept containers go at the end anyway (a promoted canary's)."""
        facts = facts or self.facts()
        states = {h: facts[h].state for h in self.session.names() if facts.get(h) is not None}
        deferred: dict = {}  # the last wave's ledger lines go with the final clean-up
        touched: list[str] = []
        outcome = Outcome(ok=True)
        handled = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
        previous = {s: signal.signal(s, lambda number, _: self._interrupt(number)) for s in handled}
        try:
            self._serve_again(self._unserved(changes, facts), outcome)
            self._settle(self._strays(changes, facts), outcome)
            for number, wave in enumerate(waves, start=1):
                kind = "canary" if number == 1 else "batch"
                pending = {h: [c for c in changes.get(h, []) if c.needed] for h in wave}
                pending = {h: cs for h, cs in pending.items() if cs}
                if not pending:
                    self.say(f"wave {number}/{len(waves)} ({kind}) {', '.join(wave)}: nothing to change")
                    continue
                if self.stop.is_set():
                    outcome.ok, outcome.interrupted, outcome.signal = False, True, self.signal
                    outcome.lines.append(f"interrupted before wave {number}: {', '.join(wave)} not "
                                         "touched; run the same command again to finish")
                    break
                if number > 1:
                    self.locks.heartbeat()   # still ours? (a lock forced away since the last beat)
                if self.locks.lost:
                    outcome.ok = False
                    outcome.lines += self.lost_lock_lines()
                    outcome.lines.append(f"stopped before wave {number}: {', '.join(wave)} not "
                                         "touched")
                    break
                self.say(f"wave {number}/{len(waves)} ({kind}) {', '.join(wave)}: "
                         f"{sum(len(cs) for cs in pending.values())} service(s) to start")
                swapped, gates = self._wave(pending)
                outcome.gate_seconds += max((v.elapsed for v in gates.values()), default=0.0)
                failed, switch_lines = _failed_hosts(pending, swapped, gates), []
                if not failed:   # only a passed gate reaches the proxy
                    self._say_gates(gates)
                    failed = self._switch({h: [c.release.service for c in cs]
                                           for h, cs in pending.items()}, switch_lines)
                later = any(c.needed for w in waves[number:] for h in w for c in changes.get(h, []))
                if not failed and number == 1 and later and isinstance(pause, float) and pause > 0:
                    failed, gates = self._watch(pending, pause, outcome)
                now = _now()
                if not failed:
                    entries = {h: [entry(now, self.who, self.action, h, c.release, c.before, "ok",
                                         health=health_record(
                                             self.fleet.services[c.release.service].health))
                                   for c in cs] for h, cs in pending.items()}
                    if later:
                        self.record(entries, states)
                    else:
                        deferred = entries
                    if number == 1 and later and pause == "manual":
                        outcome.paused = [w for w in waves[1:] if w]
                        break
                    touched.extend(pending)
                    continue
                outcome.ok = False
                if self.abort.is_set():
                    outcome.interrupted, outcome.signal = True, self.signal
                outcome.lines += self._failure_lines(number, kind, failed, gates, pending, swapped)
                outcome.lines += switch_lines
                self._revert(number, pending, touched, changes, states, outcome, swapped, gates)
                rest = [h for w in waves[number:] for h in w]
                if rest:
                    outcome.lines.append(f"later waves not touched: {', '.join(rest)}")
                break
            finished = {h: [c.release.service for c in changes.get(h, []) if c.needed]
                        for h in touched}
            if outcome.ok and not outcome.paused:
                for host, services in _merged(cleanup or {}, self._leftovers(changes, facts)):
                    finished[host] = sorted(set(finished.get(host, [])) | set(services))
            repair = sorted(h for h, f in facts.items() if f is not None and f.state_rebuilt
                            and h in self.locks.locked)
            self.record(deferred, states, finished, repair=repair)
            if self.stop.is_set() and not outcome.interrupted:
                # the signal came during the last wave, which finished: nothing is left to do,
                # but whoever sent it hears that it arrived (exit 130/143/129, as always)
                outcome.interrupted, outcome.signal = True, self.signal
                outcome.lines.append("the signal came during the last wave, which finished: "
                                     "nothing is left to do")
            if self.record_failures:
                outcome.ok = False
                outcome.lines += self.record_failures
        finally:
            for number, handler in previous.items():
                signal.signal(number, handler)
        return outcome

    def _wave(self, pending: dict[str, list[Change]]) -> tuple[dict, dict]:
        """Pull and swap on the wave's hosts, then gate what started: (swap results, gates)."""
        self._mark_wave(pending)
        releases = {h: [c.release for c in cs] for h, cs in pending.items()}
        secrets = {c.release.service: self.secrets.of(c.release.service)
                   for cs in pending.values() for c in cs}
        swapped = self.session.run(roll_out, hosts=list(pending), releases=releases,
                                   secrets=secrets, known=self.last_facts)
        started = {h: [c.release.service for c in cs] for h, cs in pending.items()
                   if swapped.get(h) is not None and swapped[h].ok}
        return swapped, self.gate(started)

    def _switch(self, services: dict[str, list[str]], lines: list[str] | None = None,
                then: str = "stop") -> list[str]:
        """Each host's proxy to the containers that passed their gates there (start_first: the
        old ones drain, then `then`: stop, kept, after a rollout; remove, after a restore).
        Returns the hosts where that failed (with a line each
        in `lines`): they are rolled back like a failed gate."""
        kept = sorted((h, s) for h, ss in services.items() for s in ss if self._in_maintenance(h, s))
        for host, service in kept:
            self.say(f"  {host:<10} {service}: in maintenance, so the proxy stays on its 503 "
                     "answer (`rig maintenance off` sends clients to what passed its gate)")
        services = {h: [s for s in ss if strategy_for(self.fleet, h, s).proxied
                        and (h, s) not in kept] for h, ss in services.items()}
        services = {h: ss for h, ss in services.items() if ss}
        if not services:
            return []
        self.say("proxy: switching " + ", ".join(f"{h} ({', '.join(ss)})"
                                                 for h, ss in sorted(services.items())))
        results = self.session.run(switch, hosts=list(services), services=services, then=then)
        failed = []
        for host in sorted(services):
            r = results.get(host)
            if r is None or not r.ok:
                failed.append(host)
                why = (r.unreachable or ", ".join(r.failed)) if r else "did not answer"
                if lines is not None:
                    lines.append(f"  {host}: the proxy could not be switched ({why}); "
                                 + PASSED[then])
        return failed

    def _unserved(self, changes: dict[str, list[Change]], facts: dict) -> dict[str, list[str]]:
        """Services that already run what this rollout wants, but that the host's proxy does
        not send to, while no one asked for maintenance (state.json): HAProxy restarted
        without its state file, say. Only the rollout's hosts and services."""
        found: dict[str, list[str]] = {}
        for host, host_changes in changes.items():
            f = facts.get(host)
            if f is None or f.proxy is None:
                continue
            for c in host_changes:
                service = c.release.service
                running = f.running(service)    # (a live kept one: its slot is the live one)
                if c.needed or running.slot not in proxy_cmd.SLOTS \
                        or f.in_maintenance(service) \
                        or not strategy_for(self.fleet, host, service).proxied:
                    continue        # (not needed: the wanted version runs)
                if proxy_cmd.live_slot(f.proxy.get(service)) != running.slot:
                    found.setdefault(host, []).append(service)
        return found

    def _serve_again(self, unserved: dict[str, list[str]], outcome: Outcome) -> None:
        """The proxy back to what runs, once it passes its gate (a failed gate: it stays
        behind the 503, and the rollout fails, saying so)."""
        if not unserved:
            return
        for host, services in sorted(unserved.items()):
            for service in services:
                self.say(f"  {host:<10} {service}: the proxy answers 503 though no one asked for "
                         "maintenance: gating what runs, then switching the proxy back to it")
        self._mark_wave(unserved)
        gates = self.gate(unserved)
        outcome.gate_seconds += max(v.elapsed for v in gates.values())
        self._say_gates(gates)
        passed = {h: [s for s in ss if gates[(h, s)].passed] for h, ss in unserved.items()}
        lines: list[str] = []
        self._switch({h: ss for h, ss in passed.items() if ss}, lines, then="keep")
        for (host, service), verdict in sorted(gates.items()):
            if not verdict.passed:
                lines.append(self.redact(f"  {host}: {service} runs but fails its gate "
                                         f"({verdict.reason}): the proxy stays on its 503 answer"))
        if lines:       # (a failed switch says so in lines too)
            outcome.ok = False
            outcome.lines += lines

    def _strays(self, changes: dict[str, list[Change]], facts: dict) -> dict[str, list[str]]:
        """Services with nothing to change whose wanted version serves as the kept container
        (live_previous), beside a rig-<service> the proxy never sent to: a rollout or an abort
        killed before its switch, then a rollout of what serves. That one holds memory."""
        found: dict[str, list[str]] = {}
        for host, host_changes in changes.items():
            f = facts.get(host)
            for c in host_changes if f is not None else []:
                if not c.needed and f.live_previous(c.release.service):
                    found.setdefault(host, []).append(c.release.service)
        return found

    def _leftovers(self, changes: dict[str, list[Change]], facts: dict) -> dict[str, list[str]]:
        """Services with nothing to change that still have a kept container beside the one
        that serves (not a live kept one: _strays): an earlier rollout of this version killed
        before its end, whose clean-up this one, once it finished, does."""
        found: dict[str, list[str]] = {}
        for host, host_changes in changes.items():
            f = facts.get(host)
            for c in host_changes if f is not None else []:
                service = c.release.service
                if c.decision == KEEP and cmd.previous(service) in f.containers \
                        and not f.live_previous(service):
                    found.setdefault(host, []).append(service)
        return found

    def _settle(self, strays: dict[str, list[str]], outcome: Outcome) -> None:
        """The containers the proxy never sent to go; what serves is rig-<service> again."""
        if not strays:
            return
        for host, services in sorted(strays.items()):
            for service in services:
                stray = self.last_facts[host].containers.get(cmd.current(service))
                self.say(f"  {host:<10} {service}: rig-{service} ({stray.tag if stray else '?'}) "
                         "never took a request, beside the kept container that serves what is "
                         "wanted: removed, and the kept one is rig-" + service + " again")
        results = self.session.run(settle, hosts=list(strays), services=strays)
        for host in sorted(strays):
            r = results.get(host)
            if r is None or not r.ok:
                why = (r.unreachable or ", ".join(r.failed)) if r else "did not answer"
                outcome.ok = False
                outcome.lines.append(f"  {host}: could not remove the container the proxy never "
                                     f"sent to ({why}); what serves was not touched")

    def _in_maintenance(self, host: str, service: str) -> bool:
        """An operator put the service in maintenance (`rig maintenance on`, in state.json)."""
        facts = self.last_facts.get(host)
        return facts is not None and facts.in_maintenance(service)

    def _say_gates(self, gates: dict) -> None:
        for host, gate_list in _by_host(gates).items():
            for service, verdict in gate_list:
                self.say(f"  {host:<10} {service}: {verdict.reason} ({verdict.elapsed:.1f} s)")

    def _watch(self, pending: dict, seconds: float, outcome: Outcome) -> tuple[list[str], dict]:
        """The canary, healthy, watched for `seconds` more: (failed hosts, the watch's gates)."""
        self.say(f"pause {seconds:g} s: watching the canary's health before the next wave")
        gates = self.gate({h: [c.release.service for c in cs] for h, cs in pending.items()},
                          hold=seconds)
        outcome.gate_seconds += max((v.elapsed for v in gates.values()), default=0.0)
        failed = sorted({h for (h, _), v in gates.items() if not v.passed})
        if not failed:
            self.say(f"pause over: the canary stayed healthy for {seconds:g} s")
        return failed, gates

    def _interrupt(self, number: int = signal.SIGINT) -> None:
        """SIGINT, SIGTERM (a CI runner) or SIGHUP (a dropped terminal): finish the current
        wave (its gates decide, rollback per policy), record, release locks, then stop."""
        if not self.stop.is_set():
            self.signal = number
            self.say(f"{signal.Signals(number).name}: finishing the current wave (its gates "
                     "decide), then stopping; again to stop the gates and roll the wave back now")
        elif not self.abort.is_set():
            self.say(f"{signal.Signals(number).name} again: stopping the gates, rolling the wave back "
                     "(a wave whose gates all passed already finishes)")
            self.abort.set()
        self.stop.set()

    def record(self, entries: dict, states: dict, finished: dict | None = None,
               overrides: dict | None = None, repair: list[str] | None = None) -> None:
        """Ledger lines and state.json on each host (and the kept containers removed where a
        rollout finished). overrides: {host: {service: state.json entry, or None for none}}
        set after the entries (an abort puts back the entries from before the rollout). A
        host where that fails is remembered: the command exits non-zero."""
        for host, host_entries in entries.items():
            states[host] = next_state(states.get(host, {}), host_entries)
        for host, services in (overrides or {}).items():
            for service, state in services.items():
                if state is None:
                    states[host].pop(service, None)
                else:
                    states[host][service] = state
        if self.locks.locked:
            self.locks.heartbeat()  # a host whose lock was taken over since: its state is theirs
        touched = set(entries) | set(finished or {}) | set(repair or [])
        skipped = sorted(h for h in touched if h in self.locks.lost)
        for host in skipped:
            self.record_failures.append(f"{host}: not recorded (ledger, state.json): this "
                                        f"rollout's lock there was taken over: {self.locks.lost[host]}")
        hosts = sorted(touched - set(skipped))
        if not hosts:
            return
        results = self.session.run(record, hosts=hosts, entries=entries, states=states,
                                   finished=finished or {}, repair=tuple(repair or ()))
        for host in hosts:
            r = results.get(host)
            if r is None or not r.ok:
                why = (r.unreachable or ", ".join(r.failed)) if r else "did not answer"
                self.record_failures.append(f"{host}: could not write the ledger/state.json "
                                            f"({why}); `rig history` and `rig status` may be "
                                            "behind until the next run")

    def lost_lock_lines(self) -> list[str]:
        return [f"{h}: this rollout's lock was taken over: {who}"
                for h, who in sorted(self.locks.lost.items())]

    def redact(self, text: str) -> str:
        """No secret value in a line rig prints or records (a container may log its own)."""
        for service in self.fleet.services:
            for secret in self.secrets.loaded(service).values():
                if len(secret.value) >= 4:
                    text = text.replace(secret.value, "[secret]")
        return text

    def _failure_lines(self, number, kind, failed, gates, pending, swapped) -> list[str]:
        lines = [f"wave {number} ({kind}) failed on {', '.join(failed)}"]
        for host in failed:
            for c in pending[host]:
                verdict = gates.get((host, c.release.service))
                if verdict is None:
                    what, why = _not_gated(swapped.get(host), c.release.service)
                    lines.append(f"  {host} {c.release.service}: {what} ({why or 'did not answer'})")
                    continue
                if verdict.passed:
                    continue
                lines.append(self.redact(f"  {host} {c.release.service} {c.release.tag}: "
                                         f"{verdict.reason}; answered: {verdict.answer or 'nothing'}"))
                lines += [self.redact(f"    | {line}") for line in verdict.logs[-8:]]
        return lines

    def restore(self, targets: dict[str, dict[str, dict | None]]) -> tuple[dict, dict, dict]:
        """Each host back to what it ran before: {host: {service: before or None}}, through the
        kept containers, then gated. Returns (restored ok per host, gates, deploy results)."""
        restored: dict[str, list[str]] = {}
        results = self.session.run(roll_back, hosts=list(targets), services=targets,
                                   restored=restored)
        gated = {h: services for h, services in restored.items()
                 if results.get(h) is not None and results[h].ok}
        gates = self.gate(gated, allow_missing={
            h: tuple(s for s in services if targets[h][s] is None) for h, services in gated.items()},
            restored=True, recorded={h: {s: recorded_health(targets[h][s]) for s in services}
                                     for h, services in gated.items()})
        back = {h: [s for s in services if targets[h][s] is not None and gates[(h, s)].passed]
                for h, services in gated.items()}
        unswitched = set(self._switch({h: ss for h, ss in back.items() if ss}, then="remove"))
        ok = {h: results.get(h) is not None and results[h].ok and h not in unswitched
              and all(g.passed for (gh, _), g in gates.items() if gh == h) for h in targets}
        return ok, gates, results

    def _revert(self, number, pending, touched, changes, states, outcome, tried_results,
                tried_gates) -> None:
        """Roll back per policy, then write one ledger line per attempt with its real outcome:
        failed (and why), rolled_back, rollback_failed; every touched host's line under
        `fleet`. Written after the rollback, so the ledger says what happened."""
        scope = self.fleet.rollout.auto_rollback
        hosts = [] if scope == "none" else list(pending) + (touched if scope == "fleet" else [])
        restored, gates, results = {}, {}, {}
        if hosts:
            self.say(f"rolling back {', '.join(hosts)} (auto_rollback: {scope})")
            restored, gates, results = self.restore(
                {h: {c.release.service: c.before for c in changes[h] if c.needed} for h in hosts})
        if scope == "none":
            outcome.lines.append("auto_rollback: none, so the wave's hosts were left as they are")
        now, entries = _now(), {}
        for host, cs in pending.items():
            for c in cs:
                result, reason = _attempt(tried_gates.get((host, c.release.service)),
                                          tried_results.get(host), scope, c.release.service)
                if host in restored and not restored[host]:
                    result, reason = "rollback_failed", f"{reason}; the rollback failed too"
                entries.setdefault(host, []).append(entry(
                    now, self.who, self.action, host, c.release, c.before, result,
                    self.redact(reason)))
                recorded = Version.of((states.get(host) or {}).get(c.release.service))
                if restored.get(host) and c.before and not same(
                        Version.of(c.before), recorded):
                    # what was put back ran, but was never recorded as gated (an earlier rollout
                    # killed mid-gate): its restore gate passed now, so it is what the host is
                    # known to serve, and state.json says so
                    entries[host].append(entry(
                        now, self.who, "auto-rollback", host, back_release(c.release, c.before),
                        Version.of(c.release).to_dict(), "ok",
                        f"restored {c.before.get('tag') or c.before['digest'][:19]} passed its "
                        "restore gate (it was running, never recorded as gated)",
                        c.before.get("config_hash"), c.before.get("health")))
        for host in touched if scope == "fleet" else []:
            for c in (c for c in changes[host] if c.needed):
                entries.setdefault(host, []).append(entry(
                    now, self.who, "auto-rollback", host, back_release(c.release, c.before),
                    Version.of(c.release).to_dict(),
                    "ok" if restored[host] else "rollback_failed",
                    f"wave {number} failed (auto_rollback: fleet)",
                    (c.before or {}).get("config_hash"), (c.before or {}).get("health")))
        outcome.lines += self._restore_lines(hosts, restored, gates, results, changes)
        self.record(entries, states)

    def _restore_lines(self, hosts, restored, gates, results, changes) -> list[str]:
        lines = []
        for host in hosts:
            lost = results.get(host) is not None and results[host].unreachable  # (not restored)
            gone = lost or (None if restored[host] else self.session.lost.get(host))
            state = ("serving its previous version" if restored[host] else
                     "LOST, not rolled back" if lost else
                     "LOST during its rollback: which version serves is unknown" if gone
                     else "ROLLBACK FAILED: check it by hand")
            back = [s for (h, s), gate in sorted(gates.items()) if h == host and gate.passed]
            lines.append(f"  {host}: {state}"
                         + (f" (restored and healthy: {', '.join(back)})" if back else ""))
            for (h, s), gate in sorted(gates.items()):
                if h == host and not gate.passed:
                    lines.append(self.redact(f"    {s}: restore gate: {gate.reason}"
                                             + (f"; {gate.answer}" if gate.answer else "")))
            if results.get(host) is not None and not results[host].ok and not lost:
                lines.append(f"    {host}: {', '.join(results[host].failed)}")
            if gone:
                lines += _lost_lines(host, gone, changes.get(host, []), self.action, self.tag)
        return lines

    # -- a paused rollout -------------------------------------------------------------------------
    def paused_record(self, waves: list[list[str]], changes: dict[str, list[Change]]) -> dict:
        """What a manual pause leaves for promote and abort, per host and service: `to`, the
        release (digest, profile, config with the secret versions) the canary runs or the
        batches will run; and on the canary, `from`, exactly what it replaced, and `state`,
        state.json's entry before the rollout."""
        canary = set(waves[0]) if waves else set()
        record: dict = {}
        for host in (h for w in waves for h in w):
            for c in changes.get(host, []):
                if host in canary and not c.needed:
                    continue
                row = {"to": release_doc(c.release)}
                if host in canary:
                    row["from"] = c.before
                    state = (self.last_facts.get(host).state if self.last_facts.get(host)
                             else {}).get(c.release.service)
                    row["state"] = state
                record.setdefault(host, {})[c.release.service] = row
        return record


def release_doc(release: cmd.Release) -> dict:
    return {"service": release.service, "tag": release.tag, "repository": release.repository,
            "digest": release.digest, "profile_hash": release.profile_hash,
            "config": release.config}


def release_of(doc: dict) -> cmd.Release:
    return cmd.Release(doc["service"], doc["tag"], doc["repository"], doc["digest"],
                       doc["profile_hash"], doc.get("config") or "")


def back_release(release: cmd.Release, before: dict | None) -> cmd.Release:
    """The release a rollback returns a change to (no digest: back to running nothing), for
    its ledger line."""
    before = before or {}
    return cmd.Release(release.service, before.get("tag") or "", release.repository,
                       before.get("digest") or "", before.get("profile_hash") or
                       release.profile_hash)


def _merged(*maps: dict[str, list[str]]) -> list[tuple[str, list[str]]]:
    """host -> services maps as one, sorted by host."""
    merged: dict[str, set[str]] = {}
    for mapping in maps:
        for host, services in mapping.items():
            merged.setdefault(host, set()).update(services)
    return [(host, sorted(services)) for host, services in sorted(merged.items())]


def _changes(read, now) -> list[str]:
    """What differs between two reads of a host: its containers (by name), a service's
    maintenance in state.json, a service's live slot on the proxy (when both reads saw it)."""
    changed = sorted(n for n in set(now.containers) | set(read.containers)
                     if now.containers.get(n) != read.containers.get(n))
    changed += [f"{s}: maintenance" for s in sorted(set(now.state) | set(read.state))
                if now.in_maintenance(s) != read.in_maintenance(s)]
    if read.proxy is not None and now.proxy is not None:
        changed += [f"{s}: proxy" for s in sorted(set(now.proxy) | set(read.proxy))
                    if proxy_cmd.live_slot(now.proxy.get(s)) != proxy_cmd.live_slot(read.proxy.get(s))]
    return changed


def _failed_hosts(pending: dict, swapped: dict, gates: dict) -> list[str]:
    """Hosts whose swap failed, or where a started service's gate did not pass."""
    def passed(host: str, c: Change) -> bool:
        verdict = gates.get((host, c.release.service))
        return verdict is not None and verdict.passed
    return sorted(h for h, cs in pending.items()
                  if swapped.get(h) is None or not swapped[h].ok
                  or not all(passed(h, c) for c in cs))


def _lost_lines(host: str, why: str, changes: list[Change], action: str, tag: str) -> list[str]:
    """What rig knows of a host it lost, and what to run when it is back."""
    seen = ", ".join(f"{c.release.service} {(c.before or {}).get('tag') or 'nothing'} -> "
                     f"{c.release.tag} (unknown which)" for c in changes if c.needed)
    if action == "abort":       # its lock keeps the paused record: abort again, never break it
        return [f"    {host} LOST: {why}",
                "    its lock is still held, with the paused rollout's record",
                "    when it answers again: `rig abort` finishes the abort"]
    again = f"rig {action} --tag {tag}" if action == "rollout" else f"rig {action}"
    return [f"    {host} LOST: {why}",
            f"    last seen: {seen or 'nothing to change'}; its lock is still held",
            f"    when it answers again: `rig status`, then `{again} --break-lock` finishes the job"]


def _not_gated(host_result, service: str) -> tuple[str, str]:
    """Why a service of a host whose wave step failed was never gated: ("not started", why);
    ("started, not gated", why) when the step ran its service's part side by side with others
    and only theirs failed; ("unknown whether started", why) when the host stopped answering
    during the service's swap (it may have begun it: a command it began runs to its end)."""
    why = (host_result.unreachable or ", ".join(host_result.failed)) if host_result else ""
    if host_result is None:
        return "not started", why
    if host_result.unreachable and any(swap_named(step, service)
                                       for step in host_result.failed_steps):
        return "unknown whether started", why
    parts = host_result.failed_parts
    if parts and not any(swap_named(p, service) for p in parts):
        return "started, not gated", why
    return "not started", why


def _attempt(gate, host_result, scope: str, service: str = "") -> tuple[str, str]:
    """(result, reason) of one service's attempt in a failed wave, before the rollback's own."""
    if gate is None:
        what, why = _not_gated(host_result, service)
        return "failed", f"{what}: {why or 'an earlier step failed'}"
    if not gate.passed and gate.reason == STOPPED:
        return "interrupted", STOPPED
    if not gate.passed:
        return "failed", f"{gate.reason}; answered: {gate.answer or 'nothing'}"
    if scope == "none":
        return "ok", "healthy; the wave failed on another host or service"
    return "rolled_back", "healthy, rolled back with its wave"


def _by_host(gates: dict) -> dict:
    grouped: dict = {}
    for (host, service), verdict in sorted(gates.items()):
        grouped.setdefault(host, []).append((service, verdict))
    return grouped


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
