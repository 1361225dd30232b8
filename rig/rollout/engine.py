"""A rollout from pre-flight to ledger, driving pyinfra one wave at a time.

    pre-flight   every image resolved to a digest, every host answers, is bootstrapped and has
                 the spec's profile, then a lock on every host; any problem -> nothing changed
    waves        canary first, then batches; per host and service: start, health gate
    on failure   the wave's hosts (or every touched host, auto_rollback: fleet) go back to the
                 containers kept for them, gated again; later waves are not touched
    finally      ledger and state.json on each host, kept containers removed, locks released
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from tasks.rollout import STOPPED, RolloutState, record, roll_back, roll_out, watch

from ..commands import container as cmd
from ..config import Fleet
from ..images import image_for
from ..ledger import entry, next_state, operator
from ..secrets import SecretStore
from .locks import HostLocks, describe_lock


@dataclass
class Change:
    host: str
    release: cmd.Release
    running: object | None          # tasks.rollout.Container or None
    recorded: dict | None = None    # what state.json says the host runs (written on a passed gate)

    @property
    def differs(self) -> bool:
        r = self.running
        return r is None or r.digest != self.release.digest \
            or r.profile_hash != self.release.profile_hash \
            or r.config_hash != self.release.config_hash

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
            lines.append("not yet gated (an earlier rollout stopped mid-gate)")
        return lines

    @property
    def unfinished(self) -> bool:
        """The right container runs, but no passed gate was recorded for it (a rollout killed
        mid-gate): it is gated again, and replaced or rolled back by the policy."""
        recorded = self.recorded or {}
        return not self.differs and (
            recorded.get("digest") != self.running.digest
            or recorded.get("config_hash", self.running.config_hash) != self.running.config_hash)

    @property
    def needed(self) -> bool:
        return self.differs or self.unfinished

    @property
    def before(self) -> dict | None:
        """What the host ran before this change: what runs, or for an unfinished change what
        was last recorded as healthy."""
        if self.unfinished:
            r = self.recorded
            return ({"tag": r.get("tag"), "digest": r["digest"],
                     "config_hash": r.get("config_hash")} if r and r.get("digest") else None)
        r = self.running
        return {"tag": r.tag, "digest": r.digest, "config_hash": r.config_hash} if r else None


@dataclass
class Outcome:
    ok: bool
    interrupted: bool = False
    signal: int | None = None       # what interrupted it: SIGINT, SIGTERM, SIGHUP
    lines: list[str] = field(default_factory=list)
    gate_seconds: float = 0.0
    paused: list[list[str]] | None = None   # manual pause: the waves still to go


def at_tag(tag: str):
    """A target for resolve_releases: every service at `tag`, its digest from the registry."""
    return lambda host, service: (tag, None)


def resolve_releases(fleet: Fleet, hosts: list[str], services: list[str] | None, target,
                     registry, secrets: SecretStore | None = None
                     ) -> tuple[dict[str, list[cmd.Release]], list[str]]:
    """host -> releases, each image resolved to its digest and its container config (runtime,
    env, secret hashes). `target(host, service)` says which (tag, digest) to run: digest None
    means "look the tag up in the registry"; a None target leaves the service out (rollback:
    nothing recorded to go back to). A secret that cannot be read raises RigError here,
    before any host is touched."""
    secrets = secrets or SecretStore(fleet)
    digests: dict[str, str | None] = {}
    releases: dict[str, list[cmd.Release]] = {}
    problems: list[str] = []
    for host in hosts:
        profile_hash = fleet.profile_of(host).content_hash()
        for service in fleet.services_on(host):
            wanted = target(host, service) if not services or service in services else None
            if wanted is None:
                continue
            tag, digest = wanted
            image = image_for(fleet, service, host, tag)
            if digest is None:
                if image.ref not in digests:
                    digests[image.ref] = registry.manifest_digest(image.path, image.tag)
                    if digests[image.ref] is None:
                        problems.append(f"{image.ref}: not in the registry")
                digest = digests[image.ref]
            if digest:
                hashes = {name: cmd.secret_hash(service, name, secret.value)
                          for name, secret in secrets.of(service).items()}
                config = cmd.container_config(fleet, host, service, digest, profile_hash, hashes)
                releases.setdefault(host, []).append(cmd.Release(
                    service, image.tag, image.repository, digest, profile_hash, config))
    return releases, problems


def host_problems(fleet: Fleet, facts_by_host: dict, break_lock: bool, now: float) -> list[str]:
    """Why a host cannot take a rollout: not bootstrapped, profile differs, locked."""
    problems = []
    for host, facts in facts_by_host.items():
        if not facts.docker_active:
            problems.append(f"{host}: the Docker engine is not running (run `rig bootstrap`)")
        expected = fleet.profile_of(host).content_hash()
        if facts.profile_hash != expected:
            what = "missing" if not facts.profile_hash else "differs from the spec"
            problems.append(f"{host}: machine profile {what} (run `rig bootstrap`)")
        if facts.lock and not break_lock:
            problems.append(f"{host}: {describe_lock(facts.lock, fleet.rollout.lock_stale_after, now)}")
    return problems


class Rollout:
    def __init__(self, session, fleet: Fleet, say: Callable[[str], None], action: str, tag: str,
                 secrets: SecretStore | None = None):
        self.session, self.fleet, self.say = session, fleet, say
        self.secrets = secrets or SecretStore(fleet)
        self.action, self.tag = action, tag
        self.who = operator()
        self.locks = HostLocks(session, fleet.rollout.lock_stale_after, action, tag)
        self.stop = threading.Event()
        self.abort = threading.Event()  # a second signal: stop gating, roll the wave back now
        self.signal: int | None = None
        self._last_gates: dict = {}
        self._last_results: dict = {}
        self.record_failures: list[str] = []
        self.last_facts: dict = {}

    # -- hosts ----------------------------------------------------------------------------------
    def facts(self) -> dict:
        self.last_facts = self.session.facts(RolloutState)
        return self.last_facts

    def take_locks(self, break_lock: bool) -> list[str]:
        return self.locks.take(break_lock)

    def release_locks(self) -> list[str]:
        """Release every lock taken; returns the hosts where that failed."""
        return self.locks.release()

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
        states = {h: facts[h].state for h in self.session.names()}
        deferred: dict = {}  # the last wave's ledger lines go with the final clean-up
        touched: list[str] = []
        outcome = Outcome(ok=True)
        handled = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
        previous = {s: signal.signal(s, lambda number, _: self._interrupt(number)) for s in handled}
        try:
            for number, wave in enumerate(waves, start=1):
                kind = "canary" if number == 1 else "batch"
                pending = {h: [c.release for c in changes.get(h, []) if c.needed] for h in wave}
                pending = {h: r for h, r in pending.items() if r}
                if not pending:
                    self.say(f"wave {number}/{len(waves)} ({kind}) {', '.join(wave)}: nothing to change")
                    continue
                if self.stop.is_set():
                    outcome.ok, outcome.interrupted, outcome.signal = False, True, self.signal
                    outcome.lines.append(f"interrupted before wave {number}: {', '.join(wave)} not "
                                         "touched; run the same command again to finish")
                    break
                self.say(f"wave {number}/{len(waves)} ({kind}) {', '.join(wave)}: "
                         f"{sum(len(r) for r in pending.values())} service(s) to start")
                if number > 1:
                    self.locks.heartbeat()
                gates: dict = {}
                self._last_gates = gates
                secrets = {r.service: self.secrets.of(r.service)
                           for rs in pending.values() for r in rs}
                results = self.session.run(roll_out, hosts=list(pending), releases=pending,
                                           results=gates, abort=self.abort, secrets=secrets)
                self._last_results = results
                outcome.gate_seconds += max((v.elapsed for v in gates.values()), default=0.0)
                failed = sorted(h for h, r in results.items() if h in pending and not r.ok)
                later = any(c.needed for w in waves[number:] for h in w for c in changes.get(h, []))
                if not failed:
                    self._say_gates(gates)
                if not failed and number == 1 and later and isinstance(pause, float) and pause > 0:
                    failed, gates = self._watch(pending, pause, outcome)
                now = _now()
                if not failed:
                    entries = {h: [entry(now, self.who, self.action, h, c.release, c.before, "ok")
                                   for c in changes[h] if c.needed] for h in pending}
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
                outcome.lines += self._failure_lines(number, kind, failed, gates, pending)
                self._revert(number, pending, touched, changes, states, outcome)
                later = [h for w in waves[number:] for h in w]
                if later:
                    outcome.lines.append(f"later waves not touched: {', '.join(later)}")
                break
            finished = {h: [c.release.service for c in changes.get(h, []) if c.needed]
                        for h in touched}
            if outcome.ok and not outcome.paused:
                for host, services in (cleanup or {}).items():
                    finished[host] = sorted(set(finished.get(host, [])) | set(services))
            self.record(deferred, states, finished)
            if self.record_failures:
                outcome.ok = False
                outcome.lines += self.record_failures
        finally:
            for number, handler in previous.items():
                signal.signal(number, handler)
        return outcome

    def _say_gates(self, gates: dict) -> None:
        for host, gate_list in _by_host(gates).items():
            for service, verdict in gate_list:
                self.say(f"  {host:<10} {service}: {verdict.reason} ({verdict.elapsed:.1f} s)")

    def _watch(self, pending: dict, seconds: float, outcome: Outcome) -> tuple[list[str], dict]:
        """The canary, healthy, watched for `seconds` more: (failed hosts, the watch's gates)."""
        self.say(f"pause {seconds:g} s: watching the canary's health before the next wave")
        gates: dict = {}
        services = {h: [r.service for r in rs] for h, rs in pending.items()}
        results = self.session.run(watch, hosts=list(pending), services=services, results=gates,
                                   hold=seconds, abort=self.abort)
        self._last_gates, self._last_results = gates, results
        outcome.gate_seconds += max((v.elapsed for v in gates.values()), default=0.0)
        failed = sorted(h for h in pending if results.get(h) is None or not results[h].ok)
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
            self.say(f"{signal.Signals(number).name} again: stopping the gates, rolling the wave back")
            self.abort.set()
        self.stop.set()

    def record(self, entries: dict, states: dict, finished: dict | None = None) -> None:
        """Ledger lines and state.json on each host (and the kept containers removed where a
        rollout finished). A host where that fails is remembered: the command exits non-zero."""
        for host, host_entries in entries.items():
            states[host] = next_state(states.get(host, {}), host_entries)
        hosts = sorted(set(entries) | set(finished or {}))
        if not hosts:
            return
        results = self.session.run(record, hosts=hosts, entries=entries, states=states,
                                   finished=finished or {})
        for host in hosts:
            r = results.get(host)
            if r is None or not r.ok:
                why = (r.unreachable or ", ".join(r.failed)) if r else "did not answer"
                self.record_failures.append(f"{host}: could not write the ledger/state.json "
                                            f"({why}); `rig history` and `rig status` may be "
                                            "behind until the next run")

    def _failure_lines(self, number, kind, failed, gates, pending) -> list[str]:
        lines = [f"wave {number} ({kind}) failed on {', '.join(failed)}"]
        for host in failed:
            for release in pending[host]:
                verdict = gates.get((host, release.service))
                if verdict is None:
                    lines.append(f"  {host} {release.service}: not started (an earlier step failed)")
                    continue
                if verdict.passed:
                    continue
                lines.append(f"  {host} {release.service} {release.tag}: {verdict.reason}; "
                             f"answered: {verdict.answer or 'nothing'}")
                lines += [f"    | {line}" for line in verdict.logs[-8:]]
        return lines

    def _revert(self, number, pending, touched, changes, states, outcome) -> None:
        """Roll back per policy, then write one ledger line per attempt with its real outcome:
        failed (and why), rolled_back, rollback_failed; every touched host's line under
        `fleet`. Written after the rollback, so the ledger says what happened."""
        scope = self.fleet.rollout.auto_rollback
        tried_gates, tried_results = dict(self._last_gates), dict(self._last_results)
        hosts = [] if scope == "none" else list(pending) + (touched if scope == "fleet" else [])
        gates: dict = {}
        results: dict = {}
        if hosts:
            services = {h: {c.release.service: c.before for c in changes[h] if c.needed}
                        for h in hosts}
            self.say(f"rolling back {', '.join(hosts)} (auto_rollback: {scope})")
            results = self.session.run(roll_back, hosts=hosts, services=services, results=gates)
        restored = {h: results.get(h) is not None and results[h].ok
                    and all(g.passed for (gh, _), g in gates.items() if gh == h) for h in hosts}
        if scope == "none":
            outcome.lines.append("auto_rollback: none, so the wave's hosts were left as they are")
        now, entries = _now(), {}
        for host in pending:
            for c in (c for c in changes[host] if c.needed):
                result, reason = _attempt(tried_gates.get((host, c.release.service)),
                                          tried_results.get(host), scope)
                if host in restored and not restored[host]:
                    result, reason = "rollback_failed", f"{reason}; the rollback failed too"
                entries.setdefault(host, []).append(entry(
                    now, self.who, self.action, host, c.release, c.before, result, reason))
        for host in touched if scope == "fleet" else []:
            for c in (c for c in changes[host] if c.needed):
                back = cmd.Release(c.release.service, (c.before or {}).get("tag") or "",
                                   c.release.repository, (c.before or {}).get("digest") or "",
                                   c.release.profile_hash)
                entries.setdefault(host, []).append(entry(
                    now, self.who, "auto-rollback", host, back,
                    {"tag": c.release.tag, "digest": c.release.digest},
                    "ok" if restored[host] else "rollback_failed",
                    f"wave {number} failed (auto_rollback: fleet)"))
        for host in hosts:
            ok = restored[host]
            lost = results.get(host) is not None and results[host].unreachable
            state = ("serving its previous version" if ok else
                     "LOST, not rolled back" if lost else "ROLLBACK FAILED: check it by hand")
            back = [s for (h, s), gate in sorted(gates.items()) if h == host and gate.passed]
            outcome.lines.append(f"  {host}: {state}"
                                 + (f" (restored and healthy: {', '.join(back)})" if back else ""))
            for (h, s), gate in sorted(gates.items()):
                if h == host and not gate.passed:
                    outcome.lines.append(f"    {s}: restore gate: {gate.reason}; {gate.answer}")
            if results.get(host) is not None and results[host].unreachable:
                outcome.lines += _lost_lines(host, results[host].unreachable, changes[host],
                                             self.action, self.tag)
        self.record(entries, states)


def _lost_lines(host: str, why: str, changes: list[Change], action: str, tag: str) -> list[str]:
    """What rig knows of a host it lost, and what to run when it is back."""
    seen = ", ".join(f"{c.release.service} {(c.before or {}).get('tag') or 'nothing'} -> "
                     f"{c.release.tag} (unknown which)" for c in changes if c.needed)
    again = f"rig {action} --tag {tag}" if action == "rollout" else f"rig {action}"
    return [f"    {host} LOST: {why}",
            f"    last seen: {seen or 'nothing to change'}; its lock is still held",
            f"    when it answers again: `rig status`, then `{again} --break-lock` finishes the job"]


def _attempt(gate, host_result, scope: str) -> tuple[str, str]:
    """(result, reason) of one service's attempt in a failed wave, before the rollback's own."""
    if gate is None:
        why = (host_result.unreachable or ", ".join(host_result.failed)) if host_result else ""
        return "failed", f"not started: {why or 'an earlier step failed'}"
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
