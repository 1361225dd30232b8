"""The rollout core's pure rules, each pinned at its edges: what counts as the same container
(rollout/decide.py), the health gate's judgement and the probe line it reads (rollout/gate.py),
who may take a lock and how a lock is described, and HostLocks' take / give back / beat / release
against the fake fleet (rollout/locks.py)."""

from __future__ import annotations

import base64
import json
import time

import gevent
import pytest

from rig.commands.container import Release
from rig.config.images import HealthSpec
from rig.rollout.decide import KEEP, REGATE, REMOVE, REPLACE, START, Version, decide, runs, same
from rig.rollout.gate import GateJudge, Probe, body_matches, parse_probe
from rig.rollout.locks import HostLocks, describe_lock, liveness, may_take
from tasks.rollout import Container
from tasks.util import Shell

from .fakes import FakeSession

# -- what runs: rollout/decide.py -----------------------------------------------------------------
WANT = Release("svc", "T2", "reg/svc", "sha256:new", "P1", '{"memory":"4g"}')
CONFIG = WANT.config_hash
RECORDED = {"tag": "T2", "digest": "sha256:new", "profile_hash": "P1", "config_hash": CONFIG}


def box(digest="sha256:new", profile="P1", config=CONFIG, state="running", tag="T2"):
    return Container("rig-svc", state, "svc", tag, digest, profile, config)


def test_a_version_reads_the_same_four_fields_from_a_release_a_container_and_a_record():
    assert Version.of(WANT) == Version("sha256:new", "T2", "P1", CONFIG)
    assert Version.of(box(tag="T?")) == Version("sha256:new", "T?", "P1", CONFIG)
    assert Version.of(RECORDED) == Version("sha256:new", "T2", "P1", CONFIG)
    assert Version.of(RECORDED).to_dict() == RECORDED


def test_labels_an_older_rig_did_not_set_are_unknown_never_empty_strings():
    """A container started by an older rig has empty tag / profile / config labels: unknown
    (None), so they are not compared, and the ledger's `from` says null, not ""."""
    assert Version.of(box(tag="", profile="", config="")) == Version("sha256:new", None, None, None)
    assert Version.of(box(tag="", profile="", config="")).to_dict() == {
        "digest": "sha256:new", "tag": None, "profile_hash": None, "config_hash": None}


def test_no_digest_is_no_version():
    assert Version.of(None) is None
    assert Version.of({"tag": "T1"}) is None
    assert Version.of({"tag": "T1", "digest": ""}) is None


@pytest.mark.parametrize("a,b,expected", [
    (None, None, True),                         # nothing is nothing
    (Version("a"), None, False),
    (None, Version("a"), False),
    (Version("a"), Version("a"), True),
    (Version("a"), Version("b"), False),        # the digest always counts
    (Version("a", profile_hash="x"), Version("a"), True),       # unknown on one side
    (Version("a"), Version("a", profile_hash="x"), True),
    (Version("a", profile_hash="x"), Version("a", profile_hash="x"), True),
    (Version("a", profile_hash="x"), Version("a", profile_hash="y"), False),
    (Version("a", config_hash="x"), Version("a"), True),
    (Version("a"), Version("a", config_hash="x"), True),
    (Version("a", config_hash="x"), Version("a", config_hash="x"), True),
    (Version("a", config_hash="x"), Version("a", config_hash="y"), False),
    (Version("a", "T1"), Version("a", "T2"), True),             # the tag is a name, not the image
])
def test_same_compares_digests_and_the_hashes_both_sides_know(a, b, expected):
    assert same(a, b) is expected


def test_runs_means_running_and_the_same_version():
    assert runs(box(), WANT) is True
    assert runs(box(tag="other-name"), WANT) is True
    assert runs(box(state="exited"), WANT) is False
    assert runs(box(digest="sha256:old"), WANT) is False
    assert runs(None, WANT) is False


@pytest.mark.parametrize("wanted,running,recorded,expected", [
    (WANT, None, None, START),
    (WANT, None, RECORDED, START),
    (WANT, box(state="exited"), RECORDED, START),
    (WANT, box(digest="sha256:old"), RECORDED, REPLACE),
    (WANT, box(profile="P0"), RECORDED, REPLACE),
    (WANT, box(config="c0"), RECORDED, REPLACE),
    (WANT, box(), None, REGATE),
    (WANT, box(), {**RECORDED, "digest": "sha256:old"}, REGATE),
    (WANT, box(), {**RECORDED, "config_hash": "c0"}, REGATE),
    (WANT, box(), {"tag": "T2"}, REGATE),                      # a record without a digest
    (WANT, box(), RECORDED, KEEP),
    (WANT, box(), {"tag": "T2", "digest": "sha256:new"}, KEEP),
    (RECORDED, box(), RECORDED, KEEP),                           # a record as the wanted side
    (None, None, None, KEEP),
    (None, box(), None, REMOVE),
    (None, box(state="exited"), None, REMOVE),
    ({"tag": "T1"}, box(), None, REMOVE),                        # a record with no digest
])
def test_decide_gives_one_answer_per_case(wanted, running, recorded, expected):
    assert decide(wanted, running, recorded) == expected


