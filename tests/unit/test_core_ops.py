"""rollout, rollback, plan and status as an operator runs them (rig/ops/rollout.py), through the ops
layer against the fake fleet: options and their defaults, hooks and the result they are told, the
pause and verify decisions, rollback's target and what it skips, the GPU pre-flight's registry
reads, and what status shows."""

from __future__ import annotations

import json
import time

import pytest

from rig.commands import container as cmd
from rig.errors import RigError
from rig.ops import rollout as ops
from tasks.rollout import Container, RolloutFacts
from tasks.util import Shell

from .fakes import FakeJob, StatusSession, requiring_signatures

SERVICE = "affective_processing_center"
GPU_A, GPU_B = "model_ops_coordinator", "real_time_audio_pipeline"
HOSTS = ["mainpc", "pc2", "node3"]


class Registry:
    def __init__(self):
        self.env: dict = {}
        self.env_reads: list = []

    def manifest_digest(self, path, tag):
        return f"sha256:{tag.lower()}"

    def image_env(self, repository, digest):
        self.env_reads.append((repository, digest))
        return self.env


@pytest.fixture
def lab(fleet, tmp_path, monkeypatch):
    hosts = {"mainpc": fleet.hosts["mainpc"], "pc2": fleet.hosts["pc2"], "node3": fleet.hosts["pc2"]}
    fleet = fleet.model_copy(update={"hosts": hosts})
    session = StatusSession(fleet, HOSTS)
    for h in HOSTS:
        ph = fleet.profile_of(h).content_hash()
        session.facts_by_host[h].containers = {cmd.current(SERVICE): Container(
            cmd.current(SERVICE), "running", SERVICE, "T1", "sha256:t1", ph)}
        session.facts_by_host[h].state = {SERVICE: {
            "tag": "T1", "digest": "sha256:t1", "since": "s1",
            "previous": {"tag": "T0", "digest": "sha256:t0"}}}
    registry = Registry()
    job = FakeJob(fleet, session)
    job.repo = tmp_path
    monkeypatch.setenv("HF_TOKEN", "hunter2-secret-value")
    made = []
    monkeypatch.setattr(ops, "_registry", lambda job: made.append(1) or registry)
    verified = []
    monkeypatch.setattr("rig.ops.hosts.verify",
                        lambda job, suite, args, hosts: verified.append((suite, args, hosts)) or 3)
    return job, session, registry, verified, made


def hooks(tmp_path, *names):
    """hooks/<name> scripts that append their RIG_* variables to hooks.log, one JSON line each."""
    folder = tmp_path / "hooks"
    folder.mkdir()
    for name in names:
        path = folder / name
        path.write_text("#!/bin/sh\nprintf '{\"hook\": \"%s\", \"tag\": \"%s\", \"services\": "
                        f"\"%s\", \"result\": \"%s\"}}\\n' {name} \"$RIG_TAG\" \"$RIG_SERVICES\" "
                        f"\"$RIG_RESULT\" >> {tmp_path}/hooks.log\n")
        path.chmod(0o755)

    def log():
        text = (tmp_path / "hooks.log").read_text() if (tmp_path / "hooks.log").exists() else ""
        return [json.loads(line) for line in text.splitlines()]
    return log


def quiet():
    return lambda line: None


# -- options -----------------------------------------------------------------------------------------
def test_options_default_to_no_lock_breaking_verify_on_and_stopped_services_left():
    opts = ops.Options()
    assert (opts.break_lock, opts.force, opts.verify, opts.start_stopped) == (False, False, True,
                                                                              False)
    assert ops.options_from() == ops.Options(None, None, None, None, False, False, True, False,
                                             None)


