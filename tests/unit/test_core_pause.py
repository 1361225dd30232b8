"""promote and abort at their edges (rig/ops/pause.py), through the ops layer against the fake
fleet: which lock counts as the paused rollout, what promote compares before it replays the
record, what abort restores, skips, writes to the ledger and reports."""

from __future__ import annotations

import json
import time

import pytest

from rig.commands import container as cmd
from rig.commands.container import Release
from rig.errors import RigError
from rig.ops import pause
from rig.ops import rollout as ops
from rig.rollout.engine import release_doc
from tasks.rollout import Container, RolloutFacts

from .fakes import FakeJob, FakeSession, requiring_signatures

SERVICE = "affective_processing_center"
OTHER = "real_time_audio_pipeline"
HOSTS = ["mainpc", "pc2", "node3"]


class Registry:
    def manifest_digest(self, path, tag):
        return "sha256:new"

    def image_env(self, path, digest):     # (a GPU service's image: no CUDA it requires)
        return {}


def boxes(session, host, **digests):
    ph = session.fleet.profile_of(host).content_hash()
    return {cmd.current(s): Container(cmd.current(s), "running", s, "T1", d, ph)
            for s, d in digests.items()}


@pytest.fixture
def lab(fleet, tmp_path, monkeypatch):
    hosts = {"mainpc": fleet.hosts["mainpc"], "pc2": fleet.hosts["pc2"], "node3": fleet.hosts["pc2"]}
    fleet = fleet.model_copy(update={"hosts": hosts})
    session = FakeSession(fleet, HOSTS)
    for h in HOSTS:
        session.facts_by_host[h].containers = boxes(session, h, **{SERVICE: "sha256:old",
                                                                    OTHER: "sha256:other"})
        session.facts_by_host[h].state = {SERVICE: {"tag": "T1", "digest": "sha256:old",
                                                    "previous": None},
                                          OTHER: {"tag": "T1", "digest": "sha256:other"}}
    job = FakeJob(fleet, session)
    job.repo = tmp_path                      # no hooks there
    monkeypatch.setattr(ops, "_registry", lambda job: Registry())
    monkeypatch.setattr(pause, "_registry", lambda job: Registry())
    monkeypatch.setattr("rig.ops.hosts.verify", lambda *a, **k: 0)
    return job, session


def paused(job, canary=None):
    opts = ops.Options(services=[SERVICE], verify=False, pause="manual", canary=canary)
    report = ops.rollout(job, "T2", opts, lambda line: None)
    assert report.ok and report.paused
    return report


def rewrite_locks(session, change):
    """Every host's paused lock, edited the same way (as an older rig or a hand would)."""
    for h in HOSTS:
        lock = session.lock(h)
        change(lock)
        session.lock_files[h] = json.dumps(lock).encode()


def ledger(session, host):
    return [e for name, _, kw in session.runs if name == "record"
            for e in kw["entries"].get(host, [])]


# -- which lock is the paused rollout ---------------------------------------------------------------
def test_a_live_rollouts_lock_is_not_a_paused_rollout(lab):
    job, session = lab
    for h in HOSTS:
        session.lock_files[h] = json.dumps({"id": "bo-1", "operator": "bo", "heartbeat": 1}).encode()
    with pytest.raises(RigError, match="no paused rollout"):
        pause.abort(job, lambda line: None)


def test_with_no_paused_rollout_promote_names_who_holds_the_locks_and_how_to_finish_it(lab):
    """A rollout killed (or a promote of an older rig, whose locks kept no record): no paused
    rollout, but the operator is told whose locks they are and what finishes it."""
    import socket
    job, session = lab
    dead = {"id": "bo-2", "operator": "bo", "action": "rollout", "tag": "T2", "pid": 2 ** 22 + 7,
            "machine": socket.gethostname(), "since": time.time(), "heartbeat": time.time()}
    for h in ("mainpc", "pc2"):
        session.lock_files[h] = json.dumps(dead).encode()
    with pytest.raises(RigError) as raised:
        pause.promote(job, lambda line: None)
    lines = raised.value.lines
    assert lines[0].startswith("no paused rollout: nothing to promote or abort")
    assert [line.split(":")[0] for line in lines[1:3]] == ["  mainpc", "  pc2"]
    assert all("not running: --break-lock is safe" in line for line in lines[1:3])
    assert lines[3:] == ["  a rollout of T2 holds them: if it did not finish (killed), `rig "
                         "rollout --tag T2 --break-lock` finishes it"]
    assert "node3" not in session.lock_files or not session.lock_files["node3"]  # untouched