# -- the health gate: rollout/gate.py ---------------------------------------------------------------
HEALTH = HealthSpec(path="/health", expect={"status": "ok"}, start_period=5, interval=0.5,
                    timeout=1, retries=3)
OK = '{"status": "ok"}'
BAD = '{"status": "degraded"}'


def feed(probes, min_healthy=2.0, health=HEALTH):
    judge = GateJudge(health, min_healthy)
    for probe in probes:
        verdict = judge.feed(probe)
        if verdict is not None:
            return verdict, probe.t
    return None, None


def test_the_deadline_covers_start_period_retries_min_healthy_and_five_seconds():
    # 5 + (3 + 1) * (0.5 + 1) + 2 + 5
    assert GateJudge(HEALTH, 2.0).deadline == 18.0


def test_a_flapping_service_fails_at_the_deadline_not_before():
    """Good and bad answers in turn: never three failures in a row, never min_healthy."""
    probes = [Probe(t / 2, "running", 0, 200 if t % 2 else 503, OK) for t in range(100)]
    verdict, at = feed(probes)
    assert (verdict.passed, verdict.reason, at) == (False, "no healthy answer within 18 s", 18.0)
    assert verdict.answer == '503 {"status": "ok"}'


@pytest.mark.parametrize("body", ["OK", "", '["status", "ok"]', '"ok"', BAD, '{"status": "OK"}'])
def test_only_a_json_object_with_the_expected_values_is_healthy(body):
    assert body_matches(body, {"status": "ok"}) is False


def test_a_json_object_with_every_expected_value_and_more_is_healthy():
    assert body_matches('{"status": "ok", "uptime": 3}', {"status": "ok"}) is True
    assert body_matches('{"status": "ok"}', {"status": "ok", "db": "up"}) is False


@pytest.mark.parametrize("code,passes", [(200, True), (204, True), (299, True), (300, False),
                                         (404, False), (503, False), (0, False)])
def test_only_a_2xx_answer_with_the_expected_body_is_a_good_one(code, passes):
    probes = [Probe(10 + t / 2, "running", 0, code, OK) for t in range(40)]
    verdict, at = feed(probes)
    assert verdict.passed is passes
    assert at == (12.0 if passes else 11.0)     # min_healthy 2 s, or 3 failures from t = 10


@pytest.mark.parametrize("code,counts", [(200, True), (299, True), (300, False), (404, False),
                                         (503, False), (0, False)])
def test_in_the_start_period_only_a_2xx_that_says_not_ok_counts_as_a_failure(code, counts):
    probes = [Probe(t / 2, "running", 0, code, BAD) for t in range(40)]
    verdict, at = feed(probes)
    assert not verdict.passed
    assert (verdict.reason, at) == (("unhealthy 3 times in a row", 1.0) if counts else
                                    ("unhealthy 3 times in a row", 6.0))


def test_a_good_answer_resets_the_count_of_failures_in_a_row():
    def at(t, code):
        return Probe(t, "running", 0, code, OK if code else "")
    good = [at(0.0, 200), at(0.5, 200)]
    two_bad = [at(1.0, 0), at(1.5, 0)]
    # two failures, a good answer, two failures, ...: never three in a row, still judging
    flapping = [at(2 + t / 2, 0 if t % 3 else 200) for t in range(12)]
    verdict, _ = feed(good + two_bad + flapping, min_healthy=30.0)
    assert verdict is None
    verdict, at = feed(good + two_bad + [Probe(2.0, "running", 0, 0, "")])
    assert (verdict.passed, verdict.reason, at) == (False, "unhealthy 3 times in a row", 2.0)


@pytest.mark.parametrize("state,exit_code,restarts,reason", [
    ("exited", 3, 0, "container exited (exit code 3)"),
    ("exited", 3, 2, "container exited (exit code 3)"),
    ("dead", 137, 0, "container exited (exit code 137)"),
    ("missing", 0, 0, "container exited (exit code 0)"),
    ("restarting", 1, 0, "container exited (exit code 1)"),
    ("removing", 0, 0, "container exited (exit code 0)"),
    ("running", 0, 2, "container exited at start (docker restarted it 2 times)"),
    ("restarting", 1, 4, "container exited at start (docker restarted it 4 times)"),
])
def test_a_container_that_is_not_running_fails_at_once_saying_why(state, exit_code, restarts,
                                                                  reason):
    verdict, at = feed([Probe(0.5, state, exit_code, 0, "", restarts)])
    assert (verdict.passed, verdict.reason, verdict.answer, at) == (False, reason, "no answer", 0.5)


def body64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def test_a_probe_line_gives_time_state_exit_code_http_code_body_and_restarts():
    line = f"probe 1700000010.5 exited:3:2 503 {body64(BAD)}"
    assert parse_probe(line, 1700000000.0) == Probe(10.5, "exited", 3, 503, BAD, 2)