def test_options_from_the_command_line():
    opts = ops.options_from(services="a, b", limit="pc2", canary="mainpc", batch="2",
                            break_lock=True, no_verify=True, start_stopped=True, pause="5m",
                            force=True)
    assert opts == ops.Options(["a", "b"], ["pc2"], ["mainpc"], "2", True, True, False, True, 300.0)
    assert ops.options_from(pause="manual").pause == "manual"
    assert ops.options_from(pause="0").pause == "none"
    with pytest.raises(RigError, match="--force goes with --break-lock"):
        ops.options_from(force=True)
    assert ops.options_from(break_lock=True).force is False


# -- rollout: hooks, pause, verify ----------------------------------------------------------------------
def test_a_rollout_runs_its_hooks_with_the_services_and_the_result(lab, tmp_path):
    job, session, _, _, _ = lab
    log = hooks(tmp_path, "pre-rollout", "post-rollout")
    report = ops.rollout(job, "T2", ops.Options(verify=False), quiet())
    assert report.ok
    every = ",".join(sorted([GPU_A, GPU_B, SERVICE]))      # none selected: all the hosts run
    assert log() == [
        {"hook": "pre-rollout", "tag": "T2", "services": every, "result": ""},
        {"hook": "post-rollout", "tag": "T2", "services": every, "result": "ok"}]


def test_hooks_name_the_selected_services_and_say_failed(lab, tmp_path):
    job, session, _, _, _ = lab
    log = hooks(tmp_path, "pre-rollout", "post-rollout")
    session.failing.add(("mainpc", SERVICE))
    report = ops.rollout(job, "T2", ops.Options(services=[SERVICE], verify=False), quiet())
    assert not report.ok
    assert log() == [
        {"hook": "pre-rollout", "tag": "T2", "services": SERVICE, "result": ""},
        {"hook": "post-rollout", "tag": "T2", "services": SERVICE, "result": "failed"}]


def test_a_rollout_refused_at_pre_flight_raises_and_its_post_hook_says_failed(lab, tmp_path):
    job, session, _, _, _ = lab
    log = hooks(tmp_path, "post-rollout")
    session.lock_files["pc2"] = json.dumps({"id": "bo-1", "operator": "bo", "machine": "far",
                                            "heartbeat": time.time()}).encode()
    with pytest.raises(RigError, match="pre-flight failed: no host was changed"):
        ops.rollout(job, "T2", ops.Options(services=[SERVICE], verify=False), quiet())
    assert [e["result"] for e in log()] == ["failed"]


def test_an_interrupted_rollout_tells_its_post_hook_so(lab, tmp_path, monkeypatch):
    job, session, _, _, _ = lab
    log = hooks(tmp_path, "post-rollout")
    real_run = ops.Rollout.run

    def run(self, *args, **kwargs):      # Ctrl-C once the canary's wave is done
        session.after_run = lambda s: self._interrupt()
        return real_run(self, *args, **kwargs)
    monkeypatch.setattr(ops.Rollout, "run", run)
    report = ops.rollout(job, "T2", ops.Options(services=[SERVICE], verify=False), quiet())
    assert report.interrupted and [e["result"] for e in log()] == ["interrupted"]


def test_a_paused_rollout_runs_no_post_hook_and_promote_no_pre_hook(lab, tmp_path, monkeypatch):
    from rig.ops import pause

    job, session, registry, verified, _ = lab
    monkeypatch.setattr(pause, "_registry", ops._registry)
    log = hooks(tmp_path, "pre-rollout", "post-rollout")
    report = ops.rollout(job, "T2", ops.Options(services=[SERVICE], pause="manual"), quiet())
    assert report.paused == [["pc2"], ["node3"]] and verified == []
    assert [e["hook"] for e in log()] == ["pre-rollout"]
    report = pause.promote(job, quiet())
    assert report.ok and [e["hook"] for e in log()] == ["pre-rollout", "post-rollout"]