def test_who_holds_the_locks_when_none_is_paused(fleet):
    from rig.ops.pause import held_instead
    rollout = {"operator": "bo", "action": "rollout", "tag": "T2", "pid": 7, "heartbeat": 90.0}
    rollback = dict(rollout, action="rollback", tag="previous")
    facts = {"pc2": RolloutFacts(lock=rollout), "mainpc": RolloutFacts(lock=rollback),
             "node3": RolloutFacts(), "gone": None}
    lines = held_instead(facts, 3600, now=100.0, alive=lambda pid: True)
    assert [line.split(":")[0] for line in lines] == [
        "  mainpc", "  pc2", "  a rollout of T2 holds them"]
    assert "alive (heartbeat 10 s ago)" in lines[0]
    assert held_instead({"pc2": RolloutFacts()}, 3600) == []
    untagged = {"operator": "bo", "action": "rollout", "pid": 7, "heartbeat": 90.0}
    assert len(held_instead({"pc2": RolloutFacts(lock=untagged)}, 3600, now=100.0,
                            alive=lambda pid: True)) == 1      # no tag: no command to offer


def test_a_paused_lock_without_an_id_is_not_one_to_take_over(lab):
    job, session = lab
    for h in HOSTS:
        session.lock_files[h] = json.dumps({"paused": True, "tag": "T2", "canary": ["mainpc"],
                                            "record": {}}).encode()
    with pytest.raises(RigError, match="no paused rollout"):
        pause.promote(job, lambda line: None)


def test_two_paused_rollouts_are_named_and_neither_is_touched(lab):
    job, session = lab
    paused(job)
    session.lock_files["node3"] = json.dumps({**session.lock("node3"), "id": "cy-2",
                                              "tag": "T3"}).encode()
    first = session.lock("mainpc")["id"]
    with pytest.raises(RigError) as caught:
        pause.promote(job, lambda line: None)
    assert caught.value.lines == [f"2 paused rollouts hold locks: T2 ({first}), T3 (cy-2)"]


@pytest.mark.parametrize("drop", ["record", "canary"])
def test_a_paused_lock_without_its_record_or_canary_is_refused(lab, drop):
    job, session = lab
    paused(job)
    rewrite_locks(session, lambda lock: lock.pop(drop))
    with pytest.raises(RigError, match="has no record of what its canary did"):
        pause.abort(job, lambda line: None)
    assert session.running("mainpc", SERVICE).digest == "sha256:new"


def test_a_host_that_does_not_answer_refuses_the_abort(lab):
    job, session = lab
    paused(job)
    read = session.facts
    session.facts = lambda fact: {**read(fact), "node3": None}
    with pytest.raises(RigError) as caught:
        pause.abort(job, lambda line: None)
    assert caught.value.lines == ["node3: did not answer the pre-flight read",
                                  "abort refused: nothing was changed"]
    assert session.running("mainpc", SERVICE).digest == "sha256:new" and session.locks == set(HOSTS)


# -- promote ------------------------------------------------------------------------------------------
def test_promote_says_what_passed_and_which_waves_come(lab):
    job, session = lab
    paused(job)
    said = []
    assert pause.promote(job, said.append).ok
    assert said[0] == "promoting T2: canary mainpc passed; next pc2; node3"


def test_promote_runs_the_services_suite_unless_told_not_to(lab, monkeypatch):
    job, session = lab
    paused(job)
    seen = []
    monkeypatch.setattr(pause, "rollout", lambda job, tag, opts, *a, **kw: seen.append(opts))
    pause.promote(job, lambda line: None)
    pause.promote(job, lambda line: None, verify=False)
    assert [o.verify for o in seen] == [True, False]


def test_promote_refuses_a_paused_record_whose_images_are_not_signed(lab, tmp_path, monkeypatch):
    """Signatures required since the pause (or the signature removed): promote checks the
    record's releases before it takes a lock or touches a host."""
    job, session = lab
    paused(job)
    job.fleet = requiring_signatures(job.fleet, tmp_path)
    registry = Registry()
    registry.manifest = lambda path, ref: None
    monkeypatch.setattr(ops, "_registry", lambda job: registry)
    runs_before, locks_before = list(session.runs), {h: session.lock(h) for h in HOSTS}
    with pytest.raises(RigError) as caught:
        pause.promote(job, lambda line: None)
    assert caught.value.lines[-1] == "pre-flight failed: no host was changed"
    assert any("its signatures could not be read" in line or "no valid signature" in line
               for line in caught.value.lines)
    assert session.runs == runs_before and {h: session.lock(h) for h in HOSTS} == locks_before


def test_a_canary_host_that_needed_nothing_is_left_alone_by_promote_and_abort(lab):
    """A two-host canary where pc2 already ran the release: the record has no row for pc2;
    promote and abort go on without it."""
    job, session = lab
    new = Release(SERVICE, "T2", "", "sha256:new", session.fleet.profile_of("pc2").content_hash())
    session.facts_by_host["pc2"].containers[cmd.current(SERVICE)] = Container(
        cmd.current(SERVICE), "running", SERVICE, "T2", "sha256:new", new.profile_hash)
    session.facts_by_host["pc2"].state[SERVICE] = {"tag": "T2", "digest": "sha256:new"}
    paused(job, canary=["mainpc", "pc2"])
    assert "pc2" not in session.lock("mainpc")["record"]
    report = pause.promote(job, lambda line: None)
    assert report.ok and not session.locks
    assert [h for n, h in session.deploys() if n == "roll_out"] == [["mainpc"], ["node3"]]
    assert all(cmd.previous(SERVICE) not in session.facts_by_host[h].containers for h in HOSTS)