def test_a_probe_line_without_a_body_is_an_empty_answer():
    # parse_probes strips the line: curl's empty output leaves four fields
    assert parse_probe("probe 5.0 running:0:0 000", 0.0) == Probe(5.0, "running", 0, 0, "", 0)
    assert parse_probe("probe 5.0 running:0:0 204 ", 0.0) == Probe(5.0, "running", 0, 204, "", 0)


def test_a_probe_line_with_missing_fields_reads_them_as_zero_and_missing():
    assert parse_probe("probe 5.0 exited:: 000", 0.0) == Probe(5.0, "exited", 0, 0, "", 0)
    assert parse_probe("probe 5.0 :: 000", 0.0) == Probe(5.0, "missing", 0, 0, "", 0)
    assert parse_probe("probe 5.0 running 000", 0.0) == Probe(5.0, "running", 0, 0, "", 0)
    assert parse_probe("probe 5.0 running:0:0 -", 0.0).code == 0       # curl printed no code


@pytest.mark.parametrize("line", ["probe 5.0 running:0:0", "probe", "", "garbage 5.0 running 200",
                                  "probe soon running:0:0 200"])
def test_a_line_that_is_not_a_probe_is_none(line):
    assert parse_probe(line, 0.0) is None


def test_an_exited_probe_with_empty_counts_fails_as_exited_not_as_restarted():
    verdict, _ = feed([parse_probe("probe 1.0 exited:: 000", 0.0)])
    assert verdict.reason == "container exited (exit code 0)"


# -- who may take a lock: rollout/locks.py ----------------------------------------------------------
NOW = 1_800_000_000


@pytest.mark.parametrize("stamp,shown", [
    (1, "1970-01-01 00:00:01 UTC"), (1_700_000_000, "2023-11-14 22:13:20 UTC"),
    (0, "?"), (-5, "?"), (True, "?"), ("yesterday", "?"), (None, "?")])
def test_a_lock_says_since_when_or_a_question_mark(stamp, shown):
    lock = {"operator": "bo", "since": stamp, "heartbeat": NOW, "pid": 7, "machine": "far"}
    assert describe_lock(lock, 3600, NOW, machine="here").startswith(f"locked by bo since {shown} (")


@pytest.mark.parametrize("lock,kind", [
    ({"id": "a", "heartbeat": NOW - 10, "machine": "here", "pid": 4}, "dead"),
    ({"id": "a", "heartbeat": NOW - 10, "machine": "far", "pid": 4}, "live"),     # not our pids
    ({"id": "a", "heartbeat": NOW - 10, "machine": "here", "pid": "4"}, "live"),  # not a pid
    ({"id": "a", "heartbeat": NOW - 10, "machine": "here", "pid": True}, "live"),
    ({"id": "a", "heartbeat": NOW - 10, "machine": "here"}, "live"),
    ({"id": "a", "since": NOW - 10}, "live"),                      # no heartbeat: since counts
    ({"id": "a", "since": NOW - 7200}, "stale"),
    ({"id": "a", "heartbeat": NOW - 3600}, "live"),                # exactly stale_after: not yet
    ({"id": "a", "heartbeat": NOW - 3601}, "stale"),
    ({"id": "a", "heartbeat": True}, "stale"),                     # not a time
    ({"id": "a", "heartbeat": None, "since": NOW}, "stale"),
    ({"id": "a"}, "stale"),
    ({"id": "a", "paused": True, "heartbeat": 1, "machine": "here", "pid": 4}, "paused"),
    ({"malformed": "empty", "paused": True}, "malformed"),
])
def test_liveness_of_a_lock(lock, kind):
    assert liveness(lock, 3600, NOW, machine="here", alive=lambda pid: False) == kind


def test_a_dead_holder_is_judged_on_this_machine_by_default():
    import socket

    lock = {"id": "a", "heartbeat": NOW, "machine": socket.gethostname(), "pid": 4}
    assert liveness(lock, 3600, NOW, alive=lambda pid: False) == "dead"
    assert liveness(lock, 3600, NOW, alive=lambda pid: True) == "live"


def test_a_stale_lock_without_a_heartbeat_says_so():
    lock = {"operator": "bo", "since": "then", "pid": 7, "machine": "far", "tag": "T1"}
    assert describe_lock(lock, 3600, NOW) == (
        "locked by bo since ? (rollout T1, pid 7 on far); stale (no heartbeat recorded): "
        "--break-lock removes it")


@pytest.mark.parametrize("beat, why", [
    (float("nan"), "its heartbeat is not a time"), (float("inf"), "its heartbeat is not a time"),
    (True, "its heartbeat is not a time"),                   # JSON true is no time (1 s after 1970)
    (NOW + 7200, "its heartbeat is 2.0 h in the future: a clock ahead?")])
