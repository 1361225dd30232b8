"""plan, rollout, rollback and status: one control flow, from host selection to the report.

    select hosts -> resolve releases (digests) -> connect -> pre-flight facts -> waves
    -> locks -> Rollout.run (rollout/engine.py) -> locks released -> report

Each returns plain data; nothing here prints except through `say` (progress lines)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ..errors import RigError
from ..plan import parse_batch, waves
from ..rollout.decide import runs
from ..rollout.engine import Change, Rollout, at_tag, host_problems, resolve_releases
from ..rollout.gate import body_matches
from ..rollout.locks import describe_lock, liveness
from ..tags import check_tag
from .job import Job, select_hosts, split


@dataclass
class Options:
    """What rollout, rollback and plan take from the command line."""

    services: list[str] | None = None
    limit: list[str] | None = None
    canary: list[str] | None = None
    batch: str | None = None
    break_lock: bool = False
    force: bool = False       # with break_lock: even a live holder or a paused rollout
    verify: bool = True       # run the testinfra services suite after a rollout that changed
    start_stopped: bool = False  # start services an operator stopped (rig stop) too
    pause: float | str | None = None  # after the canary: seconds, "manual", "none"; None: the spec's
    adopt: str | None = None  # promote/abort: the id of the paused rollout whose locks to take over
    resume: str | None = None  # promote: "promote" finishes one that did not finish (locks.py)
    carry: dict | None = None  # promote: what its locks keep (the paused record) until it ends
    cleanup: dict[str, list[str]] | None = None  # promote: the canary's kept containers go at the end


@dataclass
class PlanRow:
    host: str
    service: str
    change: bool
    running_tag: str | None
    running_digest: str | None
    tag: str
    digest: str
    why: list[str] = field(default_factory=list)   # what changes, in words
    gate: list[str] = field(default_factory=list)  # what its gate waits for beyond /health
    strategy: str = ""                             # start_first | stop_first | direct
    strategy_why: str = ""


@dataclass
class Plan:
    label: str
    hosts: list[str]
    waves: list[list[str]]
    rows: list[PlanRow]
    skipped: list[str] = field(default_factory=list)

    @property
    def changes(self) -> int:
        return sum(r.change for r in self.rows)


@dataclass
class RolloutReport:
    action: str
    label: str
    plan: Plan
    ok: bool
    interrupted: bool
    lines: list[str]
    seconds: float
    phases: dict[str, float]
    unreleased_locks: list[str] = field(default_factory=list)
    verify_rc: int | None = None    # the services suite's exit code, when it ran
    paused: list[list[str]] | None = None   # a manual pause: the waves still to go
    signal: int | None = None       # the signal that interrupted it
    warnings: list[str] = field(default_factory=list)

    @property
    def when_back(self) -> str:
        """What finishes the job on a host whose lock could not be released, once it answers."""
        if self.action == "abort":      # its lock keeps the paused rollout's record
            return "it keeps the paused rollout's record: `rig abort` once the host answers"
        return "`--break-lock` once the host answers"


def options_from(services=None, limit=None, canary=None, batch=None, break_lock=False,
                 no_verify=False, start_stopped=False, pause=None, force=False) -> Options:
    from ..config.rollout import parse_pause

    if pause is not None:  # --pause 0 turns off a pause the spec asks for: "none"
        try:
            pause = parse_pause(pause) or "none"
        except ValueError as e:
            raise RigError(f"--pause {pause}: {e}") from None
    if force and not break_lock:
        raise RigError("--force goes with --break-lock (it breaks even a live holder's lock)")
    return Options(split(services), split(limit), split(canary), batch, break_lock, force,
                   not no_verify, start_stopped, pause)


def _leave_stopped(changes: dict[str, list[Change]], facts, skipped: list[str]) -> None:
    """Services an operator stopped stay stopped (and are named) unless --start-stopped."""
    for host, host_changes in changes.items():
        for change in list(host_changes):
            recorded = facts[host].state.get(change.release.service) or {}
            if recorded.get("stopped") and change.running is None:
                host_changes.remove(change)
                skipped.append(f"{host} {change.release.service}: stopped by an operator "
                               f"since {recorded.get('stopped_since') or '?'}; left stopped "
                               "(--start-stopped starts it)")


def _registry(job: Job):
    return job.registry   # the command's one client (ops/job.py)


def signed(job: Job, releases: dict, problems: list[str]) -> tuple[dict, list[str]]:
    """(releases, problems) with a line for every image without a valid signature by one of
    build.signing.public_keys, when the spec requires signatures (rollout.require_signed):
    every verb that would run an image (rollout, rollback, promote, deploy, plan) resolves its
    releases through this, so the refusal comes before any lock or change."""
    if not job.fleet.requires_signed or not releases:
        return releases, problems
    from .signing import public_keys, signature_problems

    return releases, problems + signature_problems(job.fleet, _registry(job), releases,
                                                   public_keys(job.fleet))


def _resolved(job: Job, hosts: list[str], services: list[str] | None, target):
    """Releases resolved in the registry and their signatures checked: the rollout runs this in
    a greenlet while the hosts connect."""
    return signed(job, *resolve_releases(job.fleet, hosts, services, target, _registry(job),
                                         job.secrets))


def _plan(job: Job, label: str, hosts: list[str], releases, facts, opts: Options,
          problems: list[str], skipped: list[str]) -> tuple[Plan, dict[str, list[Change]]]:
    """Pre-flight on read facts: waves and changes, or a RigError naming every problem."""
    lost = [f"{h}: did not answer the pre-flight read" for h in hosts if facts.get(h) is None]
    problems = problems + lost + host_problems(
        job.fleet, {h: f for h, f in facts.items() if f is not None}, opts.break_lock, time.time(),
        opts.force, opts.adopt, opts.resume)
    plan_waves = waves(job.fleet, hosts, opts.canary, parse_batch(opts.batch))
    changes = {h: [Change(h, r, facts[h].running(r.service), facts[h].state.get(r.service))
                   for r in releases.get(h, [])]
               for h in hosts if facts.get(h) is not None}
    skipped = list(skipped)
    if not opts.start_stopped:  # before the GPU checks: a service left stopped starts nothing
        _leave_stopped(changes, facts, skipped)
    if not problems:  # the GPU: each image's CUDA against the driver, memory against the card
        from .gpu import gpu_problems

        clients: list = []   # the registry is asked only when a GPU service would start

        def image_env(repository: str, digest: str) -> dict:
            clients[:] = clients or [_registry(job)]
            path = repository.removeprefix(f"{job.fleet.registry.host}/")  # the registry's name
            return clients[0].image_env(path, digest)
        problems = gpu_problems(job.fleet, changes, facts, image_env)
    if problems:
        raise RigError(*problems, "pre-flight failed: no host was changed")
    rows = [PlanRow(h, c.release.service, c.needed, c.running.tag if c.running else None,
                    c.running.digest if c.running else None, c.release.tag, c.release.digest,
                    c.why if c.needed else [],
                    [k.name for k in job.fleet.services[c.release.service].checks if k.gate],
                    *_strategy(job.fleet, h, c.release.service))
            for wave in plan_waves for h in wave for c in changes.get(h, [])]
    return Plan(label, hosts, plan_waves, rows, skipped), changes


def _strategy(fleet, host: str, service: str) -> tuple[str, str]:
    from ..rollout.strategy import strategy_for

    chosen = strategy_for(fleet, host, service)
    return chosen.name, chosen.why


def _warn_unchecked(job: Job, say) -> None:
    """What the spec turned off of the image checks, said by every verb that checks images."""
    if job.fleet.rollout.require_signed is False:
        say("warning: rollout.require_signed is false: image signatures are not checked")
    elif job.fleet.requires_signed and job.fleet.rollout.require_provenance is False:
        say("warning: rollout.require_provenance is false: image provenance is not checked")


def plan(job: Job, tag: str, opts: Options, say) -> Plan:
    """What `rig rollout` would do, touching nothing."""
    _warn_unchecked(job, say)
    hosts = select_hosts(job.fleet, opts.limit, opts.services)
    releases, problems = _resolved(job, hosts, opts.services, at_tag(tag))
    with job.session(hosts) as session:
        facts = Rollout(session, job.fleet, say, "plan", tag).facts()
    try:
        return _plan(job, tag, hosts, releases, facts, opts, problems, [])[0]
    except RigError as e:
        raise RigError(*(e.lines or [str(e)])[:-1], "pre-flight would fail") from None


def rollout(job: Job, tag: str, opts: Options, say, on_plan=None, resolve=None) -> RolloutReport:
    """Roll `tag` out: canary first, health gates, batches, rollback on failure; the
    pre-rollout hook first, post-rollout with the result after. resolve(facts) -> (releases,
    problems, skipped) replaces the registry look-up (promote replays a paused record)."""
    hosts = select_hosts(job.fleet, opts.limit, opts.services)
    services = opts.services or sorted({s for h in hosts for s in job.fleet.services_on(h)})
    hook = {"tag": tag, "hosts": hosts, "services": services}
    if not opts.adopt:  # promote continues a rollout whose pre-rollout hook already ran
        job.hook("pre-rollout", say, **hook)
    if resolve is None:   # the registry is asked while the hosts connect (nothing waits)
        looked_up = _started(_resolved, job, hosts, opts.services, at_tag(tag))

        def resolve(facts):
            releases, problems = looked_up()
            return releases, problems, []
    with _after(job, "post-rollout", say, hook) as done:
        done.report = _execute(job, "rollout", tag, hosts, resolve, opts, say, on_plan)
    return done.report


def _started(function, *args) -> Callable:
    """function(*args) started now in a greenlet; the returned callable waits for it and gives
    its result or raises its error (a RigError stays a RigError; gevent prints nothing)."""
    import gevent

    def run():
        try:
            return True, function(*args)
        except Exception as e:  # noqa: BLE001 - handed to whoever waits for the result
            return False, e
    job = gevent.spawn(run)

    def result():
        ok, value = job.get()
        if not ok:
            raise value
        return value
    return result


class _after:
    """Runs a post hook when the block ends, with RIG_RESULT: ok, failed, interrupted or
    paused (failed too when the block raised)."""

    def __init__(self, job: Job, name: str, say, hook: dict):
        self.job, self.name, self.say, self.hook, self.report = job, name, say, hook, None

    def __enter__(self):
        return self

    def __exit__(self, kind, *_):
        r = self.report
        result = ("failed" if kind or r is None else "paused" if r.paused else
                  "interrupted" if r.interrupted else "ok" if r.ok else "failed")
        if result != "paused":
            self.job.hook(self.name, self.say, result=result, **self.hook)
        return False


def previous_target(facts, notes: list[str] | None = None, fleet=None) -> Callable:
    """Rollback's target on each host: the last version recorded healthy there. That is
    state.json's `previous` when the host runs what state.json records; when it runs something
    else (a rollout that crashed or lost the host mid-wave), it is state.json's own entry, and
    `notes` says so."""
    def target(host, service):
        if not facts.get(host):
            return None
        recorded = facts[host].state.get(service) or {}
        running = facts[host].running(service)
        if recorded.get("digest") and running is not None and not runs(running, recorded):
            if notes is not None:
                notes.append(f"{host} {service}: runs {running.tag or '?'} "
                             f"({running.digest[7:19]}), which state.json never recorded as "
                             f"healthy (an interrupted rollout); going back to the last healthy "
                             f"version, {recorded.get('tag')}")
            return untagged(host, service, recorded.get("tag")), recorded["digest"]
        previous = recorded.get("previous")
        if not previous or not previous.get("digest"):
            return None
        return untagged(host, service, previous["tag"]), previous["digest"]

    def untagged(host: str, service: str, tag: str | None) -> str | None:
        """state.json records image tags (<tag>-<machine> for per-machine services)."""
        from ..images import build_tag

        return build_tag(fleet, service, host, tag) if fleet is not None and tag else tag
    return target


def rollback(job: Job, to_tag: str | None, opts: Options, say, on_plan=None) -> RolloutReport:
    """Back to each service's previous version on each host (or to --to TAG), through the same
    waves and gates as a rollout."""
    hosts = select_hosts(job.fleet, opts.limit, opts.services)
    registry = _registry(job)

    def resolve(facts):
        notes: list[str] = []
        target = at_tag(check_tag(to_tag)) if to_tag else previous_target(facts, notes,
                                                                           job.fleet)
        releases, problems = signed(job, *resolve_releases(job.fleet, hosts, opts.services,
                                                           target, registry, job.secrets))
        for note in notes:
            say(note)
        skipped = [] if to_tag else [
            f"{h} {s}: no previous version recorded; left as is"
            for h in hosts for s in job.fleet.services_on(h)
            if (not opts.services or s in opts.services) and facts.get(h) is not None
            and not any(r.service == s for r in releases.get(h, []))]
        if not to_tag and not releases:
            raise RigError("nothing to roll back: no service has a previous version recorded "
                           "(use --to TAG)")
        return releases, problems, skipped

    services = opts.services or sorted({s for h in hosts for s in job.fleet.services_on(h)})
    hook = {"tag": to_tag or "previous", "hosts": hosts, "services": services}
    with _after(job, "rollback", say, hook) as done:
        done.report = _execute(job, "rollback", to_tag or "previous", hosts, resolve, opts, say,
                               on_plan)
    return done.report


def _execute(job: Job, action: str, label: str, hosts: list[str], resolve, opts: Options,
             say, on_plan=None) -> RolloutReport:
    """The one control flow of rollout and rollback, from connect to released locks. Each
    host's steps (pull and run, restore, ledger) are printed as they finish, host by host."""
    started = time.monotonic()
    with job.session(hosts, say=lambda host, line: say(f"  {host:<10} {line}")) as session:
        engine = Rollout(session, job.fleet, say, action, label, job.secrets)
        _warn_unchecked(job, say)
        facts = engine.facts()
        for host, host_facts in facts.items():
            for warning in host_facts.warnings if host_facts else []:
                say(f"{host}: warning: {warning}")
        releases, problems, skipped = resolve(facts)
        the_plan, changes = _plan(job, label, hosts, releases, facts, opts, problems, skipped)
        if on_plan:
            on_plan(the_plan)
        checked = time.monotonic()
        try:  # locks are taken inside the try that releases them (a Ctrl-C while taking them)
            engine.locks.holder.update(opts.carry or {})
            lock_problems = engine.take_locks(opts.break_lock, opts.force, opts.adopt,
                                              opts.resume)
            if lock_problems:
                raise RigError(*lock_problems, "pre-flight failed: no host was changed")
            locked = time.monotonic()
            pause = (opts.pause or job.fleet.rollout.pause) if action == "rollout" else None
            outcome = engine.run(the_plan.waves, changes, facts,
                                 pause=None if pause == "none" else pause, cleanup=opts.cleanup)
            if outcome.paused:
                engine.locks.pause(paused_holder(label, the_plan.waves, opts,
                                                 engine.paused_record(the_plan.waves, changes)))
        finally:
            ran = time.monotonic()
            unreleased = engine.release_locks()
    if engine.locks.lost:  # taken over while this command ran: it did not finish as planned
        missing = [line for line in engine.lost_lock_lines() if line not in outcome.lines]
        outcome.ok, outcome.lines = False, outcome.lines + missing
    phases = {"connect_and_preflight": checked - started,
              "locks": locked - checked + time.monotonic() - ran,
              "waves": ran - locked, "health_gates": outcome.gate_seconds}
    report = RolloutReport(action, label, the_plan, outcome.ok, outcome.interrupted,
                           outcome.lines, time.monotonic() - started, phases, unreleased,
                           signal=outcome.signal, paused=outcome.paused)
    if report.ok and opts.verify and the_plan.changes and not report.paused:
        from .hosts import verify

        say("verify (testinfra, services):")
        report.verify_rc = verify(job, "services", ("--no-header",), hosts)
    return report


