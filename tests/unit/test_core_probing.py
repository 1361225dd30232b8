"""The health gate's loop on one host (rig/rollout/probing.py) against the fake fleet: how often it
probes, with which deadlines, what a pause judges, when it gives up, which verdict each service
gets and how long it says it took, the logs of a failure, gate checks, and GPU errors."""

from __future__ import annotations

import json
import threading

import pytest

from rig.commands import container as cmd
from rig.config.checks import CheckSpec
from rig.rollout import probing
from tasks.util import Shell

from .fakes import FakeSession, container_of

SERVICE = "affective_processing_center"      # health: start_period 20 s, interval 0.5 s, timeout 2 s
OTHER = "real_time_audio_pipeline"           # same health settings
LOGS = ["loading weights", "HF_TOKEN=hunter2-secret-value", "fatal: nope"]


def one_host(fleet, *running, **faults):
    """mainpc running the given services (started at the session's start)."""
    session = FakeSession(fleet, ["mainpc"], **faults)
    ph = fleet.profile_of("mainpc").content_hash()
    for service in running:
        release = cmd.Release(service, "T2", "reg/" + service, "sha256:new", ph)
        session.facts_by_host["mainpc"].containers[cmd.current(service)] = container_of(release)
        session.started[("mainpc", service)] = session.now
    return session


def run(session, services, sleeps=None, **kwargs):
    start = session.now

    def sleep(seconds):
        if sleeps is not None:
            sleeps.append(seconds)
        session.sleep(seconds)
    verdicts = probing.gate(lambda command, timeout: session.shell("mainpc", command,
                                                                   timeout=timeout),
                            session.fleet, "mainpc", services, clock=session.clock, sleep=sleep,
                            **kwargs)
    return verdicts, round(session.now - start, 2)


def commands(session, marker):
    return [(c, t) for _, c, t in session.commands if marker in c]


# -- how it probes ------------------------------------------------------------------------------------
def test_a_healthy_service_is_probed_at_its_interval_and_passes_after_min_healthy(fleet):
    session = one_host(fleet, SERVICE)
    sleeps = []
    verdicts, took = run(session, [SERVICE], sleeps)
    verdict = verdicts[SERVICE]
    assert (verdict.passed, verdict.reason, verdict.answer) == (True, "healthy for 2.0 s",
                                                                '200 {"status": "ok"}')
    assert sleeps == [0.5, 0.5, 0.5, 0.5] and verdict.elapsed == took == 2.0
    assert verdict.logs == [] and commands(session, "docker logs") == []
    # every round is one short command, its deadline the health timeout plus 10 s
    assert {t for _, t in commands(session, "probe $(date")} == {12.0}


def test_until_a_first_2xx_the_loop_polls_fast_for_at_most_30_probes(fleet):
    session = one_host(fleet, SERVICE, loading={("mainpc", SERVICE): 10})
    sleeps = []
    verdicts, _ = run(session, [SERVICE], sleeps)
    assert verdicts[SERVICE].passed
    assert sleeps[:29] == [cmd.FAST_POLL] * 29 and set(sleeps[29:]) == {0.5}


def test_the_time_a_gate_took_is_to_the_hundredth_and_each_verdict_keeps_its_own(fleet):
    """mainpc: SERVICE passes first (polled every 0.1 s while OTHER loads: at 2.1 s), OTHER loads
    for a second, a third service was never there (a first install's restore): its verdict takes
    the gate's whole time."""
    session = one_host(fleet, SERVICE, OTHER, loading={("mainpc", OTHER): 1})
    verdicts, took = run(session, [SERVICE, OTHER, "model_ops_coordinator"],
                         allow_missing=("model_ops_coordinator",))
    assert {s: (v.passed, v.elapsed) for s, v in verdicts.items()} == {
        SERVICE: (True, 2.1), OTHER: (True, 3.1), "model_ops_coordinator": (True, 3.1)}
    assert verdicts["model_ops_coordinator"].reason == "no container (none ran before)"
    assert took == 3.1