def test_a_heartbeat_that_is_no_time_or_far_ahead_is_stale_not_alive_forever(beat, why):
    lock = {"operator": "bob", "heartbeat": beat, "machine": "elsewhere", "pid": 9, "tag": "zz"}
    assert liveness(lock, 3600, NOW) == "stale"
    assert describe_lock(lock, 3600, NOW) == (
        f"locked by bob since ? (rollout zz, pid 9 on elsewhere); stale ({why}): --break-lock "
        "removes it")
    assert may_take(lock, 3600, NOW, break_lock=True) is None
    assert liveness({**lock, "heartbeat": NOW + 30}, 3600, NOW) == "live"   # a little skew


def test_a_lock_of_a_verb_without_a_tag_names_the_verb_alone():
    lock = {"operator": "bo", "heartbeat": NOW, "machine": "far", "pid": 7, "action": "stop"}
    assert describe_lock(lock, 3600, NOW).startswith("locked by bo since ? (stop, pid 7 on far); ")


def test_without_break_lock_even_a_stale_or_dead_lock_is_refused():
    stale = {"operator": "bo", "heartbeat": NOW - 7200, "machine": "far", "pid": 7}
    assert may_take(stale, 3600, NOW) == describe_lock(stale, 3600, NOW)
    assert may_take(stale, 3600, NOW, break_lock=True) is None


def test_break_lock_on_a_live_holder_says_it_refuses_and_how_to_force():
    live = {"operator": "bo", "since": 1_700_000_000, "heartbeat": NOW - 30, "pid": 7,
            "machine": "far", "tag": "T2"}
    assert may_take(live, 3600, NOW, break_lock=True, machine="here") == (
        "locked by bo since 2023-11-14 22:13:20 UTC (rollout T2, pid 7 on far); its heartbeat is "
        "fresh, so --break-lock refuses: wait for it, or --break-lock --force if you know it is "
        "dead")
    assert may_take(live, 3600, NOW, break_lock=True, force=True) is None


def test_break_lock_on_a_paused_rollout_says_force_drops_it():
    paused = {"id": "r1", "operator": "ops", "tag": "T2", "paused": True, "paused_since": 1}
    assert may_take(paused, 3600, NOW, break_lock=True) == (
        "paused rollout T2 by ops since 1970-01-01 00:00:01 UTC, after its canary: `rig promote` "
        "continues it, `rig abort` rolls the canary back; --break-lock --force drops it (the "
        "canary keeps what it runs)")
    assert may_take(paused, 3600, NOW) == describe_lock(paused, 3600, NOW)


def test_adopting_names_the_lock_that_is_there_or_says_it_is_gone():
    other = {"id": "r2", "operator": "bo", "heartbeat": NOW, "pid": 7, "machine": "far"}
    assert may_take(other, 3600, NOW, adopt="r1") == (   # no --break-lock advice: no such flag
        "locked by another rollout: locked by bo since ? (rollout, pid 7 on far) (live): `rig "
        "lock status` says more; `rig lock release` removes a lock no one is using")
    assert may_take({"malformed": "empty"}, 3600, NOW, adopt="r1") == (
        "locked by another rollout: malformed lock file /var/lib/rig/rollout.lock (empty) "
        "(malformed): `rig lock status` says more; `rig lock release` removes a lock no one "
        "is using")
    assert may_take(None, 3600, NOW, adopt="r1") == "not locked: the paused rollout's lock is gone"
    assert may_take(None, 3600, NOW) is None


ABORTING = {"id": "a9", "aborting": "r1", "operator": "ops", "action": "abort", "tag": "T2",
            "since": 1_700_000_000, "pid": 4, "machine": "here"}


PROMOTING = {**ABORTING, "id": "p9", "promoting": "r1", "action": "rollout"}
del PROMOTING["aborting"]


