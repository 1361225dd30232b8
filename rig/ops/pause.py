"""rig promote and rig abort: what follows a rollout paused after its canary (rollout.pause:
manual). The paused rollout's locks hold its record (rollout/engine.py paused_record): per host
and service, the release the canary runs or the batches will run (`to`), and on the canary
exactly what each change replaced (`from`) and state.json's entry before it (`state`).

    promote   the remaining waves run the recorded releases, never a fresh tag look-up; if the
              tag, the spec or a secret changed since the pause (what would run now differs
              from the record), or the canary no longer runs what it ran, it says what and
              refuses: `rig abort`, or a new rollout
    abort     the canary's recorded changes go back to their `from` (the kept containers, which
              still read the secret versions they were started with), gated; nothing else on
              any host is touched; every lock of the paused rollout is released

Both take over the paused rollout's locks by compare-and-swap (rollout/locks.py): of two
racing commands one wins, the other is told who did. Abort's own locks keep the record until
it is done: an abort that did not finish (killed, a host frozen) is finished by the next `rig
abort`, which takes each service from where the first left it (abort_step), and promote is
refused from then on."""

from __future__ import annotations

import time
from dataclasses import dataclass

from tasks.rollout import back_under_own_name, needs_restore

from ..commands import container as cmd
from ..errors import RigError
from ..ledger import entry
from ..proc import pid_running
from ..rollout.decide import KEEP, Version, decide, runs, same
from ..rollout.engine import (
    Rollout,
    _now,
    at_tag,
    back_release,
    host_problems,
    release_of,
    resolve_releases,
)
from ..rollout.locks import carried, describe_lock
from ..rollout.strategy import strategy_for
from .job import Job, select_hosts
from .rollout import Options, Plan, PlanRow, RolloutReport, _registry, rollout, signed


@dataclass(frozen=True)
class Paused:
    """The one paused rollout, as its locks keep it (rollout/engine.py paused_record).
    in_flight: "abort" or "promote" when such a command's locks are among them (running, or
    it did not finish: they keep the record, rollout/locks.py carried)."""
    id: str
    tag: str
    canary: list[str]
    remaining: list[list[str]]
    services: list[str] | None
    batch: object
    paused_since: object
    record: dict
    in_flight: str | None

    @property
    def hosts(self) -> list[str]:
        return [h for wave in [self.canary, *self.remaining] for h in wave]

    def carried(self, key: str) -> dict:
        """What an abort's or a promote's own locks say besides who holds them (key: aborting,
        promoting): the paused rollout it acts on (its id, tag, waves, record), so that one
        that does not finish can be finished."""
        return {key: self.id, "tag": self.tag, "canary": self.canary,
                "remaining": self.remaining, "services": self.services, "batch": self.batch,
                "paused_since": self.paused_since, "record": self.record}


def paused_rollout(job: Job, say) -> Paused:
    """The one paused rollout on the fleet's hosts, read from its locks, or from those of an
    abort or a promote of it that did not finish (killed, or a host frozen: that lock keeps
    the record, `aborting` or `promoting` its id)."""
    hosts = select_hosts(job.fleet)
    with job.session(hosts) as session:
        facts = Rollout(session, job.fleet, say, "status", "").facts()
    found: dict[str, list[dict]] = {}
    for f in facts.values():
        lock = f.lock if f else None       # (a dict: parse_rollout_facts reads it so)
        if lock and lock.get("paused") and lock.get("id"):
            found.setdefault(lock["id"], []).append(lock)
        elif lock and carried(lock):
            found.setdefault(lock[carried(lock)[0]], []).append(lock)
    if not found:
        raise RigError("no paused rollout: nothing to promote or abort (`rig status` shows "
                       "what runs, `rig lock status` who holds what)",
                       *held_instead(facts, job.fleet.rollout.lock_stale_after))
    if len(found) > 1:
        raise RigError(f"{len(found)} paused rollouts hold locks: "
                       + ", ".join(f"{locks[0].get('tag')} ({i})" for i, locks in found.items()))
    paused_id, locks = next(iter(found.items()))
    lock = locks[0]
    if not isinstance(lock.get("record"), dict) or not lock.get("canary"):
        raise RigError(f"the paused rollout {lock.get('tag')} has no record of what its canary "
                       "did (paused by an older rig, or the lock file was edited): `rig lock "
                       "release --force` and a new rollout")
    verbs = sorted({carried(lk)[1] for lk in locks if carried(lk)})
    if len(verbs) > 1:
        raise RigError(f"both an abort and a promote of the paused rollout {lock.get('tag')} "
                       "hold locks (`rig lock status` says which): nothing was changed")
    return Paused(paused_id, lock.get("tag"), lock["canary"], lock.get("remaining") or [],
                  lock.get("services"), lock.get("batch"), lock.get("paused_since"),
                  lock["record"], verbs[0] if verbs else None)