def test_the_host_clock_is_not_the_control_machines(fleet):
    """The probes carry the host's epoch: a host an hour ahead still gets its start period."""
    session = one_host(fleet, SERVICE, loading={("mainpc", SERVICE): 10})
    real = session._probe
    session._probe = lambda host, service: real(host, service).replace(
        f"probe {session.now:.3f}", f"probe {session.now + 3600:.3f}")
    seen = []
    verdicts, _ = run(session, [SERVICE], on_probe=lambda h, s, p: seen.append((h, s, p.t)))
    assert verdicts[SERVICE].passed
    assert seen[0] == ("mainpc", SERVICE, 0.0) and seen[1][2] == pytest.approx(0.1)


@pytest.mark.parametrize("answer,reason", [
    (Shell(False, "", ["ssh: one", "ssh: two", "connection reset"]), "ssh: two connection reset"),
    (Shell(True, "bash: docker: command not found\n", []), "bash: docker: command not found"),
    (Shell(True, "y" * 300, []), "y" * 200),
    (Shell(False, "", []), "no output"),
])
def test_a_probe_that_does_not_answer_fails_the_gate_saying_what_the_host_said(fleet, answer,
                                                                               reason):
    session = one_host(fleet, SERVICE)
    real = session.shell
    session.shell = lambda h, c, stdin=None, timeout=None: (
        answer if "probe $(date" in c else real(h, c, stdin, timeout))
    verdicts, _ = run(session, [SERVICE])
    assert (verdicts[SERVICE].passed, verdicts[SERVICE].reason) == (
        False, f"probe failed on the host: {reason}")
    assert verdicts[SERVICE].logs == LOGS
    assert [t for _, t in commands(session, "docker logs")] == [30]


def test_probes_that_stop_advancing_give_up_by_the_control_clock(fleet):
    """The host answers 503 with the same epoch each time (its clock stuck): the judge never
    leaves the start period; the loop gives up at the judges' deadline plus 60 s."""
    session = one_host(fleet, SERVICE, loading={("mainpc", SERVICE): 1e9})
    real = session._probe
    stuck = f"probe {session.now:.3f}"
    session._probe = lambda host, service: (
        real(host, service).replace(f"probe {session.now:.3f}", stuck))
    verdicts, took = run(session, [SERVICE])
    deadline = 20 + 4 * (0.5 + 2) + 2 + 5
    assert verdicts[SERVICE].reason == f"no verdict within {deadline + 60:.0f} s (probes stopped " \
        "coming in)"
    assert deadline + 60 < took <= deadline + 60 + 0.5


# -- which verdict -----------------------------------------------------------------------------------------
def test_a_failure_stops_the_gate_and_the_others_are_not_judged(fleet):
    session = one_host(fleet, SERVICE)      # OTHER was never started: it exited at once
    verdicts, _ = run(session, [OTHER, SERVICE])
    assert [(s, v.passed, v.reason, v.elapsed) for s, v in verdicts.items()] == [
        (OTHER, False, "container exited (exit code 0)", 0.0),
        (SERVICE, False, "not judged: another service's gate failed first", 0.0)]
    assert len(commands(session, "probe $(date")) == 1
    assert [v.logs for v in verdicts.values()] == [LOGS, LOGS]


def test_a_missing_container_passes_only_where_none_ran_before(fleet):
    session = one_host(fleet, SERVICE)
    verdicts, _ = run(session, [SERVICE, OTHER], allow_missing=(SERVICE, OTHER))
    assert verdicts[SERVICE].reason == "healthy for 2.0 s"        # there: judged as usual
    assert verdicts[OTHER].reason == "no container (none ran before)"
    verdicts, _ = run(one_host(fleet), [OTHER])
    assert (verdicts[OTHER].passed, verdicts[OTHER].reason) == (False,
                                                                "container exited (exit code 0)")


def test_an_operator_event_not_set_lets_the_gate_run(fleet):
    verdicts, _ = run(one_host(fleet, SERVICE), [SERVICE], abort=threading.Event())
    assert verdicts[SERVICE].passed


