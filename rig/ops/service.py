"""rig stop | start | restart | maintenance on|off SERVICE: an operator's hand on one service,
under the rollout lock.

    select hosts -> connect -> pre-flight (bootstrapped, not locked) -> locks
    -> docker stop/start/restart (start and restart gated like a rollout), or the proxy's
       maintenance answer on (open requests finish first) or off (the container gated first)
    -> ledger -> unlock

state.json remembers a stop (`stopped: true`), so `rig status` says `stopped` and a later
`rig rollout` leaves the service stopped unless it is given --start-stopped; and maintenance
(`maintenance: true`), which a rollout keeps: the new version is started and gated, and the
proxy goes to it at `rig maintenance off`."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

from tasks.control import VERBS, control

from ..commands import container as cmd
from ..errors import RigError
from ..ledger import entry
from ..rollout.decide import Version, same
from ..rollout.engine import Rollout, host_problems
from .job import Job, check_services, select_hosts


@dataclass
class ControlReport:
    verb: str
    service: str
    ok: bool
    lines: list[str] = field(default_factory=list)
    seconds: float = 0.0
    unreleased_locks: list[str] = field(default_factory=list)


def control_service(job: Job, verb: str, service: str, limit: list[str] | None,
                    break_lock: bool, say, force: bool = False) -> ControlReport:
    if verb not in VERBS:
        raise RigError(f"unknown verb {verb!r} (stop, start, restart)")
    started = time.monotonic()
    check_services(job.fleet, [service], "SERVICE")
    hosts = select_hosts(job.fleet, limit, [service])
    report = ControlReport(verb, service, ok=True)
    with job.session(hosts, say=lambda host, line: say(f"  {host:<10} {line}")) as session:
        engine = Rollout(session, job.fleet, say, verb, "", job.secrets)
        facts = engine.facts()
        problems = [f"{h}: did not answer the pre-flight read" for h in hosts if facts.get(h) is None]
        problems += host_problems(job.fleet, {h: f for h, f in facts.items() if f},
                                  break_lock, time.time(), force)
        problems += [f"{h}: {service} was never rolled out here (no container rig-{service})"
                     for h in hosts if facts.get(h) and cmd.current(service) not in facts[h].containers]
        if verb.startswith("maintenance") and not job.fleet.proxy.enabled:
            problems.append("proxy.enabled is false: there is no proxy to answer for the service")
        if verb == "maintenance-off":
            problems += [f"{h}: {service} is not running (`rig start {service}` first)"
                         for h in hosts if facts.get(h) and cmd.current(service)
                         in facts[h].containers and facts[h].running(service) is None]
            problems += [line for h in hosts if facts.get(h)
                         for line in _unrecorded(h, service, facts[h])]
        if not problems and verb in ("start", "restart"):   # must meet the driver, fit the card
            from .gpu import control_gpu_problems

            problems += control_gpu_problems(job, service, facts)
        if problems:
            raise RigError(*problems, f"rig {verb}: nothing was changed")
        try:
            lock_problems = engine.take_locks(break_lock, force)
            if lock_problems:
                raise RigError(*lock_problems, f"rig {verb}: nothing was changed")
            if verb == "maintenance-off":   # gated first: clients go only to a healthy one
                gates = engine.gate({h: [service] for h in hosts})
                healthy = [h for h in hosts if gates[(h, service)].passed]
                results = session.run(control, service=service, verb=verb,
                                      hosts=healthy) if healthy else {}
            else:
                results = session.run(control, hosts=hosts, service=service, verb=verb)
                gates = {} if verb in ("stop", "maintenance-on") else engine.gate(
                    {h: [service] for h in hosts if results.get(h) is not None and results[h].ok})
                if verb in ("start", "restart"):
                    results.update(_switch_back(job, session, service, hosts, facts, gates))
            now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            entries = {}
            for host in hosts:
                line, ok = _outcome(host, service, verb, results.get(host), gates.get((host, service)))
                report.lines.append(line)
                report.ok &= ok
                entries[host] = [_ledger_line(now, engine.who, verb, host, facts[host], service,
                                              ok, line)]
            states = {h: facts[h].state for h in hosts}
            engine.record(entries, states)
            report.lines += engine.record_failures
            report.ok &= not engine.record_failures
        finally:
            report.unreleased_locks = engine.release_locks()
    report.seconds = time.monotonic() - started
    return report


def _switch_back(job: Job, session, service: str, hosts: list[str], facts, gates) -> dict:
    """After a passed gate of a start or restart, the proxy goes back to the container (a stop
    or restart put up the 503 first), unless an operator's maintenance keeps the 503 up. The
    switch's result stands for the host's when it failed."""
    from ..rollout.strategy import strategy_for

    back = [h for h in hosts if gates.get((h, service)) is not None and gates[(h, service)].passed
            and strategy_for(job.fleet, h, service).proxied and facts[h].proxy is not None
            and not facts[h].in_maintenance(service)]
    if not back:
        return {}
    switched = session.run(control, hosts=back, service=service, verb="maintenance-off")
    return {h: r for h, r in switched.items() if not r.ok} | {
        h: None for h in back if h not in switched}


def _unrecorded(host: str, service: str, facts) -> list[str]:
    """maintenance-off sends clients to rig-<service>. After an interrupted rollout that is a
    version no rollout recorded as gated, while the recorded one is still there beside it as
    -prev: refused, rather than send clients to the unrecorded one."""
    found = facts.containers.get(cmd.current(service))
    kept = facts.containers.get(cmd.previous(service))
    recorded = Version.of(facts.state.get(service))
    if found is None or kept is None or same(Version.of(found), recorded) \
            or not same(Version.of(kept), recorded):
        return []
    return [f"{host}: {service}: rig-{service} runs {found.tag or found.digest[:19]}, which no "
            "rollout recorded as gated (one was interrupted), and the recorded "
            f"{kept.tag or kept.digest[:19]} is kept beside it as rig-{service}-prev: run `rig "
            "rollout` (or `rig rollback`) to settle which one serves"]


def _outcome(host: str, service: str, verb: str, result, gate) -> tuple[str, bool]:
    if gate is not None and not gate.passed:  # the gate's report says more than "gate failed"
        logs = "".join(f"\n    | {line}" for line in gate.logs[-8:])
        what = "still in maintenance: its container is" if verb == "maintenance-off" \
            else f"{verb}ed but"
        return (f"{host}: {service}: {what} UNHEALTHY: {gate.reason}; answered: "
                f"{gate.answer or 'nothing'}{logs}"), False
    if result is None or not result.ok:
        why = (result.unreachable or ", ".join(result.failed)) if result else "did not answer"
        return f"{host}: {service}: {verb} FAILED: {why}", False
    if verb == "maintenance-on":
        return f"{host}: {service}: in maintenance (the proxy answers 503 maintenance)", True
    if verb == "maintenance-off":
        return (f"{host}: {service}: serving again, {gate.reason} ({gate.elapsed:.1f} s)"
                if gate is not None else f"{host}: {service}: serving again"), True
    if gate is not None:
        return f"{host}: {service}: {verb}ed, {gate.reason} ({gate.elapsed:.1f} s)", True
    return f"{host}: {service}: stopped", True


def _ledger_line(now, who, verb, host, facts, service, ok, line) -> dict:
    """The ledger line of one host: the version the container holds, and what happened."""
    found = facts.containers.get(cmd.current(service))
    release = cmd.Release(service, found.tag if found else "", "", found.digest if found else "",
                          found.profile_hash if found else "", found.config if found else "")
    return entry(now, who, verb, host, release, None, "ok" if ok else "failed",
                 None if ok else line.split(": ", 2)[-1][:300])