def test_the_specs_pause_applies_unless_the_command_line_says_none(lab):
    job, session, _, _, _ = lab
    job.fleet = job.fleet.model_copy(update={"rollout": job.fleet.rollout.model_copy(
        update={"pause": "manual"})})
    session.fleet = job.fleet
    report = ops.rollout(job, "T2", ops.Options(services=[SERVICE], verify=False), quiet())
    assert report.paused == [["pc2"], ["node3"]] and session.lock("pc2")["paused"]
    session.lock_files = {h: None for h in HOSTS}
    report = ops.rollout(job, "T3", ops.options_from(services=SERVICE, pause="0", no_verify=True),
                         quiet())
    assert report.ok and not report.paused and not session.locks
    report = ops.rollback(job, None, ops.Options(services=[SERVICE], verify=False), quiet())
    assert report.ok and not report.paused and not session.locks      # a rollback never pauses


def test_verify_runs_after_a_rollout_that_changed_something_and_passed(lab):
    job, session, _, verified, _ = lab
    said = []
    report = ops.rollout(job, "T2", ops.Options(services=[SERVICE]), said.append)
    assert report.ok and report.verify_rc == 3
    assert verified == [("services", ("--no-header",), HOSTS)]
    assert "verify (testinfra, services):" in said
    report = ops.rollout(job, "T2", ops.Options(services=[SERVICE]), said.append)
    assert report.ok and report.plan.changes == 0 and report.verify_rc is None   # nothing changed
    assert len(verified) == 1


def test_no_verify_after_a_failed_rollout_or_with_no_verify(lab):
    job, session, _, verified, _ = lab
    session.failing.add(("mainpc", SERVICE))
    report = ops.rollout(job, "T2", ops.Options(services=[SERVICE]), quiet())
    assert not report.ok and report.verify_rc is None
    session.failing.clear()
    report = ops.rollout(job, "T2", ops.Options(services=[SERVICE], verify=False), quiet())
    assert report.ok and report.verify_rc is None and verified == []


def test_host_warnings_and_the_plan_reach_the_operator(lab):
    job, session, _, _, _ = lab
    session.facts_by_host["pc2"].warnings = ["state.json was unreadable"]
    said, plans = [], []
    ops.rollout(job, "T2", ops.Options(services=[SERVICE], verify=False), said.append,
                on_plan=plans.append)
    assert "pc2: warning: state.json was unreadable" in said
    [plan] = plans
    assert plan.label == "T2" and plan.waves == [["mainpc"], ["pc2"], ["node3"]]
    assert plan.changes == 3


def test_a_service_marked_stopped_but_running_again_is_rolled_out(lab):
    job, session, _, _, _ = lab
    session.facts_by_host["pc2"].state[SERVICE]["stopped"] = True      # started by hand since
    report = ops.rollout(job, "T2", ops.Options(services=[SERVICE], verify=False), quiet())
    assert report.ok and report.plan.skipped == []
    assert session.running("pc2", SERVICE).tag == "T2"


# -- plan ---------------------------------------------------------------------------------------------
def test_plan_touches_nothing_and_a_refusal_says_it_would_fail(lab):
    job, session, _, _, _ = lab
    plan = ops.plan(job, "T2", ops.Options(services=[SERVICE]), quiet())
    assert isinstance(plan, ops.Plan) and plan.changes == 3 and session.runs == []
    assert not session.locks
    session.lock_files["pc2"] = json.dumps({"id": "bo-1", "operator": "bo", "machine": "far",
                                            "heartbeat": time.time()}).encode()
    session.facts_by_host["node3"].docker_active = False
    with pytest.raises(RigError) as caught:
        ops.plan(job, "T2", ops.Options(services=[SERVICE]), quiet())
    assert caught.value.lines[0] == "pc2: locked by bo since ? (rollout, pid ? on far); alive " \
        "(heartbeat 0 s ago): wait for it, or --break-lock --force if you know it is dead"
    assert caught.value.lines[1:] == [
        "node3: the Docker engine is not running (run `rig bootstrap`)", "pre-flight would fail"]


