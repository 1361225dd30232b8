"""rig plan, rollout, rollback and status through the ops layer against the fake fleet
(tests/unit/fakes.py): the command-line options, what plan touches (nothing), hooks and the
services suite around a rollout, stopped services, rollback's targets, status rows; and the
refusals of promote and abort."""

from __future__ import annotations

import json
import time

import pytest

from rig.commands import container as cmd
from rig.errors import RigError
from rig.ops import pause
from rig.ops import rollout as ops
from rig.rollout.engine import release_of
from tasks.rollout import Container

from .fakes import FakeJob, StatusSession

SERVICE = "affective_processing_center"
HOSTS = ["mainpc", "pc2"]


class Registry:
    def __init__(self):
        self.digests: dict[str, str | None] = {}

    def manifest_digest(self, path, tag):
        return self.digests.get(tag, "sha256:" + "2" * 64)


@pytest.fixture
def lab(fleet, monkeypatch):
    session = StatusSession(fleet, HOSTS)
    for h in HOSTS:
        ph = fleet.profile_of(h).content_hash()
        session.facts_by_host[h].containers = {cmd.current(SERVICE): Container(
            cmd.current(SERVICE), "running", SERVICE, "T1", "sha256:" + "1" * 64, ph)}
        session.facts_by_host[h].state = {SERVICE: {
            "tag": "T1", "digest": "sha256:" + "1" * 64, "since": "2026-11-20T00:00:00Z",
            "previous": {"tag": "T0", "digest": "sha256:" + "0" * 64}}}
    registry = Registry()
    job = FakeJob(fleet, session)
    hooks: list = []
    job.hook = lambda name, say, **kw: hooks.append((name, kw))
    monkeypatch.setattr(ops, "_registry", lambda job: registry)
    monkeypatch.setattr(pause, "_registry", lambda job: registry)
    verified: list = []
    monkeypatch.setattr("rig.ops.hosts.verify",
                        lambda job, suite, args, hosts: verified.append((suite, args, hosts)) or 0)
    return job, session, registry, hooks, verified


# -- options --------------------------------------------------------------------------------------
def test_options_from_the_command_line():
    opts = ops.options_from("a, b", "mainpc,", "pc2", "50%", True, True, True, "30s", True)
    assert (opts.services, opts.limit, opts.canary, opts.batch) == (["a", "b"], ["mainpc"],
                                                                    ["pc2"], "50%")
    assert (opts.break_lock, opts.force, opts.verify, opts.start_stopped, opts.pause) == \
        (True, True, False, True, 30.0)
    assert ops.options_from(pause="0").pause == "none"   # --pause 0 turns the spec's pause off
    assert ops.options_from(pause="manual").pause == "manual"
    assert ops.options_from().services is None and ops.options_from().verify is True


def test_bad_options_are_refused():
    with pytest.raises(RigError, match="^--pause soon: "):
        ops.options_from(pause="soon")
    with pytest.raises(RigError, match=r"^--force goes with --break-lock \(it breaks even a live "
                                       r"holder's lock\)$"):
        ops.options_from(force=True)


# -- plan -----------------------------------------------------------------------------------------
def test_plan_says_what_would_change_and_touches_nothing(lab):
    job, session, *_ = lab
    plan = ops.plan(job, "T2", ops.Options(services=[SERVICE]), print)
    assert plan.label == "T2" and plan.waves == [["mainpc"], ["pc2"]] and plan.changes == 2
    row = plan.rows[0]
    assert (row.host, row.service, row.running_tag, row.tag, row.digest) == \
        ("mainpc", SERVICE, "T1", "T2", "sha256:" + "2" * 64)
    assert row.gate == []    # its one check is not a gate: the gate waits for /health only
    assert session.runs == [] and session.locks == set() and session.commands == []


def test_plan_of_a_tag_not_in_the_registry_says_pre_flight_would_fail(lab, fleet):
    job, session, registry, *_ = lab
    registry.digests["T9"] = None
    with pytest.raises(RigError) as caught:
        ops.plan(job, "T9", ops.Options(services=[SERVICE]), print)
    ref = fleet.registry.repository(SERVICE)
    assert caught.value.lines == [f"{ref}:T9: not in the registry", "pre-flight would fail"]