def held_instead(facts: dict, stale_after: float, now: float | None = None,
                 alive=pid_running) -> list[str]:
    """Who holds the hosts' locks when no paused rollout does (a promote's or an abort's keep
    its record and are found as the paused rollout): a rollout killed, or a promote of an older
    rig (its locks a plain rollout's), is finished by a rollout of its tag with --break-lock
    once its holder is dead."""
    now = time.time() if now is None else now
    locks = {h: f.lock for h, f in sorted(facts.items()) if f and f.lock}
    lines = [f"  {h}: {describe_lock(lock, stale_after, now, alive=alive)}"
             for h, lock in locks.items()]
    tags = sorted({str(lock["tag"]) for lock in locks.values()
                   if lock.get("action") == "rollout" and lock.get("tag")})
    lines += [f"  a rollout of {tag} holds them: if it did not finish (killed), `rig rollout "
              f"--tag {tag} --break-lock` finishes it" for tag in tags]
    return lines


def differences(record: dict, fresh: dict[str, list[cmd.Release]], facts: dict,
                canary: list[str]) -> list[str]:
    """What would run now that the paused rollout did not canary (pure): a tag pushed again,
    a spec or secret changed, a service added or dropped, a canary that no longer runs what it
    ran. Empty when promote may replay the record."""
    lines = []
    for host in sorted(set(record) | set(fresh)):
        recorded = {s: release_of(row["to"]) for s, row in (record.get(host) or {}).items()}
        now = {r.service: r for r in fresh.get(host, [])}
        host_facts = facts.get(host)
        for service in sorted(set(recorded) | set(now)):
            was, new = recorded.get(service), now.get(service)
            if was is None and host_facts is not None and host_facts.running(service) is None \
                    and (host_facts.state.get(service) or {}).get("stopped"):
                continue  # stopped by an operator: the rollout left it so, and so does promote
            if was is None and host in canary:  # unchanged on the canary: must still be so
                running = host_facts.running(service) if host_facts else None
                state = host_facts.state.get(service) if host_facts else None
                if decide(new, running, state) != KEEP:
                    lines.append(f"{host} {service}: would change now, but the canary did not "
                                 "change it")
                continue
            if was is None:
                lines.append(f"{host} {service}: not in the paused rollout (added since)")
                continue
            if new is None:
                lines.append(f"{host} {service}: in the paused rollout but no longer selected "
                             "(dropped from the spec or not in the registry)")
                continue
            if new.digest != was.digest:
                lines.append(f"{host} {service}: {was.tag} now points to {new.digest[7:19]}; the "
                             f"canary ran {was.digest[7:19]} (the tag was pushed again)")
            if new.config != was.config:
                changes = cmd.config_changes(was.config, new.config)
                lines.append(f"{host} {service}: changed since the pause: "
                             + ("; ".join(c for c in changes) or "settings"))
            if host in canary:
                running = host_facts.running(service) if host_facts else None
                if not runs(running, was):
                    lines.append(f"{host} {service}: the canary no longer runs what it ran "
                                 f"({running.tag if running else 'nothing'} now)")
    return lines


def promote(job: Job, say, on_plan=None, verify: bool = True) -> RolloutReport:
    paused = paused_rollout(job, say)
    if paused.in_flight == "abort":
        raise RigError(f"an abort of the paused rollout {paused.tag} holds locks (running, or "
                       "it did not finish: `rig lock status` says which): promote refused, "
                       "nothing was changed; `rig abort` finishes it")
    record, canary, hosts = paused.record, paused.canary, paused.hosts
    resume = paused.in_flight       # "promote": one that did not finish, taken over and ended
    say(f"promoting {paused.tag}: " + ("finishing a promote that did not finish; " if resume
                                        else "") + f"canary {', '.join(canary)} passed; next "
        + "; ".join(", ".join(w) for w in paused.remaining))

    def resolve(facts):
        fresh, problems = resolve_releases(job.fleet, hosts, paused.services,
                                           at_tag(paused.tag), _registry(job), job.secrets)
        changed = problems + differences(record, fresh, facts, canary)
        if changed:
            raise RigError(*changed, "promote refused: what would run now is not what the "
                           "canary ran; nothing was changed (`rig abort` rolls the canary back, "
                           "or start a new rollout)")
        releases = {h: [release_of(row["to"]) for row in (record.get(h) or {}).values()]
                    for h in hosts}
        return (*signed(job, releases, []), [])
    opts = Options(services=paused.services, limit=hosts, canary=canary,
                   batch=paused.batch, pause="none", adopt=paused.id, resume=resume,
                   carry=paused.carried("promoting"),    # the record, until it is done
                   cleanup={h: list(record.get(h) or {}) for h in canary}, verify=verify)
    return rollout(job, paused.tag, opts, say, on_plan, resolve=resolve)