# -- rollback ------------------------------------------------------------------------------------------
def test_rollback_goes_to_each_hosts_previous_and_names_what_it_leaves(lab, tmp_path):
    job, session, registry, _, _ = lab
    log = hooks(tmp_path, "rollback")
    session.facts_by_host["node3"].state[SERVICE]["previous"] = None
    said = []
    report = ops.rollback(job, None, ops.Options(services=[SERVICE], verify=False), said.append)
    assert report.ok and report.label == "previous" and report.action == "rollback"
    assert report.plan.skipped == [f"node3 {SERVICE}: no previous version recorded; left as is"]
    assert {h: session.running(h, SERVICE).digest for h in HOSTS} == {
        "mainpc": "sha256:t0", "pc2": "sha256:t0", "node3": "sha256:t1"}
    assert log() == [{"hook": "rollback", "tag": "previous", "services": SERVICE, "result": "ok"}]


def test_rollback_skips_only_the_selected_services_of_hosts_that_answered(lab):
    job, session, _, _, _ = lab
    for h in HOSTS:
        session.facts_by_host[h].state[SERVICE]["previous"] = None
    session.facts_by_host["mainpc"].state[SERVICE]["previous"] = {"tag": "T0",
                                                                  "digest": "sha256:t0"}
    report = ops.rollback(job, None, ops.Options(services=[SERVICE], verify=False), quiet())
    assert report.plan.skipped == [f"pc2 {SERVICE}: no previous version recorded; left as is",
                                   f"node3 {SERVICE}: no previous version recorded; left as is"]
    report = ops.rollback(job, None, ops.Options(verify=False, limit=["mainpc"]), quiet())
    assert report.plan.skipped == [f"mainpc {s}: no previous version recorded; left as is"
                                   for s in job.fleet.services_on("mainpc") if s != SERVICE]


def test_rollback_with_nothing_recorded_refuses_and_to_tag_goes_anyway(lab, tmp_path):
    job, session, _, _, _ = lab
    log = hooks(tmp_path, "rollback")
    for h in HOSTS:
        session.facts_by_host[h].state[SERVICE]["previous"] = None
    with pytest.raises(RigError, match="nothing to roll back: no service has a previous version"):
        ops.rollback(job, None, ops.Options(services=[SERVICE], verify=False), quiet())
    report = ops.rollback(job, "T9", ops.Options(services=[SERVICE], verify=False), quiet())
    assert report.ok and report.label == "T9" and report.plan.skipped == []
    assert {session.running(h, SERVICE).digest for h in HOSTS} == {"sha256:t9"}
    assert [(e["tag"], e["result"]) for e in log()] == [("previous", "failed"), ("T9", "ok")]


def test_rollback_after_a_crash_says_where_it_goes(lab):
    job, session, _, _, _ = lab
    box = session.facts_by_host["pc2"].containers[cmd.current(SERVICE)]
    session.facts_by_host["pc2"].containers[cmd.current(SERVICE)] = Container(
        box.name, "running", SERVICE, "T2", "sha256:t2-crashed-x", box.profile_hash)
    said = []
    report = ops.rollback(job, None, ops.Options(services=[SERVICE], verify=False), said.append)
    assert report.ok and session.running("pc2", SERVICE).digest == "sha256:t1"
    assert f"pc2 {SERVICE}: runs T2 (t2-crashed-x), which state.json never recorded as healthy " \
        "(an interrupted rollout); going back to the last healthy version, T1" in said