def test_a_pause_watches_for_its_length_from_the_first_answer_and_skips_the_gate_checks(fleet):
    fleet = with_gate_check(fleet)
    judge = probing.judges_for(fleet, [SERVICE], 30.0)[SERVICE]
    assert (judge.health.start_period, judge.min_healthy) == (0.0, 30.0)
    judge = probing.judges_for(fleet, [SERVICE], None)[SERVICE]
    assert (judge.health.start_period, judge.min_healthy) == (20.0, fleet.rollout.min_healthy)
    session = one_host(fleet, SERVICE)
    verdicts, took = run(session, [SERVICE], hold=30.0)
    assert (verdicts[SERVICE].reason, took) == ("healthy for 30.0 s", 30.0)
    assert commands(session, "docker exec ") == []


def test_a_pause_has_no_start_period_a_failing_canary_fails_at_once(fleet):
    session = one_host(fleet, SERVICE, loading={("mainpc", SERVICE): 1e9})
    verdicts, _ = run(session, [SERVICE], hold=30.0)
    assert (verdicts[SERVICE].reason, verdicts[SERVICE].elapsed) == (
        "unhealthy 3 times in a row", 0.2)


# -- gate checks -------------------------------------------------------------------------------------------
def with_gate_check(fleet, timeout=5.0):
    services = dict(fleet.services)
    spec = services[SERVICE]
    check = CheckSpec(name="lists the model", path="/models", expect={"loaded": ["m"]}, gate=True,
                      timeout=timeout)
    services[SERVICE] = spec.model_copy(update={"checks": [*spec.checks, check]})
    return fleet.model_copy(update={"services": services})


def test_a_plain_pass_says_nothing_of_gate_checks(fleet):
    verdicts, _ = run(one_host(fleet, SERVICE), [SERVICE])
    assert verdicts[SERVICE].reason == "healthy for 2.0 s"


def test_gate_checks_pass_with_the_health_verdicts_words_and_answer(fleet):
    fleet = with_gate_check(fleet, timeout=3.0)
    session = one_host(fleet, SERVICE)
    verdicts, took = run(session, [SERVICE])
    assert (verdicts[SERVICE].reason, verdicts[SERVICE].answer, took) == (
        "healthy for 2.0 s; gate checks passed: lists the model", '200 {"status": "ok"}', 2.0)
    assert [t for _, t in commands(session, "docker exec ")] == [13.0]


def test_a_health_failure_while_the_checks_wait_fails_the_gate(fleet):
    fleet = with_gate_check(fleet)
    session = one_host(fleet, SERVICE, watch_fails={("mainpc", SERVICE)},
                       checks_fail_until={("mainpc", SERVICE): 1e9})
    verdicts, _ = run(session, [SERVICE])
    assert verdicts[SERVICE].reason == "unhealthy 3 times in a row"


def test_a_service_with_checks_whose_health_fails_fails_on_its_health(fleet):
    fleet = with_gate_check(fleet)
    session = one_host(fleet)            # not running at all
    verdicts, _ = run(session, [SERVICE])
    assert verdicts[SERVICE].reason == "container exited (exit code 0)"
    assert commands(session, "docker exec ") == []


@pytest.mark.parametrize("answer,reason,said", [
    (Shell(False, "", ["docker: error", "python: not found"]), "python: not found", ""),
    (Shell(True, "", []), "no result", ""),
    (Shell(True, json.dumps({"name": "lists the model", "ok": False, "body": "b" * 300}) + "\n",
           ["ignored"]), "ignored", "b" * 200),
    (Shell(True, json.dumps({"name": "lists the model", "ok": False, "error": "HTTP 500"}) + "\n",
           []), "HTTP 500", ""),
])
def test_a_gate_check_that_never_answers_as_expected_names_why_after_the_deadline(
        fleet, answer, reason, said):
    fleet = with_gate_check(fleet)
    session = one_host(fleet, SERVICE)
    real = session.shell
    session.shell = lambda h, c, stdin=None, timeout=None: (
        answer if c.startswith("docker exec ") else real(h, c, stdin, timeout))
    verdicts, took = run(session, [SERVICE])
    verdict = verdicts[SERVICE]
    assert (verdict.passed, verdict.reason, verdict.answer) == (
        False, f"gate check 'lists the model' failed: {reason}", said)
    assert took > probing.judges_for(fleet, [SERVICE], None)[SERVICE].deadline