def test_abort_of_a_two_host_canary_restores_the_host_that_changed(lab):
    job, session = lab
    session.facts_by_host["pc2"].containers[cmd.current(SERVICE)] = Container(
        cmd.current(SERVICE), "running", SERVICE, "T2", "sha256:new",
        session.fleet.profile_of("pc2").content_hash())
    session.facts_by_host["pc2"].state[SERVICE] = {"tag": "T2", "digest": "sha256:new"}
    paused(job, canary=["mainpc", "pc2"])
    report = pause.abort(job, lambda line: None)
    assert report.ok and not session.locks
    assert [(h, list(kw["services"])) for n, h, kw in session.runs if n == "roll_back"] == [
        (["mainpc"], ["mainpc"])]


def fresh(session, host, digest="sha256:new", config=""):
    return Release(SERVICE, "T2", "reg/affective", digest,
                   session.fleet.profile_of(host).content_hash(), config)


def row(release, before=None):
    doc = {"to": release_doc(release)}
    if before is not None:
        doc["from"] = before
    return doc


def test_differences_names_every_way_what_would_run_differs_from_the_record(lab):
    _, session = lab
    facts = {h: RolloutFacts(containers=dict(session.facts_by_host[h].containers),
                             state=dict(session.facts_by_host[h].state)) for h in HOSTS}
    mainpc_new = fresh(session, "mainpc")
    facts["mainpc"].containers[cmd.current(SERVICE)] = Container(
        cmd.current(SERVICE), "running", SERVICE, "T2", "sha256:new", mainpc_new.profile_hash)
    record = {"mainpc": {SERVICE: row(mainpc_new, {"tag": "T1", "digest": "sha256:old"})},
              "pc2": {SERVICE: row(fresh(session, "pc2", config='{"memory": "1g"}'))},
              "node3": {SERVICE: row(fresh(session, "node3", digest="sha256:canaried00"))}}
    now = {"mainpc": [mainpc_new],
           "pc2": [fresh(session, "pc2", config='{"memory":"1g"}'),
                   Release(OTHER, "T2", "reg/rt", "sha256:x", "")],
           "node3": [fresh(session, "node3", digest="sha256:pushedagain")]}
    assert pause.differences(record, now, facts, ["mainpc"]) == [
        "node3 affective_processing_center: T2 now points to pushedagain; the canary ran "
        "canaried00 (the tag was pushed again)",
        "pc2 affective_processing_center: changed since the pause: settings",
        "pc2 real_time_audio_pipeline: not in the paused rollout (added since)"]
    assert pause.differences(record, {"mainpc": [mainpc_new]}, facts, ["mainpc"]) == [
        "node3 affective_processing_center: in the paused rollout but no longer selected "
        "(dropped from the spec or not in the registry)",
        "pc2 affective_processing_center: in the paused rollout but no longer selected "
        "(dropped from the spec or not in the registry)"]


def test_a_canary_service_the_rollout_did_not_change_must_still_need_no_change(lab):
    _, session = lab
    facts = {"mainpc": RolloutFacts(containers=dict(session.facts_by_host["mainpc"].containers),
                                    state=dict(session.facts_by_host["mainpc"].state))}
    other = Release(OTHER, "T1", "reg/rt", "sha256:other",
                    session.fleet.profile_of("mainpc").content_hash())
    assert pause.differences({}, {"mainpc": [other]}, facts, ["mainpc"]) == []
    moved = Release(OTHER, "T3", "reg/rt", "sha256:moved", other.profile_hash)
    assert pause.differences({}, {"mainpc": [moved]}, facts, ["mainpc"]) == [
        "mainpc real_time_audio_pipeline: would change now, but the canary did not change it"]
    assert pause.differences({}, {"pc2": [other]}, {}, ["mainpc"]) == [
        "pc2 real_time_audio_pipeline: not in the paused rollout (added since)"]
    assert pause.differences({}, {"mainpc": [other]}, {}, ["mainpc"]) == [
        "mainpc real_time_audio_pipeline: would change now, but the canary did not change it"]


def test_a_batch_host_is_not_asked_to_run_what_the_canary_runs(lab):
    _, session = lab
    release = fresh(session, "pc2")
    record = {"pc2": {SERVICE: row(release)}}
    assert pause.differences(record, {"pc2": [release]}, {"pc2": None}, ["mainpc"]) == []
    record = {"mainpc": {SERVICE: row(release)}}
    assert pause.differences(record, {"mainpc": [release]}, {"mainpc": None}, ["mainpc"]) == [
        "mainpc affective_processing_center: the canary no longer runs what it ran (nothing now)"]