@pytest.mark.parametrize("lock,adopt,resume,taken", [
    ({"id": "r1", "paused": True}, "r1", None, True),
    ({"id": "r1", "paused": True}, "r1", "abort", True),
    ({"id": "r1", "paused": True}, "r2", "abort", False),          # another paused rollout
    ({"id": "r1"}, "r1", "abort", False),                          # not paused: a live rollout
    ({**ABORTING, "heartbeat": NOW - 10}, "r1", "abort", True),    # its holder is dead
    ({**ABORTING, "heartbeat": NOW - 10}, "r1", None, False),      # promote never takes it
    ({**ABORTING, "heartbeat": NOW - 10}, "r1", "promote", False),  # nor one finishing its own
    ({**ABORTING, "heartbeat": NOW - 10}, "r2", "abort", False),   # an abort of another one
    ({**ABORTING, "heartbeat": NOW - 10, "machine": "far"}, "r1", "abort", False),  # live there
    ({**ABORTING, "heartbeat": NOW - 3601, "machine": "far"}, "r1", "abort", True),  # stale
    ({**ABORTING, "id": "r1", "heartbeat": NOW - 10, "machine": "far"}, "r1", "abort", False),
    (None, "r1", "abort", True),                    # the first abort released it already
    (None, "r1", None, False),
    # a promote killed as it took the paused locks over (or later): the same rules, its verb
    ({**PROMOTING, "heartbeat": NOW - 10}, "r1", "promote", True),
    ({**PROMOTING, "heartbeat": NOW - 3601, "machine": "far"}, "r1", "promote", True),
    ({**PROMOTING, "heartbeat": NOW - 10, "machine": "far"}, "r1", "promote", False),  # live
    ({**PROMOTING, "heartbeat": NOW - 10}, "r1", "abort", False),  # abort never takes it
    ({**PROMOTING, "heartbeat": NOW - 10}, "r1", None, False),
    ({**PROMOTING, "heartbeat": NOW - 10}, "r2", "promote", False),  # of another one
    (None, "r1", "promote", True),                  # a host it had released
])
def test_an_abort_or_promote_that_did_not_finish_is_taken_over_only_by_its_own_verb(
        lock, adopt, resume, taken):
    why = may_take(lock, 3600, NOW, adopt=adopt, machine="here", alive=lambda pid: False,
                   resume=resume)
    assert (why is None) == taken
    if lock is not None and not taken:
        verb = "a promote" if "promoting" in lock else "an abort"
        key = "promoting" if "promoting" in lock else "aborting"
        gone = lock.get("machine") == "here" or lock.get("heartbeat", NOW) < NOW - 3600
        expected = ("locked by another rollout: " if lock.get(key) != adopt else
                    f"{verb} of this paused rollout did not finish: " if gone else
                    f"{verb} of this paused rollout is at work: ")
        assert why.startswith(expected), why
        if lock.get(key) == adopt:
            assert f"`rig {verb.split()[1]}`" in why


def test_an_abort_that_did_not_finish_says_rig_abort_finishes_it():
    dead = {**ABORTING, "heartbeat": NOW - 10}
    assert describe_lock(dead, 3600, NOW, machine="here", alive=lambda pid: False) == (
        "locked by ops since 2023-11-14 22:13:20 UTC (abort T2, pid 4 on here); an abort of "
        "paused rollout T2 that did not finish (its holder is dead): `rig abort` finishes it "
        "(--break-lock --force drops its record)")
    stale = {**ABORTING, "heartbeat": NOW - 7200, "machine": "far"}
    assert "that did not finish (its holder is stale): `rig abort` finishes it" in \
        describe_lock(stale, 3600, NOW, machine="here")
    running = {**ABORTING, "heartbeat": NOW - 10, "machine": "far"}
    assert "did not finish" not in describe_lock(running, 3600, NOW, machine="here")
    for odd in (None, ["r1"]):      # not an id: not an abort's lock
        assert "did not finish" not in describe_lock({**dead, "aborting": odd}, 3600, NOW,
                                                     machine="here", alive=lambda pid: False)


def test_break_lock_keeps_an_unfinished_aborts_record_unless_forced():
    dead = {**ABORTING, "heartbeat": NOW - 10}
    why = may_take(dead, 3600, NOW, break_lock=True, machine="here", alive=lambda pid: False)
    assert why == describe_lock(dead, 3600, NOW, machine="here", alive=lambda pid: False)
    assert may_take(dead, 3600, NOW, break_lock=True, force=True, machine="here",
                    alive=lambda pid: False) is None
    assert may_take({**dead, "aborting": None}, 3600, NOW, break_lock=True, machine="here",
                    alive=lambda pid: False) is None         # a plain dead holder's lock


# -- HostLocks against the fake fleet -----------------------------------------------------------------
HOSTS = ["mainpc", "pc2", "node3"]


def three(fleet):
    hosts = {"mainpc": fleet.hosts["mainpc"], "pc2": fleet.hosts["pc2"], "node3": fleet.hosts["pc2"]}
    return fleet.model_copy(update={"hosts": hosts})


def lock_bytes(**fields) -> bytes:
    return json.dumps({"operator": "bo", "pid": 7, "machine": "far", "tag": "T1", **fields}).encode()


def answering(session, answer, when):
    """The session's shell, but `answer` for the commands `when(host, command)` picks."""
    real = session.shell

    def shell(name, command, stdin=None, timeout=None, retry=False):
        if when(name, str(command)):
            return answer
        return real(name, command, stdin, timeout)
    session.shell = shell
    return session


@pytest.mark.parametrize("stale_after,every", [(3600, 30.0), (100, 25.0), (60, 15.0), (2, 1.0)])
def test_the_heartbeat_comes_four_times_per_stale_period_at_most_every_30_s(fleet, stale_after,
                                                                              every):
    assert HostLocks(FakeSession(three(fleet), HOSTS), stale_after, "rollout", "T2").beat_every \
        == every


def test_take_without_options_leaves_a_stale_lock_to_break_lock(fleet):
    session = FakeSession(three(fleet), HOSTS)
    session.lock_files["pc2"] = lock_bytes(id="bo-1", heartbeat=time.time() - 7200)
    locks = HostLocks(session, 3600, "rollout", "T2")
    [problem] = locks.take()
    assert problem.startswith("pc2: locked by bo since ") and "; stale (no heartbeat for 2.0 h)" \
        in problem
    assert session.locks == {"pc2"} and session.lock("pc2")["id"] == "bo-1"


