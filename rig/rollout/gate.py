"""The health gate's judgement (pure): probes in, pass / fail / keep going out.

Probes come from the host itself (a curl loop over SSH, see commands/container.py); this
decides, with the spec's numbers, the way Docker's HEALTHCHECK does plus a minimum healthy time:
- during start_period failures do not count (the service may still be loading), except a 2xx
  answer whose body does not match: the service is up and says it is not ok ("degraded");
- after it (or after the first good answer), `retries` failures in a row fail the gate;
- the gate passes when good answers have held for min_healthy without a failure between;
- a container that exited fails the gate at once; and there is an overall deadline."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from ..config.images import HealthSpec


@dataclass
class Probe:
    t: float           # seconds since the container was started
    state: str         # docker's State.Status: running, exited, restarting, ...
    exit_code: int
    code: int          # HTTP status, 0 when no answer
    body: str
    restarts: int = 0  # docker restarted it (restart policy): it exited at least once


@dataclass
class Verdict:
    passed: bool
    reason: str
    answer: str = ""   # what the endpoint last said: "200 {"status": "degraded"}"
    elapsed: float = 0.0
    logs: list[str] = field(default_factory=list)


def body_matches(body: str, expect: dict) -> bool:
    try:
        doc = json.loads(body)
    except ValueError:
        return False
    return isinstance(doc, dict) and all(doc.get(k) == v for k, v in expect.items())


def describe(probe: Probe) -> str:
    if probe.code == 0:
        return "no answer"
    return f"{probe.code} {probe.body.strip()[:200]}"


class GateJudge:
    def __init__(self, health: HealthSpec, min_healthy: float):
        self.health, self.min_healthy = health, min_healthy
        self.ok_since: float | None = None
        self.seen_ok = False
        self.failures = 0
        self.last: Probe | None = None

    @property
    def deadline(self) -> float:
        h = self.health
        return h.start_period + (h.retries + 1) * (h.interval + h.timeout) + self.min_healthy + 5

    def feed(self, probe: Probe) -> Verdict | None:
        self.last = probe
        if probe.state in ("exited", "dead", "removing", "missing", "restarting") or probe.restarts:
            if probe.restarts and probe.state != "exited":
                reason = f"container exited at start (docker restarted it {probe.restarts} times)"
            else:
                reason = f"container exited (exit code {probe.exit_code})"
            return Verdict(False, reason, describe(probe))
        good = 200 <= probe.code < 300 and body_matches(probe.body, self.health.expect)
        if good:
            self.seen_ok, self.failures = True, 0
            if self.ok_since is None:
                self.ok_since = probe.t
            if probe.t - self.ok_since >= self.min_healthy:
                return Verdict(True, f"healthy for {probe.t - self.ok_since:.1f} s", describe(probe))
            return None
        self.ok_since = None
        answered_not_ok = 200 <= probe.code < 300
        if self.seen_ok or answered_not_ok or probe.t >= self.health.start_period:
            self.failures += 1
            if self.failures >= self.health.retries:
                return Verdict(False, f"unhealthy {self.failures} times in a row", describe(probe))
        if probe.t >= self.deadline:
            return Verdict(False, f"no healthy answer within {self.deadline:.0f} s", describe(probe))
        return None


def parse_probe(line: str, started: float) -> Probe | None:
    """'probe <epoch> <state>:<exit>:<restarts> <http code> <base64 body>' from the host."""
    import base64

    parts = line.split(" ")
    if len(parts) < 4 or parts[0] != "probe":
        return None
    try:
        t = float(parts[1]) - started
        state, exit_code, restarts = (parts[2].split(":") + ["0", "0"])[:3]
        code = int(parts[3]) if parts[3].isdigit() else 0
        body = base64.b64decode(parts[4]).decode(errors="replace") if len(parts) > 4 else ""
        return Probe(t, state or "missing", int(exit_code or 0), code, body, int(restarts or 0))
    except ValueError:  # a garbled line is no probe (never an exception in the gate loop)
        return None