# -- abort --------------------------------------------------------------------------------------------
def test_abort_plans_ledgers_and_reports_what_it_restored(lab):
    job, session = lab
    paused(job)
    plans = []
    report = pause.abort(job, lambda line: None, on_plan=plans.append)
    assert report.ok and not report.interrupted and report.action == "abort"
    [plan] = plans
    assert plan.label == "abort T2" and plan.waves == [["mainpc"]] and plan.skipped == []
    assert [(r.host, r.service, r.change, r.running_tag, r.running_digest, r.tag, r.digest, r.why)
            for r in plan.rows] == [("mainpc", SERVICE, True, "T2", "sha256:new", "T1",
                                     "sha256:old", ["abort"])]
    [line] = [e for e in ledger(session, "mainpc") if e["action"] == "abort"]
    assert {k: line[k] for k in ("action", "service", "tag", "digest", "previous_tag",
                                 "previous_digest", "result")} == {
        "action": "abort", "service": SERVICE, "tag": "T1", "digest": "sha256:old",
        "previous_tag": "T2", "previous_digest": "sha256:new", "result": "ok"}
    assert "reason" not in line
    assert set(report.phases) == {"connect_and_preflight", "locks", "waves", "health_gates"}
    assert report.phases["health_gates"] == 2.0              # the restore gate's min_healthy


def test_abort_of_a_first_install_removes_the_canary_container(lab):
    job, session = lab
    del session.facts_by_host["mainpc"].containers[cmd.current(SERVICE)]
    del session.facts_by_host["mainpc"].state[SERVICE]
    paused(job)
    plans = []
    report = pause.abort(job, lambda line: None, on_plan=plans.append)
    assert report.ok
    assert [(r.tag, r.digest) for r in plans[0].rows] == [("(nothing)", "")]
    assert cmd.current(SERVICE) not in session.facts_by_host["mainpc"].containers
    assert SERVICE not in session.facts_by_host["mainpc"].state


def test_abort_records_a_canary_already_back_and_skips_one_changed_by_hand(lab):
    job, session = lab
    paused(job)
    containers = session.facts_by_host["mainpc"].containers
    containers[cmd.current(SERVICE)] = containers.pop(cmd.previous(SERVICE))     # put back by hand
    containers[cmd.current(SERVICE)] = Container(cmd.current(SERVICE), "running", SERVICE, "T1",
                                                 "sha256:old", session.fleet.profile_of(
                                                     "mainpc").content_hash(), slot="a")
    session.facts_by_host["mainpc"].proxy[SERVICE] = {"a": "live", "b": "maint"}
    assert session.facts_by_host["mainpc"].state[SERVICE]["tag"] == "T2"   # as the canary left it
    plans = []
    report = pause.abort(job, lambda line: None, on_plan=plans.append)
    assert report.ok and not session.locks
    assert report.phases["health_gates"] == 0.0                  # nothing gated
    assert [(r.running_tag, r.tag, r.why) for r in plans[0].rows] == [
        ("T2", "T1", ["abort: already back, state.json written back"])]
    assert session.restores == [] and session.switches[-1][3] != "sha256:old"  # none since
    assert session.facts_by_host["mainpc"].state[SERVICE] == {"tag": "T1", "digest": "sha256:old",
                                                              "previous": None}
    assert [(e["tag"], e["previous_tag"], e["result"]) for e in ledger(session, "mainpc")[-1:]] \
        == [("T1", "T2", "ok")]

    paused(job)      # (it rolls T2 out again) and back by hand, state.json too
    del containers[cmd.previous(SERVICE)]
    containers[cmd.current(SERVICE)] = Container(cmd.current(SERVICE), "running", SERVICE, "T1",
                                                 "sha256:old", session.fleet.profile_of(
                                                     "mainpc").content_hash(), slot="a")
    session.facts_by_host["mainpc"].proxy[SERVICE] = {"a": "live", "b": "maint"}
    session.facts_by_host["mainpc"].state[SERVICE] = {"tag": "T1", "digest": "sha256:old",
                                                      "previous": None}
    plans, ran = [], len(session.runs)
    report = pause.abort(job, lambda line: None, on_plan=plans.append)
    assert report.ok and report.lines == [] and not session.locks
    assert plans[0].rows == [] and plans[0].skipped == [
        f"mainpc {SERVICE}: already runs what it ran before"]
    assert session.runs[ran:] == []

    paused(job)
    containers[cmd.current(SERVICE)] = Container(cmd.current(SERVICE), "running", SERVICE, "T9",
                                                 "sha256:hand", "ph")
    plans = []
    report = pause.abort(job, lambda line: None, on_plan=plans.append)
    assert report.ok and plans[0].skipped == [
        f"mainpc {SERVICE}: runs T9, neither what the paused rollout started nor what it "
        "replaced; left as it is"]
    assert session.running("mainpc", SERVICE).digest == "sha256:hand"