# -- rollout: hooks, warnings, on_plan, the services suite -----------------------------------------
def test_rollout_runs_hooks_around_it_and_the_services_suite_after_a_change(lab):
    job, session, _, hooks, verified = lab
    session.facts_by_host["pc2"].warnings = ["state.json was unreadable"]
    said, plans = [], []
    report = ops.rollout(job, "T2", ops.Options(services=[SERVICE]), said.append, plans.append)
    assert report.ok and report.verify_rc == 0
    assert verified == [("services", ("--no-header",), HOSTS)]
    hook = {"tag": "T2", "hosts": HOSTS, "services": [SERVICE]}
    assert hooks == [("pre-rollout", hook), ("post-rollout", {"result": "ok", **hook})]
    assert "pc2: warning: state.json was unreadable" in said
    assert "verify (testinfra, services):" in said
    assert [p.changes for p in plans] == [2]
    assert list(report.phases) == ["connect_and_preflight", "locks", "waves", "health_gates"]


def test_nothing_changed_runs_no_suite(lab):
    job, session, registry, hooks, verified = lab
    registry.digests["T1"] = "sha256:" + "1" * 64
    report = ops.rollout(job, "T1", ops.Options(services=[SERVICE]), print)
    assert report.ok and report.plan.changes == 0 and verified == [] and report.verify_rc is None
    assert [r[0] for r in session.runs] == []


def test_a_held_lock_stops_the_rollout_and_the_post_hook_says_failed(fleet, lab):
    job, session, _, hooks, verified = lab
    now = time.time()
    session.lock_files["pc2"] = json.dumps({"operator": "bo@x", "since": now, "heartbeat": now,
                                            "pid": 7, "machine": "elsewhere"}).encode()
    with pytest.raises(RigError) as caught:
        ops.rollout(job, "T2", ops.Options(services=[SERVICE]), print)
    assert caught.value.lines[-1] == "pre-flight failed: no host was changed"
    assert caught.value.lines[0].startswith("pc2: ")
    assert hooks[-1] == ("post-rollout", {"result": "failed", "tag": "T2", "hosts": HOSTS,
                                          "services": [SERVICE]})
    assert session.runs == [] and session.locks == {"pc2"}


def test_a_lock_taken_between_the_read_and_the_take_stops_before_any_change(lab):
    job, session, *_ = lab
    now = time.time()
    raw = json.dumps({"operator": "zoe@y", "since": now, "heartbeat": now, "pid": 9,
                      "machine": "m2"}).encode()
    original = session.facts

    def facts(fact_cls):     # the read sees free hosts; the lock script then finds pc2 held
        read = original(fact_cls)
        session.lock_files["pc2"] = raw
        return read
    session.facts = facts
    with pytest.raises(RigError) as caught:
        ops.rollout(job, "T2", ops.Options(services=[SERVICE]), print)
    assert caught.value.lines[-1] == "pre-flight failed: no host was changed"
    assert session.runs == [] and session.lock_files["pc2"] == raw
    assert session.locks == {"pc2"}   # the rollout released the lock it took on mainpc only


def test_a_service_an_operator_stopped_stays_stopped_unless_asked(lab):
    job, session, *_ = lab
    session.facts_by_host["pc2"].containers = {}
    session.facts_by_host["pc2"].state[SERVICE]["stopped"] = True
    session.facts_by_host["pc2"].state[SERVICE]["stopped_since"] = "2026-11-21T00:00:00Z"
    plan = ops.plan(job, "T2", ops.Options(services=[SERVICE]), print)
    assert plan.skipped == [f"pc2 {SERVICE}: stopped by an operator since 2026-11-21T00:00:00Z; "
                            "left stopped (--start-stopped starts it)"]
    assert [r.host for r in plan.rows] == ["mainpc"]
    started = ops.plan(job, "T2", ops.Options(services=[SERVICE], start_stopped=True), print)
    assert started.skipped == [] and [r.host for r in started.rows] == HOSTS