def abort_step(facts, service: str, to: cmd.Release, before: dict | None,
               state_before: dict | None, proxied: bool) -> tuple[str, str]:
    """What an abort does to one service its canary changed (pure), and why: `restore` (it
    runs what the paused rollout started; or rig-<service> is `before` again, running or
    stopped, while the proxy sends elsewhere: an abort that did not reach its switch back),
    `record` (it is back and served,
    but state.json still says otherwise: an abort that did not reach its record step), or
    `skip`."""
    running = facts.running(service)      # (a live -prev: the one that serves)
    if runs(running, to):
        return "restore", "abort"
    if not needs_restore(facts, service, before, proxied):
        if same(Version.of(facts.state.get(service)), Version.of(state_before)):
            return "skip", "already runs what it ran before"
        return "record", "abort: already back, state.json written back"
    if back_under_own_name(facts, service, before):
        return "restore", "abort: already back, gated (started if stopped), then the proxy " \
            "goes back to it"
    return "skip", (f"runs {running.tag if running else 'nothing'}, neither what the paused "
                    "rollout started nor what it replaced; left as it is")


def abort(job: Job, say, on_plan=None) -> RolloutReport:
    """The canary's recorded changes back to what they replaced; every lock released."""
    paused = paused_rollout(job, say)
    if paused.in_flight == "promote":
        raise RigError(f"a promote of the paused rollout {paused.tag} holds locks (running, or "
                       "it did not finish: `rig lock status` says which): abort refused, "
                       "nothing was changed; `rig promote` finishes it (then `rig rollback` "
                       "goes back)")
    record, canary, hosts = paused.record, paused.canary, paused.hosts
    resume = paused.in_flight       # "abort": one that did not finish, taken over and ended
    say(f"aborting {paused.tag}: " + ("finishing an abort that did not finish; " if resume
                                       else "") + f"rolling the canary {', '.join(canary)} back")
    started = time.monotonic()
    with job.session(hosts, say=lambda host, line: say(f"  {host:<10} {line}")) as session:
        engine = Rollout(session, job.fleet, say, "abort", paused.tag, job.secrets)
        facts = engine.facts()
        problems = [f"{h}: did not answer the pre-flight read" for h in hosts if not facts.get(h)]
        problems += host_problems(job.fleet, {h: f for h, f in facts.items() if f}, False,
                                  time.time(), adopt=paused.id, resume=resume)
        if problems:
            raise RigError(*problems, "abort refused: nothing was changed")
        targets, rows, skipped = {}, [], []
        for host in canary:
            for service, row in sorted((record.get(host) or {}).items()):
                to, before, f = release_of(row["to"]), row.get("from"), facts[host]
                step, why = abort_step(f, service, to, before, row.get("state"),
                                       strategy_for(job.fleet, host, service).proxied)
                if step == "skip":
                    skipped.append(f"{host} {service}: {why}")
                    continue
                targets.setdefault(host, {})[service] = before
                rows.append(PlanRow(host, service, True, to.tag, to.digest,
                                    (before or {}).get("tag") or "(nothing)",
                                    (before or {}).get("digest") or "", [why]))
        plan = Plan(f"abort {paused.tag}", hosts, [canary], rows, skipped)
        if on_plan:
            on_plan(plan)
        outcome_lines: list[str] = []
        ok, checked, gate_seconds = True, time.monotonic(), 0.0
        locked = ran = checked
        try:
            engine.locks.holder.update(paused.carried("aborting"))  # the record, until done
            taken = engine.take_locks(adopt=paused.id, resume=resume)
            if taken:
                raise RigError(*taken, "abort refused: nothing was changed")
            locked = time.monotonic()
            if targets:
                restored, gates, results = engine.restore(targets)
                gate_seconds = max((g.elapsed for g in gates.values()), default=0.0)
                ok = all(restored.values())
                now, entries, states = _now(), {}, {h: facts[h].state for h in canary}
                for host, services in targets.items():
                    for service, before in services.items():
                        row = record[host][service]
                        back = back_release(release_of(row["to"]), before)
                        entries.setdefault(host, []).append(entry(
                            now, engine.who, "abort", host, back,
                            Version.of(release_of(row["to"])).to_dict(),
                            "ok" if restored[host] else "rollback_failed",
                            None if restored[host] else "the restore failed",
                            (before or {}).get("config_hash"), (before or {}).get("health")))
                overrides = {h: {s: record[h][s].get("state") for s in services}
                             for h, services in targets.items() if restored[h]}
                engine.record(entries, states, {h: [] for h in targets}, overrides)
                outcome_lines += engine._restore_lines(sorted(targets), restored, gates, results,
                                                       {})
                outcome_lines += engine.record_failures
                ok = ok and not engine.record_failures
        finally:
            ran = time.monotonic()
            unreleased = engine.release_locks()
    elapsed = time.monotonic() - started
    return RolloutReport("abort", paused.tag, plan, ok, False, outcome_lines, elapsed,
                         {"connect_and_preflight": checked - started,
                          "locks": locked - checked + time.monotonic() - ran,
                          "waves": ran - locked, "health_gates": gate_seconds}, unreleased)