def test_an_abort_whose_restore_fails_says_so_in_the_report_and_the_ledger(lab):
    job, session = lab
    paused(job)
    session.rollback_fails.add("mainpc")
    report = pause.abort(job, lambda line: None)
    assert not report.ok and not session.locks
    assert "  mainpc: ROLLBACK FAILED: check it by hand" in report.lines
    [line] = [e for e in ledger(session, "mainpc") if e["action"] == "abort"]
    assert (line["result"], line["reason"]) == ("rollback_failed", "the restore failed")
    assert report.phases["health_gates"] == 0.0                  # the restore never started
    assert session.facts_by_host["mainpc"].state[SERVICE]["digest"] == "sha256:new"


def test_an_abort_whose_ledger_write_fails_fails(lab):
    job, session = lab
    paused(job)
    session.record_fails.add("mainpc")
    report = pause.abort(job, lambda line: None)
    assert not report.ok and not session.locks
    assert session.running("mainpc", SERVICE).digest == "sha256:old"
    assert report.lines[-1].startswith("mainpc: could not write the ledger/state.json "
                                       "(No route to host)")


def test_a_paused_lock_that_names_no_remaining_waves_can_still_be_aborted(lab):
    job, session = lab
    paused(job)
    rewrite_locks(session, lambda lock: lock.pop("remaining"))
    report = pause.abort(job, lambda line: None)
    assert report.ok and report.plan.hosts == ["mainpc"]
    assert session.running("mainpc", SERVICE).digest == "sha256:old"


def test_abort_ledgers_the_restored_versions_config_and_times_each_phase(lab, monkeypatch):
    import types

    job, session = lab
    ph = session.fleet.profile_of("mainpc").content_hash()
    session.facts_by_host["mainpc"].containers[cmd.current(SERVICE)] = Container(
        cmd.current(SERVICE), "running", SERVICE, "T1", "sha256:old", ph, "c0ffee", '{"m": 1}')
    paused(job)
    ticks = iter([100.0, 101.0, 103.0, 110.0, 111.0, 112.0])
    import time as real_time
    monkeypatch.setattr(pause, "time", types.SimpleNamespace(monotonic=lambda: next(ticks),
                                                             time=real_time.time))
    report = pause.abort(job, lambda line: None)
    assert report.ok
    [line] = [e for e in ledger(session, "mainpc") if e["action"] == "abort"]
    assert (line["digest"], line["config_hash"]) == ("sha256:old", "c0ffee")
    # started 100, checked 101, locked 103, ran 110, then 111 and 112 as it reports
    assert (report.seconds, report.phases) == (11.0, {
        "connect_and_preflight": 1.0, "locks": 2.0 + 2.0, "waves": 7.0, "health_gates": 2.0})


def test_abort_says_what_it_rolls_back(lab):
    job, session = lab
    paused(job)
    said = []
    assert pause.abort(job, said.append).ok
    assert said[0] == "aborting T2: rolling the canary mainpc back"


def test_a_paused_lock_that_lost_its_remaining_waves_is_not_promoted_half_way(lab):
    """The record still names the batches' hosts; a lock without its `remaining` waves makes
    promote see only the canary: it refuses, naming the hosts the record has and it would skip."""
    job, session = lab
    paused(job)
    rewrite_locks(session, lambda lock: lock.pop("remaining"))
    said = []
    before = list(session.runs)
    with pytest.raises(RigError) as caught:
        pause.promote(job, said.append)
    assert said[0] == "promoting T2: canary mainpc passed; next "
    assert caught.value.lines[:2] == [
        f"node3 {SERVICE}: in the paused rollout but no longer selected (dropped from the spec or "
        "not in the registry)",
        f"pc2 {SERVICE}: in the paused rollout but no longer selected (dropped from the spec or "
        "not in the registry)"]
    assert session.runs == before


# -- an abort that did not finish -----------------------------------------------------------------
class Killed(BaseException):
    """The abort's process dies here (SIGKILL): no finally of its own runs."""


def abort_killed(job, session, monkeypatch, deploy, then=None):
    """An abort dies as it is about to run `deploy` (with then=`then`), after every step
    before it: its locks stay as they were, and then look as a dead holder's do (stale)."""
    from rig.rollout.locks import HostLocks

    with monkeypatch.context() as m:
        m.setattr(HostLocks, "release", lambda self: self._stop_beating() or [])
        real = session.run

        def run(deploy_func, hosts=None, **kwargs):
            if deploy_func.__name__ == deploy and kwargs.get("then") == then:
                raise Killed
            return real(deploy_func, hosts=hosts, **kwargs)
        m.setattr(session, "run", run)
        with pytest.raises(Killed):
            pause.abort(job, lambda line: None)
    for h in session.locks:       # its process is gone: no heartbeat since
        lock = session.lock(h)
        lock.update(machine="elsewhere", heartbeat=1)
        session.lock_files[h] = json.dumps(lock).encode()