# -- rollback -------------------------------------------------------------------------------------
def test_rollback_goes_to_each_hosts_previous_version(lab):
    job, session, _, hooks, verified = lab
    plans = []
    report = ops.rollback(job, None, ops.Options(services=[SERVICE], verify=False), print,
                          plans.append)
    assert report.ok and report.action == "rollback" and report.label == "previous"
    assert [(r.host, r.tag, r.digest) for r in plans[0].rows] == [
        (h, "T0", "sha256:" + "0" * 64) for h in HOSTS]
    assert session.running("pc2", SERVICE).tag == "T0"
    assert hooks == [("rollback", {"result": "ok", "tag": "previous", "hosts": HOSTS,
                                   "services": [SERVICE]})]


def test_rollback_after_an_interrupted_rollout_goes_to_the_last_healthy_version(lab, fleet):
    job, session, *_ = lab
    ph = fleet.profile_of("pc2").content_hash()
    session.facts_by_host["pc2"].containers[cmd.current(SERVICE)] = Container(
        cmd.current(SERVICE), "running", SERVICE, "T2", "sha256:" + "2" * 64, ph)
    session.facts_by_host["mainpc"].state[SERVICE]["previous"] = None
    said, plans = [], []
    report = ops.rollback(job, None, ops.Options(services=[SERVICE], verify=False), said.append,
                          plans.append)
    assert f"pc2 {SERVICE}: runs T2 (222222222222), which state.json never recorded as healthy " \
           "(an interrupted rollout); going back to the last healthy version, T1" in said
    assert [(r.host, r.tag) for r in plans[0].rows] == [("pc2", "T1")]
    assert plans[0].skipped == [f"mainpc {SERVICE}: no previous version recorded; left as is"]
    assert report.ok and session.running("pc2", SERVICE).tag == "T1"


def test_rollback_with_nothing_recorded_says_use_to(lab):
    job, session, _, hooks, _ = lab
    for h in HOSTS:
        session.facts_by_host[h].state[SERVICE]["previous"] = None
    with pytest.raises(RigError, match=r"^nothing to roll back: no service has a previous version "
                                       r"recorded \(use --to TAG\)$"):
        ops.rollback(job, None, ops.Options(services=[SERVICE]), print)
    assert session.runs == [] and session.locks == set()
    assert hooks[-1][1]["result"] == "failed"


def test_rollback_to_a_tag_resolves_it_in_the_registry(lab):
    job, session, registry, hooks, _ = lab
    registry.digests["T0"] = "sha256:" + "0" * 64
    report = ops.rollback(job, "T0", ops.Options(services=[SERVICE], limit=["pc2"],
                                                 verify=False), print)
    assert report.ok and report.label == "T0" and report.plan.skipped == []
    assert session.running("pc2", SERVICE).tag == "T0"
    assert session.running("mainpc", SERVICE).tag == "T1"
    assert hooks[0][1]["tag"] == "T0"


def test_previous_target_skips_a_host_that_did_not_answer():
    target = ops.previous_target({"mainpc": None})
    assert target("mainpc", SERVICE) is None and target("pc2", SERVICE) is None


# -- status ---------------------------------------------------------------------------------------
def test_health_words():
    expect = {"status": "ok"}
    assert ops.health_word('{"status": "ok"}', expect, True) == "ok"
    assert ops.health_word("", expect, True) == "down"
    assert ops.health_word(" " + "x" * 60, expect, True) == "BAD " + "x" * 40
    assert ops.health_word("", expect, False) == "not running"
    assert ops.health_word("", expect, False, stopped=True) == "stopped"