def test_previous_target_edges():
    facts = {"up": RolloutFacts(state={"a": {"tag": "T1", "digest": "sha256:1"}}),
             "gone": None,
             "bare": RolloutFacts(containers={"rig-a": Container("rig-a", "running", "a", "T5",
                                                                 "sha256:5", "ph")}),
             "old": RolloutFacts(state={"a": {"tag": "T1", "digest": "sha256:1",
                                              "previous": {"tag": "T0"}}})}
    target = ops.previous_target(facts)
    assert target("gone", "a") is None                 # did not answer
    assert target("up", "a") is None                   # recorded, nothing running, no previous
    assert target("up", "b") is None                   # never recorded
    assert target("bare", "a") is None                 # runs, never recorded
    assert target("old", "a") is None                  # a previous without a digest
    crashed = {"h": RolloutFacts(state={"a": {"tag": "T1", "digest": "sha256:1"}}, containers={
        "rig-a": Container("rig-a", "running", "a", "", "sha256:2222222222222", "ph")})}
    assert ops.previous_target(crashed)("h", "a") == ("T1", "sha256:1")   # no notes wanted
    notes: list[str] = []
    assert ops.previous_target(crashed, notes)("h", "a") == ("T1", "sha256:1")
    assert notes == ["h a: runs ? (222222222222), which state.json never recorded as healthy (an "
                     "interrupted rollout); going back to the last healthy version, T1"]


# -- signatures ----------------------------------------------------------------------------------------
def test_an_unsigned_image_is_refused_at_pre_flight_before_any_lock_or_change(lab, tmp_path):
    job, session, registry, _, _ = lab
    job.fleet = requiring_signatures(job.fleet, tmp_path)
    asked = []
    registry.manifest_digest = lambda path, tag: "sha256:" + "2" * 64
    registry.manifest = lambda path, ref: asked.append((path, ref))    # no signature there
    with pytest.raises(RigError) as caught:
        ops.rollout(job, "T2", ops.Options(services=[SERVICE], verify=False), quiet())
    assert caught.value.lines[-1] == "pre-flight failed: no host was changed"
    assert caught.value.lines[0].endswith("(pushed by someone else, or never signed)")
    assert f"/{SERVICE}:T2 (sha256:222222222222)" in caught.value.lines[0]
    assert asked == [(job.fleet.registry.repository(SERVICE).split("/", 1)[1],
                      "sha256-" + "2" * 64 + ".sig")]
    assert session.runs == [] and not session.locks


def test_a_rollback_and_a_plan_check_signatures_too(lab, tmp_path):
    job, session, registry, _, _ = lab
    job.fleet = requiring_signatures(job.fleet, tmp_path)
    registry.manifest_digest = lambda path, tag: "sha256:" + "2" * 64
    registry.manifest = lambda path, ref: None
    with pytest.raises(RigError) as back:      # back to T0, recorded in state.json
        ops.rollback(job, None, ops.Options(services=[SERVICE], verify=False), quiet())
    assert back.value.lines[-1] == "pre-flight failed: no host was changed"
    assert f"/{SERVICE}:T0 (sha256:t0): its signatures could not be read" in back.value.lines[0]
    with pytest.raises(RigError) as planned:
        ops.plan(job, "T2", ops.Options(services=[SERVICE]), quiet())
    assert planned.value.lines[-1] == "pre-flight would fail"
    assert "no valid signature by key" in planned.value.lines[0]
    assert session.runs == [] and not session.locks


@pytest.mark.parametrize("rollout, warning", [
    ({"require_signed": False}, "warning: rollout.require_signed is false: image signatures are "
                                "not checked"),
    ({"require_provenance": False}, "warning: rollout.require_provenance is false: image "
                                    "provenance is not checked"),
    ({}, None)])
def test_checks_turned_off_are_said_by_every_verb_that_checks_images(lab, tmp_path, rollout, warning):
    job, session, registry, _, _ = lab
    fleet = requiring_signatures(job.fleet, tmp_path)
    job.fleet = fleet.model_copy(update={"rollout": fleet.rollout.model_copy(update=rollout)})
    for verb in (lambda say: ops.plan(job, "T2", ops.Options(services=[SERVICE]), say),
                 lambda say: ops.rollout(job, "T2", ops.Options(services=[SERVICE], verify=False),
                                         say)):
        said: list[str] = []
        try:
            verb(said.append)
        except RigError:
            pass    # the fake registry has no signatures: refused, after the warning
        assert [line for line in said if line.startswith("warning: rollout.")] == (
            [warning] if warning else [])