def restore_gate(s, host, command):
    return host == "mainpc" and "probe $(date" in command and s.restores


def test_an_abort_killed_during_its_restore_gate_is_finished_by_the_next_abort(lab, monkeypatch):
    """SIGKILL while the kept T1, started again beside T2 (a warm restore), loads: T2 still
    serves as -prev, T1 runs unswitched as rig-<service>, state.json still says T2. The abort's
    locks kept the paused record: promote is refused, and a second abort gates T1, switches
    back to it, removes T2 and writes state.json back, touching no container again."""
    job, session = lab
    paused(job)
    was = session.lock("mainpc")
    state_before = was["record"]["mainpc"][SERVICE]["state"]
    abort_killed(job, session, monkeypatch, "switch", then="remove")   # (its gate ran)
    f = session.facts_by_host["mainpc"]
    assert f.live_previous(SERVICE) and f.containers[cmd.current(SERVICE)].digest == "sha256:old"
    assert session.locks == set(HOSTS)
    for h in HOSTS:
        lock = session.lock(h)
        assert (lock["action"], lock["aborting"], lock["record"], lock["canary"]) == (
            "abort", was["id"], was["record"], was["canary"]) and lock["id"] != was["id"]

    with pytest.raises(RigError) as caught:
        pause.promote(job, lambda line: None)
    assert caught.value.lines[0].startswith("an abort of the paused rollout T2 holds locks")
    said, plans = [], []
    report = pause.abort(job, said.append, plans.append)
    assert report.ok, report.lines
    assert said[0] == ("aborting T2: finishing an abort that did not finish; rolling the canary "
                       "mainpc back")
    assert [(r.host, r.running_tag, r.tag) for r in plans[0].rows] == [("mainpc", "T2", "T1")]
    assert session.restores == [("mainpc", SERVICE, "warm")]        # the first abort's only
    assert set(f.containers) == {cmd.current(SERVICE), cmd.current(OTHER)}
    back = f.containers[cmd.current(SERVICE)]
    assert back.digest == "sha256:old" and f.proxy[SERVICE][back.slot] == "live"
    assert session.switches[-1] == ("mainpc", SERVICE, back.slot, "sha256:old")
    assert f.state[SERVICE] == state_before
    assert session.locks == set() and report.unreleased_locks == []
    assert [e["result"] for e in ledger(session, "mainpc") if e["action"] == "abort"] == ["ok"]


def test_an_abort_whose_restored_container_stopped_since_starts_it_never_the_new_one(
        lab, monkeypatch):
    """Killed mid-restore, and the restored T1 (rig-<service> now; T2 is -prev) stopped since:
    the second abort starts T1 again. Restoring from -prev would start T2 under the main name
    and record T1 (what the lab attack found)."""
    import dataclasses

    job, session = lab
    paused(job)
    abort_killed(job, session, monkeypatch, "switch", then="remove")
    f = session.facts_by_host["mainpc"]
    back = f.containers[cmd.current(SERVICE)]
    f.containers[back.name] = dataclasses.replace(back, state="exited")
    report = pause.abort(job, lambda line: None)
    assert report.ok, report.lines
    assert set(f.containers) == {cmd.current(SERVICE), cmd.current(OTHER)}
    now = f.containers[cmd.current(SERVICE)]
    assert (now.digest, now.state, f.proxy[SERVICE][now.slot]) == ("sha256:old", "running", "live")
    assert f.state[SERVICE]["digest"] == "sha256:old"


def test_an_abort_killed_after_its_switch_back_is_finished_by_recording_it(lab, monkeypatch):
    job, session = lab
    paused(job)
    state_before = session.lock("mainpc")["record"]["mainpc"][SERVICE]["state"]
    abort_killed(job, session, monkeypatch, "record")
    f = session.facts_by_host["mainpc"]
    assert cmd.previous(SERVICE) not in f.containers and f.state[SERVICE]["tag"] == "T2"
    switches, plans = len(session.switches), []
    report = pause.abort(job, lambda line: None, plans.append)
    assert report.ok and session.locks == set()
    assert [r.why for r in plans[0].rows] == [["abort: already back, state.json written back"]]
    assert len(session.switches) == switches and report.phases["health_gates"] == 0.0
    assert f.state[SERVICE] == state_before