def test_status_rows_per_host_and_service_with_lock_and_orphans(lab, fleet):
    job, session, *_ = lab
    session.bodies = {("mainpc", SERVICE): '{"status": "ok"}', ("pc2", SERVICE): '{"status": "degraded"}'}
    session.facts_by_host["pc2"].containers["rig-old_service"] = Container(
        "rig-old_service", "exited", "old_service", "T0", "sha256:9", "ph")
    session.facts_by_host["pc2"].state["real_time_audio_pipeline"] = {
        "tag": "T1", "digest": "sha256:3", "stopped": True}
    session.lock_files["mainpc"] = json.dumps({"operator": "bo@x", "paused": True, "tag": "T2",
                                               "paused_since": time.time()}).encode()
    rows = ops.status(job, None, print)
    by = {(r.host, r.service): r for r in rows}
    assert [(r.host, r.service) for r in rows] == [
        *((h, s) for h in ["mainpc"] for s in fleet.services_on(h)),
        *((h, s) for h in ["pc2"] for s in fleet.services_on(h)), ("pc2", "old_service")]
    main = by[("mainpc", SERVICE)]
    assert (main.tag, main.digest, main.health, main.since) == \
        ("T1", "sha256:" + "1" * 64, "ok", "2026-11-20T00:00:00Z")
    assert main.note.startswith("paused rollout T2 by bo@x since ")
    assert by[("pc2", SERVICE)].health == 'BAD {"status": "degraded"}'
    assert by[("pc2", SERVICE)].note is None
    assert by[("pc2", "real_time_audio_pipeline")].health == "stopped"
    assert by[("pc2", "model_ops_coordinator")].health == "not running"
    orphan = by[("pc2", "old_service")]
    assert (orphan.tag, orphan.health, orphan.note) == \
        ("T0", "orphan", "rig-old_service (exited): `rig prune` removes it")


# -- promote and abort: what they refuse ----------------------------------------------------------
def paused_lock(**extra) -> bytes:
    lock = {"operator": "bo@x", "paused": True, "tag": "T2", "id": "bo@x-1", "pid": 7,
            "paused_since": time.time(), **extra}
    return json.dumps(lock).encode()


def test_promote_with_no_paused_rollout_says_so(lab):
    job, *_ = lab
    with pytest.raises(RigError, match=r"^no paused rollout: nothing to promote or abort"):
        pause.promote(job, print)


def test_two_paused_rollouts_are_named(lab):
    job, session, *_ = lab
    session.lock_files["mainpc"] = paused_lock()
    session.lock_files["pc2"] = paused_lock(id="zoe@y-2", tag="T3")
    with pytest.raises(RigError, match=r"^2 paused rollouts hold locks: T2 \(bo@x-1\), "
                                       r"T3 \(zoe@y-2\)$"):
        pause.abort(job, print)


def test_a_paused_rollout_without_a_record_needs_a_forced_release(lab):
    job, session, *_ = lab
    session.lock_files["mainpc"] = paused_lock()
    with pytest.raises(RigError, match=r"^the paused rollout T2 has no record of what its canary "
                                       r"did \(paused by an older rig, or the lock file was "
                                       r"edited\)"):
        pause.promote(job, print)


def doc(release: cmd.Release) -> dict:
    return {"service": release.service, "tag": release.tag, "repository": release.repository,
            "digest": release.digest, "profile_hash": release.profile_hash,
            "config": release.config}


def test_differences_name_every_way_what_would_run_moved_from_the_record(fleet):
    ph = fleet.profile_of("pc2").content_hash()
    was = cmd.Release(SERVICE, "T2", "reg/a", "sha256:" + "a" * 64, ph, '{"memory": "1g"}')
    other = cmd.Release("real_time_audio_pipeline", "T2", "reg/b", "sha256:" + "b" * 64, ph)
    record = {"mainpc": {SERVICE: {"to": doc(was)}},
              "pc2": {SERVICE: {"to": doc(was)}, "real_time_audio_pipeline": {"to": doc(other)}}}
    moved = cmd.Release(SERVICE, "T2", "reg/a", "sha256:" + "c" * 64, ph, '{"memory": "2g"}')
    added = cmd.Release("model_ops_coordinator", "T2", "reg/m", "sha256:" + "d" * 64, ph)
    fresh = {"mainpc": [moved, added], "pc2": [was, added]}
    facts = {"mainpc": None}
    lines = pause.differences(record, fresh, facts, ["mainpc"])
    assert lines == [
        "mainpc affective_processing_center: T2 now points to cccccccccccc; the canary ran "
        "aaaaaaaaaaaa (the tag was pushed again)",
        "mainpc affective_processing_center: changed since the pause: memory 1g -> 2g",
        "mainpc affective_processing_center: the canary no longer runs what it ran "
        "(nothing now)",
        "mainpc model_ops_coordinator: would change now, but the canary did not change it",
        "pc2 model_ops_coordinator: not in the paused rollout (added since)",
        "pc2 real_time_audio_pipeline: in the paused rollout but no longer selected (dropped "
        "from the spec or not in the registry)"]
    assert release_of(doc(was)) == was


