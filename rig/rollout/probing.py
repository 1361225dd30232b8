"""The health gate's loop on one host: probe every service in one short command per round, feed
each answer to its service's judge (gate.py), until every gate has passed or one has failed.

No single remote command here waits long: one round is a `docker inspect` and a curl with the
service's own health timeout, run with a deadline of its own. The gate as a whole lasts as long
as its judges allow (start period, retries, interval, min_healthy, or a pause's length), never
host_timeout: a model that loads for ten minutes is gated for ten minutes.

    gate(shell, fleet, host, services, hold=None, allow_missing=(), abort=None)
      shell(command, timeout) -> tasks.util.Shell   (Session.shell bound to the host)
"""

from __future__ import annotations

import time
from collections.abc import Callable

import gevent

from ..commands import container as cmd
from ..commands.checks import check_command, parse_results
from .gate import GateJudge, Verdict, describe

STOPPED = "stopped by a second signal"
XID_EVERY = 10.0        # seconds between two reads of the host's kernel log for GPU (Xid) errors
PROBE_SLACK = 10.0      # seconds a probe round may take beyond the services' health timeouts
WALL_SLACK = 60.0       # seconds past the judges' own deadline before the loop gives up by clock


def judges_for(fleet, services: list[str], hold: float | None,
               timings: dict[str, dict | None] | None = None) -> dict[str, GateJudge]:
    """A gate judges by the service's health settings and rollout.min_healthy; a canary pause
    (hold) watches an already healthy service: no start period, and it must stay healthy for
    the pause's length. timings: service -> recorded gate timings (a restored version's, from
    state.json) that replace the spec's."""
    judges = {}
    for service in services:
        health = fleet.services[service].health
        if (timings or {}).get(service):
            health = health.model_copy(update=timings[service])
        judges[service] = (GateJudge(health.model_copy(update={"start_period": 0.0}), hold)
                           if hold else GateJudge(health, fleet.rollout.min_healthy))
    return judges


def last_answer(judge: GateJudge) -> str:
    """What the service last answered, as a verdict shows it ("" before the first probe)."""
    probe = judge.last
    if probe is None:
        return ""
    return describe(probe) if probe.state == "running" else f"container {probe.state}"