def test_an_abort_that_lost_its_canary_mid_restore_is_finished_when_it_answers(lab):
    """The canary froze during the restore gate: the abort fails, releases the other hosts'
    locks and leaves mainpc's (with the record). When mainpc answers again, `rig abort`
    finishes: it takes the free hosts' locks fresh."""
    job, session = lab
    paused(job)

    def freeze(s, host, command):
        if restore_gate(s, host, command):
            s.frozen.add("mainpc")
    session.on_shell = freeze
    report = pause.abort(job, lambda line: None)
    assert not report.ok and report.unreleased_locks == ["mainpc"]
    start = report.lines.index("  mainpc: LOST during its rollback: which version serves "
                               "is unknown")
    assert report.lines[start + 2:start + 5] == [
        "    mainpc LOST: no answer within 12 s",
        "    its lock is still held, with the paused rollout's record",
        "    when it answers again: `rig abort` finishes the abort"]
    assert session.locks == {"mainpc"} and session.lock("mainpc")["aborting"]
    session.on_shell = None
    session.frozen.clear()
    session.lost.clear()
    lock = session.lock("mainpc")
    lock.update(machine="elsewhere", heartbeat=1)       # that abort's process is gone
    session.lock_files["mainpc"] = json.dumps(lock).encode()
    report = pause.abort(job, lambda line: None)
    assert report.ok, report.lines
    f = session.facts_by_host["mainpc"]
    assert not f.live_previous(SERVICE) and cmd.previous(SERVICE) not in f.containers
    assert f.running(SERVICE).digest == "sha256:old" and session.locks == set()


def test_a_running_abort_is_not_taken_over_by_another(lab, monkeypatch):
    job, session = lab
    paused(job)
    abort_killed(job, session, monkeypatch, "switch", then="remove")
    for h in HOSTS:     # its holder on another machine, heartbeat fresh: it still runs
        lock = session.lock(h)
        lock.update(heartbeat=time.time())
        session.lock_files[h] = json.dumps(lock).encode()
    before = list(session.runs)
    with pytest.raises(RigError) as caught:
        pause.abort(job, lambda line: None)
    assert caught.value.lines[0].startswith("mainpc: an abort of this paused rollout is at "
                                            "work: locked by ")
    assert caught.value.lines[0].endswith(" on elsewhere); wait for it (if it does not "
                                          "finish, `rig abort` again finishes what it began)")
    assert caught.value.lines[-1] == "abort refused: nothing was changed"
    assert session.runs == before


@pytest.mark.parametrize("stopped_since", [False, True])
def test_a_stop_first_abort_killed_behind_its_503_is_finished_by_the_next_abort(
        lab, monkeypatch, stopped_since):
    """pc2 cannot hold two copies of OTHER (stop_first): the abort put the 503 up, removed T2
    and started T1, and died during T1's gate (and T1 may have stopped since: a crash). The
    next abort gates T1 (started again) and switches to it, never leaving the 503 up."""
    import dataclasses

    job, session = lab
    opts = ops.Options(services=[OTHER], verify=False, pause="manual", canary=["pc2"])
    assert ops.rollout(job, "T2", opts, lambda line: None).paused
    abort_killed(job, session, monkeypatch, "switch", then="remove")
    f = session.facts_by_host["pc2"]
    assert session.restores == [("pc2", OTHER, "cold")]
    assert f.proxy[OTHER] == {"a": "maint", "b": "maint"} and f.running(OTHER).tag == "T1"
    if stopped_since:
        back = f.containers[cmd.current(OTHER)]
        f.containers[back.name] = dataclasses.replace(back, state="exited")
    report = pause.abort(job, lambda line: None)
    assert report.ok, report.lines
    assert session.restores == [("pc2", OTHER, "cold")]
    assert f.proxy[OTHER][f.running(OTHER).slot] == "live" and session.locks == set()
    assert f.state[OTHER]["digest"] == "sha256:other"


@pytest.mark.parametrize("action,advice", [
    ("abort", "it keeps the paused rollout's record: `rig abort` once the host answers"),
    ("rollout", "`--break-lock` once the host answers")])
def test_a_lock_left_on_a_lost_host_says_what_finishes_the_job(action, advice, capsys):
    from rig.cli.rollout import print_report

    report = ops.RolloutReport(action, "T2", None, False, False, [], 1.0, {}, ["mainpc"])
    with pytest.raises(RigError):
        print_report(report)
    assert f"rig: could not release the lock on mainpc; {advice}\n" in capsys.readouterr().err


def test_a_canary_restored_then_lost_before_its_record_is_not_called_lost_mid_gate(lab):
    """The restore passed and the proxy went back; the host stopped answering just before the
    record step: it serves its previous version (the record's own failure is named), and its
    lock, kept, tells the next `rig abort` to write state.json back."""
    job, session = lab
    paused(job)

    def lose(s):
        if s.runs[-1][0] == "switch":
            s.lost["mainpc"] = "no answer within 30 s"
    session.after_run = lose
    report = pause.abort(job, lambda line: None)
    assert not report.ok and report.unreleased_locks == ["mainpc"]
    assert "  mainpc: serving its previous version (restored and healthy: " \
        f"{SERVICE})" in report.lines
    assert not any("LOST" in line for line in report.lines), report.lines
    assert report.lines[-1].startswith("mainpc: could not write the ledger/state.json")