# -- the GPU pre-flight ---------------------------------------------------------------------------------
def test_the_gpu_pre_flight_reads_each_image_through_one_registry_client(lab):
    job, session, registry, _, made = lab
    registry.env = {"NVIDIA_REQUIRE_CUDA": "cuda>=99.0"}
    with pytest.raises(RigError) as caught:
        ops.rollout(job, "T2", ops.Options(services=[GPU_A, GPU_B], limit=["mainpc"],
                                           verify=False), quiet())
    assert caught.value.lines[-1] == "pre-flight failed: no host was changed"
    assert [line.split(":")[0] for line in caught.value.lines[:-1]] == ["mainpc", "mainpc"]
    assert len(registry.env_reads) == 2 and len(made) == 2     # resolve, then the GPU check
    assert session.runs == [] and not session.locks


def test_no_gpu_read_when_pre_flight_already_failed(lab):
    job, session, registry, _, _ = lab
    session.facts_by_host["mainpc"].docker_active = False
    with pytest.raises(RigError) as caught:
        ops.rollout(job, "T2", ops.Options(services=[GPU_A], limit=["mainpc"], verify=False),
                    quiet())
    assert caught.value.lines == ["mainpc: the Docker engine is not running (run `rig bootstrap`)",
                                  "pre-flight failed: no host was changed"]
    assert registry.env_reads == []


# -- status ---------------------------------------------------------------------------------------------
def test_health_words():
    expect = {"status": "ok"}
    assert ops.health_word('{"status": "ok"}', expect, True) == "ok"
    assert ops.health_word("  ", expect, True) == "down"
    assert ops.health_word('{"status": "degraded", "why": "the model is still loading"}', expect,
                           True) == 'BAD {"status": "degraded", "why": "the model'
    assert ops.health_word("", expect, False) == "not running"
    assert ops.health_word("", expect, False, stopped=True) == "stopped"
    assert ops.health_word('{"status": "loading", "seconds": 75.0}', expect, True) == "loading"
    assert ops.health_word('{"status": "Loading"}', expect, True) == 'BAD {"status": "Loading"}'


def test_status_shows_what_runs_its_health_since_when_the_lock_and_orphans(lab):
    job, session, _, _, _ = lab
    session.bodies = {("mainpc", SERVICE): '{"status": "ok", "up": 1}',
                      ("pc2", SERVICE): '{"status": "degraded"}'}
    session.facts_by_host["node3"].containers = {
        "rig-gone": Container("rig-gone", "exited", "gone", "", "", "ph"),
        "rig-x": Container("rig-x", "running", "x", "T7", "sha256:7", "ph"),
        "postgres": Container("postgres", "running", "", "", "", "")}
    session.facts_by_host["node3"].state = {SERVICE: {"stopped": True, "since": "s9"}}
    del session.facts_by_host["pc2"].state[SERVICE]
    session.lock_files["pc2"] = json.dumps({"id": "r1", "paused": True, "tag": "T2",
                                            "operator": "ops", "paused_since": 1}).encode()
    rows = ops.status(job, None, quiet())
    assert session.shell_all_calls == [(sorted(HOSTS), 30)]
    mine = [(r.host, r.service, r.tag, r.digest, r.health, r.since, r.note) for r in rows
            if r.service in (SERVICE, "gone", "x", "")]
    assert mine == [
        ("mainpc", SERVICE, "T1", "sha256:t1", "ok", "s1", None),
        ("pc2", SERVICE, "T1", "sha256:t1", 'BAD {"status": "degraded"}', None,
         "paused rollout T2 by ops since 1970-01-01 00:00:01 UTC, after its canary: `rig promote` "
         "continues it, `rig abort` rolls the canary back"),
        ("node3", SERVICE, None, None, "stopped", "s9", None),
        ("node3", "gone", None, None, "orphan", None, "rig-gone (exited): `rig prune` removes it"),
        ("node3", "x", "T7", "sha256:7", "orphan", None, "rig-x (running): `rig prune` removes it")]