# -- GPU errors ----------------------------------------------------------------------------------------------
def test_the_kernel_log_is_read_every_10_s_and_once_more_before_a_pass(fleet):
    session = one_host(fleet, SERVICE, loading={("mainpc", SERVICE): 15})
    reads = []
    verdicts, took = run(session, [SERVICE],
                         gpu_errors=lambda: reads.append(session.now - 1_700_000_000.0))
    assert verdicts[SERVICE].passed
    assert len(reads) == 2 and 10.0 <= reads[0] < 10.5 and reads[1] == pytest.approx(took)


def test_a_gpu_error_fails_every_gate_still_waiting_on_the_host(fleet):
    session = one_host(fleet, SERVICE, OTHER, loading={("mainpc", SERVICE): 30,
                                                       ("mainpc", OTHER): 30})
    errors = iter([None, "GPU error on mainpc: Xid 79 (fallen off the bus)"])
    verdicts, took = run(session, [SERVICE, OTHER], gpu_errors=lambda: next(errors))
    assert {s: (v.passed, v.reason) for s, v in verdicts.items()} == {
        s: (False, "GPU error on mainpc: Xid 79 (fallen off the bus)") for s in (SERVICE, OTHER)}
    assert 20.0 <= took < 20.5


def test_a_gpu_error_found_at_the_last_read_fails_a_passed_gate(fleet):
    session = one_host(fleet, SERVICE)
    verdicts, _ = run(session, [SERVICE], gpu_errors=lambda: "GPU error on mainpc: Xid 48")
    verdict = verdicts[SERVICE]
    assert (verdict.passed, verdict.reason, verdict.answer, verdict.elapsed) == (
        False, "GPU error on mainpc: Xid 48", '200 {"status": "ok"}', 2.0)
    assert verdict.logs == LOGS


def test_a_gate_that_failed_keeps_its_own_reason_over_a_gpu_error(fleet):
    verdicts, _ = run(one_host(fleet), [SERVICE], gpu_errors=lambda: "GPU error on mainpc: Xid 48")
    assert verdicts[SERVICE].reason == "container exited (exit code 0)"


def test_no_gpu_reader_no_gpu_reads_in_a_long_gate(fleet):
    session = one_host(fleet, SERVICE, loading={("mainpc", SERVICE): 15})
    verdicts, took = run(session, [SERVICE])
    assert verdicts[SERVICE].passed and took > 15


def slow_shell(session, seconds=0.003):
    """Each command to the host takes `seconds` of the control machine's clock."""
    real = session.shell

    def shell(name, command, stdin=None, timeout=None, retry=False):
        session.now += seconds
        return real(name, command, stdin, timeout)
    session.shell = shell
    return session


def test_elapsed_times_are_rounded_to_the_hundredth(fleet):
    session = slow_shell(one_host(fleet, SERVICE))
    verdicts, took = run(session, [SERVICE, OTHER], allow_missing=(OTHER,))
    assert verdicts[SERVICE].reason == "healthy for 2.0 s"
    assert (verdicts[SERVICE].elapsed, verdicts[OTHER].elapsed) == (2.02, 2.02)   # 2.015 s
    fleet = with_gate_check(fleet)
    session = slow_shell(one_host(fleet, SERVICE))
    verdicts, took = run(session, [SERVICE])
    assert verdicts[SERVICE].reason.endswith("gate checks passed: lists the model")
    assert verdicts[SERVICE].elapsed == 2.02                                       # 2.018 s