MAY_RUN_LATER = (" (the lock may be taken when the host answers again: `rig lock status` shows "
                 "it, `rig lock release --host pc2` removes it)")


@pytest.mark.parametrize("answer,why", [
    (Shell(False, "", ["ssh: connect", "timed out", "after 30 s"]), "timed out after 30 s" + MAY_RUN_LATER),
    (Shell(False, "", []), "no answer" + MAY_RUN_LATER),
    (Shell(False, "FREE\n", ["exit 3"]), "exit 3"),          # it answered: nothing left behind
    (Shell(True, "flock: failure\n", []), "flock: failure"),
    (Shell(True, "x" * 300 + "\n", []), "x" * 200),
    (Shell(True, "", []), "no answer"),
])
def test_a_lock_command_that_fails_is_named_with_what_it_said(fleet, answer, why):
    session = answering(FakeSession(three(fleet), HOSTS), answer,
                        lambda host, command: host == "pc2" and " take " in command)
    locks = HostLocks(session, 3600, "rollout", "T2")
    assert locks.take() == [f"pc2: could not take the lock: {why}"]
    assert session.locks == set() and locks.locked == []     # mainpc's lock given back


def test_an_abort_finishing_another_takes_a_free_host_fresh_and_keeps_it(fleet):
    session = FakeSession(three(fleet), HOSTS)
    session.lock_files["pc2"] = lock_bytes(id="a9", aborting="r1", heartbeat=1)   # stale
    locks = HostLocks(session, 3600, "abort", "T2")
    assert locks.take(adopt="r1", resume="abort") == []
    assert sorted(locks.locked) == sorted(HOSTS) and session.locks == set(HOSTS)
    assert {session.lock(h)["id"] for h in HOSTS} == {locks.holder["id"]}


def test_a_promote_whose_paused_lock_is_gone_on_a_host_is_refused_there_and_takes_nothing(fleet):
    """Only an abort finishing another (resume) may take a free host: promote, by default,
    is refused at pre-flight and again when it takes the locks."""
    from rig.rollout.engine import Rollout, host_problems

    fleet = three(fleet)
    session = FakeSession(fleet, HOSTS)
    for h in ("pc2", "node3"):
        session.lock_files[h] = lock_bytes(id="r1", paused=True)
    facts = session.facts(None)
    assert host_problems(fleet, facts, False, time.time(), adopt="r1") == [
        "mainpc: not locked: the paused rollout's lock is gone"]
    engine = Rollout(session, fleet, lambda line: None, "promote", "T2")
    engine.facts()
    assert engine.take_locks(adopt="r1") == ["mainpc: not locked: the paused rollout's lock is gone"]
    assert session.locks == {"pc2", "node3"} and session.lock("pc2")["id"] == "r1"


def test_adopting_where_the_paused_lock_is_gone_gives_back_the_lock_just_created(fleet):
    session = FakeSession(three(fleet), HOSTS)
    for h in ("pc2", "node3"):
        session.lock_files[h] = lock_bytes(id="r1", paused=True)
    locks = HostLocks(session, 3600, "promote", "T2")
    assert locks.take(adopt="r1") == ["mainpc: not locked: the paused rollout's lock is gone"]
    assert session.locks == {"pc2", "node3"} and session.lock("pc2")["id"] == "r1"


@pytest.mark.parametrize("answer,who", [
    (Shell(False, "", ["a", "lock: busy", "timed out"]), "lock: busy timed out"),
    (Shell(False, "", []), "no answer"),
])
def test_a_take_over_whose_compare_and_swap_does_not_answer_says_so(fleet, answer, who):
    session = FakeSession(three(fleet), HOSTS)
    session.lock_files["pc2"] = lock_bytes(id="bo-1", heartbeat=time.time() - 7200)
    answering(session, answer, lambda host, command: host == "pc2" and " take " in command
              and not command.rstrip().endswith(" -"))
    locks = HostLocks(session, 3600, "rollout", "T2")
    assert locks.take(break_lock=True) == [f"pc2: the lock changed while taking it over: {who}"]
    assert session.locks == {"pc2"} and session.lock("pc2")["id"] == "bo-1"


def test_a_take_over_that_loses_the_race_names_the_new_holder(fleet):
    session = FakeSession(three(fleet), HOSTS)
    session.lock_files["pc2"] = lock_bytes(id="bo-1", heartbeat=time.time() - 7200)
    seen = []

    def race(s, host, command):   # between our read and our swap, bo's process beats again
        if host == "pc2" and " take " in command:
            seen.append(command)
            if len(seen) == 2:
                s.lock_files["pc2"] = lock_bytes(id="bo-1", heartbeat=time.time(), operator="cy")
    session.on_shell = race
    locks = HostLocks(session, 3600, "rollout", "T2")
    [problem] = locks.take(break_lock=True)
    assert problem.startswith("pc2: the lock changed while taking it over: locked by cy since ")
    assert problem.endswith("--break-lock --force if you know it is dead")
    assert session.lock("pc2")["operator"] == "cy" and session.locks == {"pc2"}