def paused_holder(tag: str, plan_waves: list[list[str]], opts: Options, record: dict) -> dict:
    """What a paused rollout's locks say: the rollout (tag, canary, remaining waves, services)
    and its record (rollout/engine.py paused_record), for `rig promote` and `rig abort`."""
    return {"paused": True, "paused_since": time.time(), "tag": tag, "canary": plan_waves[0],
            "remaining": plan_waves[1:], "services": opts.services, "batch": opts.batch,
            "record": record}


# -- status -------------------------------------------------------------------------------------
@dataclass
class StatusRow:
    host: str
    service: str
    tag: str | None
    digest: str | None
    health: str
    since: str | None
    note: str | None = None     # the host's lock (a paused rollout says so), or an orphan
    proxy: str | None = None    # behind the proxy: `slot a`, `maintenance`, `no proxy`


def health_word(body: str, expect: dict, running: bool, stopped: bool = False) -> str:
    """ok, down (no answer), loading (the service says so: a model still loading), BAD <body>
    (an answer that is not the expected one); stopped when an operator stopped it (rig stop),
    not running otherwise."""
    if not running:
        return "stopped" if stopped else "not running"
    if body_matches(body, expect):
        return "ok"
    if body_matches(body, {"status": "loading"}):
        return "loading"
    if body_matches(body, {"status": "maintenance"}):
        return "maintenance"    # the proxy's answer: no live container behind it
    return "down" if not body.strip() else "BAD " + body.strip()[:40]