def test_status_of_a_host_that_did_not_answer(lab):
    """Not 'not running': rig does not know what runs there. The others are shown."""
    job, session, _, _, _ = lab
    read = session.facts
    session.facts = lambda fact: {**read(fact), "pc2": None}
    session.lost["pc2"] = "no answer within 12 s"
    rows = [r for r in ops.status(job, None, quiet()) if r.service == SERVICE]
    assert [(r.host, r.tag, r.health, r.since, r.note) for r in rows] == [
        ("mainpc", "T1", "down", "s1", None),
        ("pc2", None, "unreachable", None, "no answer within 12 s"),
        ("node3", "T1", "down", "s1", None)]
    assert session.shell_all_calls == [(["mainpc", "node3"], 30)]   # pc2 is not probed


def test_status_of_a_host_that_answered_its_read_then_not_its_probes(lab):
    """Frozen between the two: not `down` (its services may be fine), and the exit says so."""
    job, session, _, _, _ = lab
    shell_all = session.shell_all

    def freeze_pc2(commands, timeout=None, retry=False):
        answers = shell_all(commands, timeout)
        session.lost["pc2"] = "no answer within 30 s"
        answers["pc2"] = Shell(False, "", ["no answer within 30 s"])
        return answers
    session.shell_all = freeze_pc2
    rows = [r for r in ops.status(job, None, quiet()) if r.service == SERVICE]
    assert [(r.host, r.tag, r.health, r.note) for r in rows] == [
        ("mainpc", "T1", "down", None),
        ("pc2", "T1", "unreachable", "its state was read, then no answer to the health probes "
                                     "(no answer within 30 s)"),
        ("node3", "T1", "down", None)]


def test_status_of_a_host_rig_could_not_reach_at_all(lab):
    job, session, _, _, _ = lab
    session.unreachable["node3"] = ["node3: unreachable: timed out (frozen?)",
                                    "node3: check the address"]
    rows = [r for r in ops.status(job, None, quiet()) if r.host == "node3"]
    assert {(r.health, r.tag, r.note) for r in rows} == {
        ("unreachable", None, "unreachable: timed out (frozen?); check the address")}
    assert len(rows) == len(job.fleet.services_on("node3"))


def test_rollback_of_a_per_machine_service_goes_back_to_its_recorded_image_tag(lab):
    job, session, _, _, _ = lab
    ph = job.fleet.profile_of("mainpc").content_hash()
    session.facts_by_host["mainpc"].containers[cmd.current(GPU_A)] = Container(
        cmd.current(GPU_A), "running", GPU_A, "T1-mainpc", "sha256:g1", ph)
    session.facts_by_host["mainpc"].state[GPU_A] = {
        "tag": "T1-mainpc", "digest": "sha256:g1",
        "previous": {"tag": "T0-mainpc", "digest": "sha256:g0"}}
    plans = []
    report = ops.rollback(job, None, ops.Options(services=[GPU_A], limit=["mainpc"], verify=False),
                          quiet(), on_plan=plans.append)
    [row] = plans[0].rows
    assert (row.tag, row.digest) == ("T0-mainpc", "sha256:g0")     # not T0-mainpc-mainpc
    assert report.ok and session.running("mainpc", GPU_A).tag == "T0-mainpc"


def test_a_lock_taken_over_during_the_last_wave_fails_the_command_naming_who(lab):
    from rig.rollout.locks import HostLocks

    job, session, _, _, _ = lab
    waves_run = []

    def steal(s):
        if s.runs[-1][0] == "roll_out":
            waves_run.append(s.runs[-1][1])
            if s.runs[-1][1] == ["node3"]:
                assert HostLocks(s, 3600, "rollout", "T9").take(break_lock=True,
                                                                force=True) == []
    session.after_run = steal
    report = ops.rollout(job, "T2", ops.Options(services=[SERVICE], verify=False), quiet())
    assert not report.ok and waves_run == [["mainpc"], ["pc2"], ["node3"]]
    assert any(line.startswith("node3: this rollout's lock was taken over: locked by")
               for line in report.lines)