def gate(shell: Callable, fleet, host: str, services: list[str], hold: float | None = None,
         allow_missing: tuple = (), abort=None, clock=time.monotonic, sleep=gevent.sleep,
         on_probe: Callable | None = None, gpu_errors: Callable | None = None,
         gate_checks: bool = True, timings: dict[str, dict | None] | None = None
         ) -> dict[str, Verdict]:
    """Judge every service on one host; returns service -> Verdict (a failed one carries the
    container's last log lines). A service with `gate: true` checks passes only once its
    /health has passed AND those checks answer as expected (a pause does not re-run them).
    gpu_errors() -> why or None: the host's GPU errors since the wave began (Xid), read every
    XID_EVERY seconds and once more before the gate passes; any fails every gate on the host.
    gate_checks=False: /health alone (a restored version is judged by /health, not by checks
    the spec may have gained since it last ran)."""
    specs = {s: fleet.services[s] for s in services}
    judges = judges_for(fleet, services, hold, timings)
    checks = {s: [c for c in specs[s].checks if c.gate] for s in services} \
        if gate_checks and not hold else {}
    round_trip = cmd.probe_services([(s, spec.port, spec.health.path, judges[s].health.timeout)
                                     for s, spec in specs.items()])
    probe_timeout = max(j.health.timeout for j in judges.values()) + PROBE_SLACK
    started = clock()
    give_up = started + max(j.deadline for j in judges.values()) + WALL_SLACK
    origins: dict[str, float] = {}
    verdicts: dict[str, Verdict] = {}
    healthy: dict[str, Verdict] = {}   # /health passed; the gate checks still to answer
    fast, xid_read = 0, started
    while len(verdicts) < len(services) and all(v.passed for v in verdicts.values()):
        waiting = [s for s in services if s not in verdicts]
        if gpu_errors is not None and clock() - xid_read >= XID_EVERY:
            xid_read, why = clock(), gpu_errors()
            if why:
                verdicts.update({s: Verdict(False, why) for s in waiting})
                break
        if abort is not None and abort.is_set():  # the operator insists: no more waiting
            verdicts.update({s: Verdict(False, STOPPED, last_answer(judges[s]))
                             for s in waiting})
            break
        if clock() > give_up:
            verdicts.update({s: Verdict(False, f"no verdict within {give_up - started:.0f} s "
                                        "(probes stopped coming in)") for s in waiting})
            break
        answer = shell(round_trip, probe_timeout)
        probes = cmd.parse_probes(answer.stdout) if answer.ok else {}
        quick = False
        for service in waiting:
            probe = probes.get(service)
            if probe is None:
                what = " ".join(answer.stderr[-2:]) or answer.stdout.strip()[:200] or "no output"
                verdicts[service] = Verdict(False, f"probe failed on the host: {what}")
                continue
            origins.setdefault(service, probe.t)  # host and control clocks differ
            probe.t -= origins[service]
            if on_probe:
                on_probe(host, service, probe)
            if probe.state == "missing" and service in allow_missing:
                verdicts[service] = Verdict(True, "no container (none ran before)")
                continue
            verdict = judges[service].feed(probe)
            if verdict is not None and verdict.passed and checks.get(service):
                healthy.setdefault(service, verdict)    # now its gate checks must answer
            elif verdict is not None and (not verdict.passed or service not in healthy):
                verdict.elapsed = round(clock() - started, 2)
                verdicts[service] = verdict
            quick |= probe.code // 100 != 2
        for service in [s for s in healthy if s not in verdicts]:
            verdict = _checks_verdict(shell, service, specs[service].port, checks[service],
                                      healthy[service],
                                      clock() - started > judges[service].deadline)
            if verdict is not None:
                verdict.elapsed = round(clock() - started, 2)
                verdicts[service] = verdict
        fast += 1
        if len(verdicts) < len(services) and all(v.passed for v in verdicts.values()):
            intervals = [judges[s].health.interval for s in services if s not in verdicts]
            sleep(min([cmd.FAST_POLL, *intervals]) if quick and fast < cmd.FAST_PROBES
                  else min(intervals))
    if gpu_errors is not None and verdicts and all(v.passed for v in verdicts.values()):
        why = gpu_errors()            # a GPU error since the last read fails a passed gate too
        if why:
            verdicts = {s: Verdict(False, why, v.answer, v.elapsed) for s, v in verdicts.items()}
    elapsed = round(clock() - started, 2)
    for service in services:
        verdict = verdicts.get(service) or Verdict(False, "not judged: another service's gate "
                                                   "failed first")
        verdict.elapsed = verdict.elapsed or elapsed
        if not verdict.passed and verdict.reason != STOPPED:
            verdict.logs = shell(cmd.logs_command(service), 30).stdout.splitlines()
        verdicts[service] = verdict
    return verdicts


def _checks_verdict(shell, service: str, port: int, checks: list, healthy: Verdict,
                    late: bool) -> Verdict | None:
    """The gate checks of a service whose /health passed: a pass when every one answers as
    expected; past the gate's deadline, a failure naming the first that did not; else None
    (try again next round)."""
    command = check_command(cmd.current(service), port, checks)
    answer = shell(command, sum(c.timeout for c in checks) + PROBE_SLACK)
    results = {r["name"]: r for r in parse_results(answer.stdout)}
    failed = [(c.name, results.get(c.name)) for c in checks
              if not (results.get(c.name) or {}).get("ok")]
    if not failed:
        return Verdict(True, f"{healthy.reason}; gate checks passed: "
                       + ", ".join(c.name for c in checks), healthy.answer)
    if not late:
        return None
    name, result = failed[0]
    why = (result or {}).get("error") or " ".join(answer.stderr[-1:]) or "no result"
    return Verdict(False, f"gate check {name!r} failed: {why}",
                   str((result or {}).get("body") or "")[:200])