def test_a_failed_take_gives_back_a_broken_lock_and_keeps_nothing_of_its_own(fleet):
    """mainpc's dead lock was taken over, pc2 refuses: mainpc gets the old lock back, and this
    HostLocks holds nothing and has lost nothing."""
    session = FakeSession(three(fleet), HOSTS)
    old = lock_bytes(id="bo-1", heartbeat=time.time() - 7200)
    session.lock_files["mainpc"] = old
    session.lock_files["pc2"] = lock_bytes(id="cy-1", heartbeat=time.time())
    locks = HostLocks(session, 3600, "rollout", "T2")
    [problem] = locks.take(break_lock=True)
    assert problem.startswith("pc2: locked by bo since")
    assert session.lock_files["mainpc"] == old and session.locks == {"mainpc", "pc2"}
    assert locks.locked == [] and locks.lost == {} and locks.replaced == {}


def test_a_give_back_that_finds_the_lock_changed_leaves_it_to_its_new_holder(fleet):
    """A third party forced mainpc's lock away while we were refused on pc2: the put-back does
    not happen, our release finds the lock gone, and says who holds it."""
    session = FakeSession(three(fleet), HOSTS)
    session.lock_files["mainpc"] = lock_bytes(id="bo-1", heartbeat=time.time() - 7200)
    session.lock_files["pc2"] = lock_bytes(id="cy-1", heartbeat=time.time())
    forced = lock_bytes(id="dy-1", heartbeat=time.time(), operator="dy")

    def force(s, host, command):
        if host == "pc2" and " take " in command:
            s.lock_files["mainpc"] = forced
    session.on_shell = force
    locks = HostLocks(session, 3600, "rollout", "T2")
    assert len(locks.take(break_lock=True)) == 1
    assert session.lock_files["mainpc"] == forced
    assert list(locks.lost) == ["mainpc"] and locks.lost["mainpc"].startswith("locked by dy since")


def test_a_second_take_does_not_give_back_what_the_first_one_broke(fleet):
    """take() that succeeded, released, then a take() that is refused: the stale lock the first
    one broke is not written back by the second's give-back."""
    session = FakeSession(three(fleet), HOSTS)
    session.lock_files["mainpc"] = lock_bytes(id="bo-1", heartbeat=time.time() - 7200)
    locks = HostLocks(session, 3600, "rollout", "T2")
    assert locks.take(break_lock=True) == []
    assert locks.release() == [] and session.locks == set()
    session.lock_files["pc2"] = lock_bytes(id="cy-1", heartbeat=time.time())
    assert len(locks.take()) == 1
    assert session.locks == {"pc2"}                 # mainpc free again, not bo's old lock


def test_release_stops_the_heartbeat_and_a_new_take_beats_again(fleet, monkeypatch):
    session = FakeSession(three(fleet), HOSTS)
    monkeypatch.setattr(HostLocks, "beat_every", property(lambda self: 0.01))
    locks = HostLocks(session, 3600, "rollout", "T2")
    assert locks.take() == []
    locks.start_beating()
    beater = locks._beater
    gevent.sleep(0.03)
    locks.release()
    assert beater.dead
    assert locks.take() == []
    locks.start_beating()
    before = sum(" refresh " in c for _, c, _ in session.commands)
    gevent.sleep(0.05)
    assert sum(" refresh " in c for _, c, _ in session.commands) > before
    locks.release()


def test_release_reports_hosts_that_did_not_answer_and_forgets_them(fleet):
    session = FakeSession(three(fleet), HOSTS)
    locks = HostLocks(session, 3600, "rollout", "T2")
    assert locks.take() == []
    answering(session, Shell(False, "", ["timed out"]),
              lambda host, command: host == "node3" and " release " in command)
    assert locks.release() == ["node3"]
    assert locks.locked == [] and locks.lost == {} and session.locks == {"node3"}


def test_a_release_that_finds_no_lock_is_released_not_lost(fleet):
    """What a release run again after a dropped connection sees: its first run removed it."""
    session = FakeSession(three(fleet), HOSTS)
    locks = HostLocks(session, 3600, "rollout", "T2")
    assert locks.take() == []
    session.lock_files["pc2"] = None
    assert locks.release() == [] and locks.lost == {} and session.locks == set()


def test_a_heartbeat_that_finds_no_lock_says_no_lock_at_all(fleet):
    session = FakeSession(three(fleet), HOSTS)
    locks = HostLocks(session, 3600, "rollout", "T2")
    assert locks.take() == []
    session.lock_files["pc2"] = None
    assert locks.heartbeat() == ["pc2"]
    assert locks.lost == {"pc2": "no lock at all"} and locks.locked == ["mainpc", "node3"]
    assert locks.release() == [] and session.locks == set()