def proxy_word(fleet, facts, service: str) -> str | None:
    """Where the host's proxy sends the service's requests: `slot a`, `maintenance` (no live
    slot: the 503 answer, as `rig maintenance on` or a rollout set it), `no live slot` (the
    503 answer nobody asked for: HAProxy restarted without its state file; the next `rig
    rollout` gates what runs and switches back to it), `no proxy` (none answers), or None
    without a proxy in the spec."""
    from ..commands.proxy import live_slot

    if not fleet.proxy.enabled or facts is None or (facts.proxy is None
                                                    and not facts.proxy_missing):
        return None
    if facts.proxy_missing:
        return "no proxy"
    slot = live_slot(facts.proxy.get(service))
    if slot:
        return f"slot {slot}"
    asked = facts.in_maintenance(service) or (   # an operator, or a rollout at work (stop_first)
        isinstance(facts.lock, dict) and liveness(facts.lock, fleet.rollout.lock_stale_after,
                                                  time.time()) in ("live", "paused"))
    return "maintenance" if asked else "no live slot"


UNREACHABLE = "unreachable"   # status's health word for a host that did not answer


def status(job: Job, limit: list[str] | None, say) -> list[StatusRow]:
    """What runs where: host x service with tag, digest, health now (on its public port, as
    clients see it: through the proxy), which slot the proxy sends to, and since when."""
    from ..commands.container import status_probe

    hosts = select_hosts(job.fleet, limit)
    rows = []
    with job.session(hosts, partial=True) as session:   # a host that does not answer is a row
        facts = Rollout(session, job.fleet, say, "status", "").facts() if session.names() else {}
        reached = [h for h in session.names() if facts.get(h) is not None]
        probes = session.shell_all({h: status_probe(job.fleet, job.fleet.services_on(h))
                                    for h in reached}, timeout=30)
        gone = {h: "; ".join(line.removeprefix(f"{h}: ") for line in lines)
                for h, lines in session.unreachable.items()}
        gone.update({h: session.lost.get(h, "did not answer") for h in hosts
                     if h not in gone and h not in reached})
        # read, then silent: what it ran a moment ago is known, its health now is not
        silent = {h: f"its state was read, then no answer to the health probes "
                     f"({session.lost[h]})" for h in reached if h in session.lost}
    for host in hosts:
        if host in gone:
            rows += [StatusRow(host, service, None, None, UNREACHABLE, None, gone[host])
                     for service in job.fleet.services_on(host)]
            continue
        answers = dict(line.split(" ", 1) for line in probes[host].stdout.splitlines() if " " in line)
        for service in job.fleet.services_on(host):
            running = facts[host].running(service) if facts.get(host) else None
            recorded = (facts[host].state.get(service) or {}) if facts.get(host) else {}
            health = UNREACHABLE if host in silent else health_word(
                answers.get(service, ""), job.fleet.services[service].health.expect,
                running is not None, bool(recorded.get("stopped")))
            lock = facts[host].lock if facts.get(host) else None
            note = describe_lock(lock, job.fleet.rollout.lock_stale_after, time.time()) \
                if lock else None
            rows.append(StatusRow(host, service, running.tag if running else None,
                                  running.digest if running else None, health,
                                  recorded.get("since"), silent.get(host, note),
                                  proxy_word(job.fleet, facts.get(host), service)))
        for c in sorted((facts[host].containers.values() if facts.get(host) else []),
                        key=lambda c: c.name):
            if c.service and c.service not in job.fleet.services:  # the spec no longer has it
                rows.append(StatusRow(host, c.service, c.tag or None, c.digest or None, "orphan",
                                      None, f"{c.name} ({c.state}): `rig prune` removes it"))
    return rows