# -- a promote that did not finish ------------------------------------------------------------------
def promote_killed(job, session, monkeypatch, at_host=None, at_deploy=None):
    """A promote dies (SIGKILL) as it is about to take over `at_host`'s lock (hosts are taken
    in name order: mainpc, node3, pc2), or to run `at_deploy`: its locks stay, and then look
    as a dead holder's do (stale)."""
    from rig.rollout.locks import HostLocks

    with monkeypatch.context() as m:
        m.setattr(HostLocks, "release", lambda self: self._stop_beating() or [])
        take_one, real = HostLocks._take_one, session.run

        def take(self, host, *args):
            if host == at_host:
                raise Killed
            return take_one(self, host, *args)

        def run(deploy_func, hosts=None, **kwargs):
            if deploy_func.__name__ == at_deploy:
                raise Killed
            return real(deploy_func, hosts=hosts, **kwargs)
        m.setattr(HostLocks, "_take_one", take)
        m.setattr(session, "run", run)
        with pytest.raises(Killed):
            pause.promote(job, lambda line: None, verify=False)
    for h in session.locks:
        lock = session.lock(h)
        if not lock.get("paused"):
            lock.update(machine="elsewhere", heartbeat=1)
            session.lock_files[h] = json.dumps(lock).encode()


@pytest.mark.parametrize("at_host, at_deploy, promoting", [
    ("pc2", None, ["mainpc", "node3"]),          # half the paused locks taken over
    (None, "roll_out", ["mainpc", "node3", "pc2"]),   # all of them, then killed in a wave
])
def test_a_promote_killed_part_way_is_finished_by_the_next_promote_and_abort_is_refused(
        lab, monkeypatch, at_host, at_deploy, promoting):
    """Its locks keep the paused record (`promoting`: the paused rollout's id), as an abort's
    do: the next `rig promote` takes them over once their holder is gone, with the paused
    locks it had not reached, and finishes the job; `rig abort` is refused meanwhile."""
    job, session = lab
    paused(job)
    was = session.lock("mainpc")
    promote_killed(job, session, monkeypatch, at_host, at_deploy)
    held = {h: session.lock(h) for h in HOSTS}
    assert sorted(h for h, lock in held.items() if lock.get("promoting")) == promoting
    for h in promoting:
        assert (held[h]["promoting"], held[h]["record"], held[h]["canary"], held[h]["action"]) \
            == (was["id"], was["record"], was["canary"], "rollout")
        assert held[h]["id"] != was["id"]
    assert all(held[h].get("paused") for h in HOSTS if h not in promoting)

    with pytest.raises(RigError) as caught:
        pause.abort(job, lambda line: None)
    assert caught.value.lines == [
        "a promote of the paused rollout T2 holds locks (running, or it did not finish: `rig "
        "lock status` says which): abort refused, nothing was changed; `rig promote` finishes "
        "it (then `rig rollback` goes back)"]
    said = []
    report = pause.promote(job, said.append, verify=False)
    assert report.ok, report.lines
    assert said[0] == ("promoting T2: finishing a promote that did not finish; canary mainpc "
                       "passed; next pc2; node3")
    assert session.locks == set() and report.unreleased_locks == []
    for h in HOSTS:
        assert session.running(h, SERVICE).digest == "sha256:new"
    assert cmd.previous(SERVICE) not in session.facts_by_host["mainpc"].containers  # cleaned


def test_a_promote_at_work_is_waited_for_not_taken_over(lab, monkeypatch):
    job, session = lab
    paused(job)
    promote_killed(job, session, monkeypatch, at_host="pc2")
    lock = session.lock("mainpc")
    lock.update(heartbeat=time.time())              # alive, on another machine
    session.lock_files["mainpc"] = json.dumps(lock).encode()
    with pytest.raises(RigError) as caught:
        pause.promote(job, lambda line: None, verify=False)
    assert caught.value.lines[0].startswith("mainpc: a promote of this paused rollout is at "
                                            "work: locked by ")
    assert session.lock("mainpc")["promoting"] and session.lock("pc2")["paused"]   # untouched


def test_an_abort_and_a_promote_of_one_paused_rollout_both_holding_locks_are_named(lab):
    """Each refuses the other, so this takes a hand: rig says so and changes nothing."""
    job, session = lab
    paused(job)
    was = session.lock("mainpc")
    for host, key in (("mainpc", "aborting"), ("pc2", "promoting")):
        lock = {**was, "id": f"{key}-1", key: was["id"], "paused": False, "heartbeat": 1,
                "machine": "elsewhere"}
        session.lock_files[host] = json.dumps(lock).encode()
    for verb in (pause.promote, pause.abort):
        with pytest.raises(RigError, match=r"^both an abort and a promote of the paused "
                                           r"rollout T2 hold locks"):
            verb(job, lambda line: None)
    assert session.lock("node3")["paused"] and session.lock("pc2")["promoting"]