def test_the_registry_client_is_the_specs_registry_with_its_token_one_per_command(fleet, repo,
                                                                                  monkeypatch):
    from rig.ops.job import Job

    monkeypatch.setenv(fleet.registry.token_env, "ghp-token-value")
    job = Job(repo / "fleet.yml", "production")
    client = ops._registry(job)
    assert (client.host, client.username, client.password) == (
        fleet.registry.host, fleet.registry.username, "ghp-token-value")
    assert ops._registry(job) is client          # authenticated once, one connection kept
    assert Job(repo / "fleet.yml", "production").registry is not client


def test_rollback_to_a_tag_the_registry_lacks_says_so_not_nothing_to_roll_back(lab, tmp_path):
    job, session, registry, _, _ = lab
    registry.manifest_digest = lambda path, tag: None
    with pytest.raises(RigError) as caught:
        ops.rollback(job, "T9", ops.Options(services=[SERVICE], verify=False), quiet())
    assert caught.value.lines[0].endswith(":T9: not in the registry")
    assert caught.value.lines[-1] == "pre-flight failed: no host was changed"


def test_a_rollback_hook_names_every_service_when_none_is_selected(lab, tmp_path):
    job, session, _, _, _ = lab
    log = hooks(tmp_path, "rollback")
    ops.rollback(job, None, ops.Options(verify=False), quiet())
    assert [e["services"] for e in log()] == [",".join(sorted([GPU_A, GPU_B, SERVICE]))]


def test_start_and_restart_of_a_gpu_service_meet_the_driver_and_a_stop_needs_nothing(lab):
    """A restart after a driver downgrade would fail at container start on a real card; rig
    refuses it before anything is touched, as a rollout's pre-flight does."""
    from rig.ops.service import control_service

    job, session, registry, _, _ = lab
    job.registry = registry
    ph = job.fleet.profile_of("mainpc").content_hash()
    session.facts_by_host["mainpc"].containers[cmd.current(GPU_A)] = Container(
        cmd.current(GPU_A), "running", GPU_A, "T1", "sha256:moc1", ph)
    registry.env = {"NVIDIA_REQUIRE_CUDA": "cuda>=99.0"}
    for verb in ("restart", "start"):
        with pytest.raises(RigError) as caught:
            control_service(job, verb, GPU_A, ["mainpc"], False, quiet())
        assert caught.value.lines[0].startswith("mainpc: ")
        assert caught.value.lines[-1] == f"rig {verb}: nothing was changed"
    assert session.runs == [] and not session.locks
    # the image each host runs, by its digest, in the registry's own repository name
    assert registry.env_reads == [("haymayndzultra/ai_system/model_ops_coordinator",
                                   "sha256:moc1")] * 2
    reads = len(registry.env_reads)
    assert control_service(job, "stop", GPU_A, ["mainpc"], False, quiet()).ok
    assert len(registry.env_reads) == reads          # a stop starts nothing: no GPU check


def test_work_started_early_gives_its_result_or_raises_its_error_later(capfd):
    import gevent

    from rig.ops.rollout import _started

    ran = []
    result = _started(lambda a, b: ran.append(1) or a + b, 2, 3)
    gevent.sleep(0)                       # it runs as soon as the caller waits on anything
    assert ran == [1] and result() == 5 and result() == 5

    def refuse():
        raise RigError("secret HF_TOKEN: no variable and no file", "nothing was changed")
    failed = _started(refuse)
    gevent.sleep(0)
    with pytest.raises(RigError) as caught:
        failed()
    assert caught.value.lines == ["secret HF_TOKEN: no variable and no file", "nothing was changed"]
    assert capfd.readouterr().err == ""   # gevent printed no traceback for it