@pytest.mark.parametrize(("tag", "digit", "skipped"), [
    ("T7", "7", f"mainpc {SERVICE}: runs T7, neither what the paused rollout started nor what it "
                "replaced; left as it is"),
])
def test_abort_leaves_alone_what_an_operator_changed_since_the_pause(lab, fleet, tag, digit,
                                                                      skipped):
    """The canary was rolled to T2 and paused; since then an operator changed it by hand."""
    job, session, *_ = lab
    report = ops.rollout(job, "T2", ops.Options(services=[SERVICE], verify=False,
                                                pause="manual"), print)
    assert report.paused == [["pc2"]]
    ph = fleet.profile_of("mainpc").content_hash()
    session.facts_by_host["mainpc"].containers[cmd.current(SERVICE)] = Container(
        cmd.current(SERVICE), "running", SERVICE, tag, "sha256:" + digit * 64, ph)
    plans, ran = [], len(session.runs)
    aborted = pause.abort(job, print, plans.append)
    assert aborted.ok and aborted.action == "abort" and aborted.label == "T2"
    assert plans[0].label == "abort T2" and plans[0].rows == [] and plans[0].skipped == [skipped]
    assert session.runs[ran:] == []     # no deploy on any host
    assert session.locks == set() and aborted.unreleased_locks == []
    assert session.running("mainpc", SERVICE).tag == tag


def test_abort_refuses_when_a_host_is_unreachable(lab):
    job, session, *_ = lab
    ops.rollout(job, "T2", ops.Options(services=[SERVICE], verify=False, pause="manual"), print)
    original = session.facts
    session.facts = lambda cls: {**original(cls), "pc2": None}
    with pytest.raises(RigError) as caught:
        pause.abort(job, print)
    assert caught.value.lines == ["pc2: did not answer the pre-flight read",
                                  "abort refused: nothing was changed"]
    assert session.locks == set(HOSTS)


def test_abort_refuses_when_its_locks_cannot_be_taken_over(lab):
    job, session, *_ = lab
    ops.rollout(job, "T2", ops.Options(services=[SERVICE], verify=False, pause="manual"), print)
    before = dict(session.lock_files)
    original = session._lock

    def lock(host, command):       # another command took pc2's lock over first
        if host == "pc2" and "take" in command:
            session.lock_files["pc2"] = paused_lock(id="zoe@y-2")
        return original(host, command)
    session._lock = lock
    with pytest.raises(RigError) as caught:
        pause.abort(job, print)
    assert caught.value.lines[0].startswith("pc2: locked by another rollout: paused rollout T2 ")
    assert caught.value.lines[-1] == "abort refused: nothing was changed"
    assert session.running("mainpc", SERVICE).tag == "T2"
    assert session.lock_files["mainpc"] == before["mainpc"]   # the paused record is given back



def test_a_gpu_service_reads_its_image_once_and_a_host_without_a_driver_stops_pre_flight(lab,
                                                                                         fleet):
    job, session, registry, *_ = lab
    asked = []
    registry.image_env = lambda repo, digest: asked.append((repo, digest)) or \
        {"CUDA_VERSION": "12.1.0"}
    audio = "real_time_audio_pipeline"
    with pytest.raises(RigError) as caught:
        ops.plan(job, "T2", ops.Options(services=[audio]), print)
    pinned = f"{fleet.registry.repository(audio)}@sha256:{'2' * 64}"
    assert caught.value.lines == [
        *(f"{h}: {pinned} needs CUDA 12.1 (driver >= 530.30.02), {h} has no working NVIDIA "
          "driver (nvidia-smi cannot reach one)" for h in HOSTS),
        "pre-flight would fail"]
    # the registry is asked by its own name for the repository (no host in front)
    assert asked == [(f"{fleet.registry.namespace}/{audio}", "sha256:" + "2" * 64)]
    assert fleet.registry.repository(audio) == f"ghcr.io/{fleet.registry.namespace}/{audio}"
    asked.clear()
    ops.plan(job, "T2", ops.Options(services=[SERVICE]), print)   # no GPU service: not asked
    assert asked == []
