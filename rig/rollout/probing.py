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
from .gate import GateJudge, Verdict

STOPPED = "stopped by a second signal"
PROBE_SLACK = 10.0      # seconds a probe round may take beyond the services' health timeouts
WALL_SLACK = 60.0       # seconds past the judges' own deadline before the loop gives up by clock


def judges_for(fleet, services: list[str], hold: float | None) -> dict[str, GateJudge]:
    """A gate judges by the service's health settings and rollout.min_healthy; a canary pause
    (hold) watches an already healthy service: no start period, and it must stay healthy for
    the pause's length."""
    judges = {}
    for service in services:
        health = fleet.services[service].health
        judges[service] = (GateJudge(health.model_copy(update={"start_period": 0.0}), hold)
                           if hold else GateJudge(health, fleet.rollout.min_healthy))
    return judges


def gate(shell: Callable, fleet, host: str, services: list[str], hold: float | None = None,
         allow_missing: tuple = (), abort=None, clock=time.monotonic, sleep=gevent.sleep,
         on_probe: Callable | None = None) -> dict[str, Verdict]:
    """Judge every service on one host; returns service -> Verdict (a failed one carries the
    container's last log lines)."""
    specs = {s: fleet.services[s] for s in services}
    judges = judges_for(fleet, services, hold)
    round_trip = cmd.probe_services([(s, spec.port, spec.health.path, spec.health.timeout)
                                     for s, spec in specs.items()])
    probe_timeout = max(spec.health.timeout for spec in specs.values()) + PROBE_SLACK
    started = clock()
    give_up = started + max(j.deadline for j in judges.values()) + WALL_SLACK
    origins: dict[str, float] = {}
    verdicts: dict[str, Verdict] = {}
    fast = 0
    while len(verdicts) < len(services) and all(v.passed for v in verdicts.values()):
        waiting = [s for s in services if s not in verdicts]
        if abort is not None and abort.is_set():  # the operator insists: no more waiting
            verdicts.update({s: Verdict(False, STOPPED) for s in waiting})
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
            if verdict is not None:
                verdict.elapsed = round(clock() - started, 2)
                verdicts[service] = verdict
            quick |= probe.code // 100 != 2
        fast += 1
        if len(verdicts) < len(services) and all(v.passed for v in verdicts.values()):
            intervals = [specs[s].health.interval for s in services if s not in verdicts]
            sleep(min([cmd.FAST_POLL, *intervals]) if quick and fast < cmd.FAST_PROBES
                  else min(intervals))
    elapsed = round(clock() - started, 2)
    for service in services:
        verdict = verdicts.get(service) or Verdict(False, "not judged: another service's gate "
                                                   "failed first")
        verdict.elapsed = verdict.elapsed or elapsed
        if not verdict.passed and verdict.reason != STOPPED:
            verdict.logs = shell(cmd.logs_command(service), 30).stdout.splitlines()
        verdicts[service] = verdict
    return verdicts