def test_pause_keeps_the_locks_with_the_record_and_stops_beating(fleet, monkeypatch):
    session = FakeSession(three(fleet), HOSTS)
    monkeypatch.setattr(HostLocks, "beat_every", property(lambda self: 0.01))
    locks = HostLocks(session, 3600, "rollout", "T2")
    assert locks.take() == []
    locks.start_beating()
    beater = locks._beater
    locks.pause({"paused": True, "record": {"mainpc": {}}})
    assert beater.dead and locks.locked == []
    assert all(session.lock(h)["paused"] and session.lock(h)["record"] == {"mainpc": {}}
               for h in HOSTS)
    assert locks.release() == [] and session.locks == set(HOSTS)


def test_only_a_put_back_that_completed_takes_the_host_off_the_release_list(fleet):
    """The put-back printed TAKEN but its command failed (the connection dropped before its exit
    status): rig does not count on it and still releases there; the release finds the lock it
    gave back, not its own, and leaves it, naming its holder."""
    session = FakeSession(three(fleet), HOSTS)
    session.lock_files["mainpc"] = lock_bytes(id="bo-1", heartbeat=time.time() - 7200)
    session.lock_files["pc2"] = lock_bytes(id="cy-1", heartbeat=time.time())
    real = session.shell

    def shell(name, command, stdin=None, timeout=None, retry=False):
        answer = real(name, command, stdin, timeout)
        if name == "mainpc" and " take " in command and len(
                [c for h, c, _ in session.commands if h == "mainpc" and " take " in c]) == 3:
            return Shell(False, answer.stdout, ["Socket is closed"])      # the put-back
        return answer
    session.shell = shell
    locks = HostLocks(session, 3600, "rollout", "T2")
    assert len(locks.take(break_lock=True)) == 1
    assert json.loads(session.lock_files["mainpc"])["id"] == "bo-1"           # it was put back
    assert list(locks.lost) == ["mainpc"] and locks.lost["mainpc"].startswith("locked by bo since")


# -- recorded gate timings (state.json lives on the host: only sane numbers count) -----------------
@pytest.mark.parametrize("record,expected", [
    ({"health": {"start_period": 120, "interval": 1, "timeout": 2, "retries": 3}},
     {"start_period": 120, "interval": 1, "timeout": 2, "retries": 3}),
    ({"health": {"start_period": 0, "interval": 0.5, "timeout": 1.5, "retries": 1.0}},
     {"start_period": 0, "interval": 0.5, "timeout": 1.5, "retries": 1}),
    ({"health": {"start_period": 5, "interval": 0.2, "timeout": 0.5, "retries": 2}},
     {"start_period": 5, "interval": 0.2, "timeout": 0.5, "retries": 2}),
    ({"health": {"start_period": 86401, "interval": 1, "timeout": 2, "retries": 3}}, None),
    ({"health": {"start_period": -1, "interval": 1, "timeout": 2, "retries": 3}}, None),
    ({"health": {"start_period": 10, "interval": 0, "timeout": 2, "retries": 3}}, None),
    ({"health": {"start_period": 10, "interval": 1, "timeout": 0, "retries": 3}}, None),
    ({"health": {"start_period": 10, "interval": 1, "timeout": 2, "retries": 0}}, None),
    ({"health": {"start_period": 10, "interval": 1, "timeout": 2, "retries": 1001}}, None),
    ({"health": {"start_period": True, "interval": 1, "timeout": 2, "retries": 3}}, None),
    ({"health": {"start_period": "120", "interval": 1, "timeout": 2, "retries": 3}}, None),
    ({"health": {"interval": 1, "timeout": 2, "retries": 3}}, None),
    ({"health": "120s"}, None), ({}, None), (None, None),
])
def test_recorded_gate_timings_count_only_when_sane(record, expected):
    from rig.ledger import recorded_health

    assert recorded_health(record) == expected
    if expected:
        assert type(recorded_health(record)["retries"]) is int     # 1.0 -> 1 (a count)


def test_gate_timings_go_from_a_ledger_entry_into_state_json_and_nowhere_else():
    from rig.commands.container import Release
    from rig.ledger import entry, next_state

    timings = {"start_period": 120.0, "interval": 1.0, "timeout": 2.0, "retries": 3}
    release = Release("svc", "T2", "reg/svc", "sha256:2", "ph")
    ok = entry("t", "op", "rollout", "h", release, {"tag": "T1", "digest": "sha256:1"}, "ok",
               health=timings)
    assert ok["health"] == timings
    assert "health" not in entry("t", "op", "rollout", "h", release, None, "ok")
    assert next_state({}, [ok])["svc"]["health"] == timings
    failed = dict(ok, result="failed", health={"start_period": 1.0})
    assert next_state({"svc": {"tag": "T1", "digest": "sha256:1", "health": timings}},
                      [failed])["svc"]["health"] == timings
    plain = entry("t", "op", "rollout", "h", release, None, "ok")
    assert "health" not in next_state({"svc": {"tag": "T1", "health": timings}}, [plain])["svc"]
