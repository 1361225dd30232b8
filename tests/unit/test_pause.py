"""A rollout paused after its canary, then promoted or aborted, through the ops layer against the
fake fleet: the paused locks carry a record; promote replays it (and refuses when what would run
now differs); abort restores exactly what the canary replaced and nothing else."""

from __future__ import annotations

import json

import pytest

from rig.commands import container as cmd
from rig.errors import RigError
from rig.ops import pause
from rig.ops import rollout as ops
from tasks.rollout import Container

from .fakes import FakeJob, FakeSession

SERVICE = "affective_processing_center"
OTHER = "real_time_audio_pipeline"
HOSTS = ["mainpc", "pc2", "node3"]


class Registry:
    def __init__(self):
        self.digests: dict[str, str] = {}

    def manifest_digest(self, path, tag):
        return self.digests.get(path, "sha256:new")


@pytest.fixture
def lab(fleet, tmp_path, monkeypatch):
    hosts = {"mainpc": fleet.hosts["mainpc"], "pc2": fleet.hosts["pc2"], "node3": fleet.hosts["pc2"]}
    fleet = fleet.model_copy(update={"hosts": hosts})
    session = FakeSession(fleet, HOSTS)
    for h in HOSTS:
        ph = fleet.profile_of(h).content_hash()
        session.facts_by_host[h].containers = {
            cmd.current(SERVICE): Container(cmd.current(SERVICE), "running", SERVICE, "T1",
                                            "sha256:old", ph),
            cmd.current(OTHER): Container(cmd.current(OTHER), "running", OTHER, "T1",
                                          "sha256:other", ph)}
        session.facts_by_host[h].state = {SERVICE: {"tag": "T1", "digest": "sha256:old",
                                                    "previous": None},
                                          OTHER: {"tag": "T1", "digest": "sha256:other"}}
    registry = Registry()
    job = FakeJob(fleet, session)
    job.repo = tmp_path                      # no hooks there
    monkeypatch.setattr(ops, "_registry", lambda job: registry)
    monkeypatch.setattr(pause, "_registry", lambda job: registry)
    return job, session, registry


def paused(job) -> ops.RolloutReport:
    opts = ops.Options(services=[SERVICE], verify=False, pause="manual")
    report = ops.rollout(job, "T2", opts, lambda line: None)
    assert report.ok and report.paused == [["pc2"], ["node3"]]
    return report


def test_a_paused_rollout_leaves_its_record_in_every_hosts_lock(lab):
    job, session, _ = lab
    paused(job)
    locks = {h: session.lock(h) for h in HOSTS}
    assert len({json.dumps(lock, sort_keys=True) for lock in locks.values()}) == 1
    lock = locks["pc2"]
    assert lock["paused"] and lock["canary"] == ["mainpc"] and lock["services"] == [SERVICE]
    assert lock["record"]["mainpc"][SERVICE]["from"]["digest"] == "sha256:old"
    assert lock["record"]["node3"][SERVICE]["to"]["digest"] == "sha256:new"
    assert session.running("mainpc", SERVICE).digest == "sha256:new"
    assert cmd.previous(SERVICE) in session.facts_by_host["mainpc"].containers  # kept for abort


def test_promote_runs_the_recorded_releases_on_the_remaining_waves(lab, monkeypatch):
    job, session, registry = lab
    paused(job)
    monkeypatch.setattr("rig.ops.hosts.verify", lambda *a, **k: 0)
    report = pause.promote(job, lambda line: None)
    assert report.ok and not session.locks
    assert [h for n, h in session.deploys() if n == "roll_out"] == [["mainpc"], ["pc2"], ["node3"]]
    assert {session.running(h, SERVICE).digest for h in HOSTS} == {"sha256:new"}
    assert all(cmd.previous(SERVICE) not in session.facts_by_host[h].containers for h in HOSTS)


@pytest.mark.parametrize("what", ["tag pushed again", "spec changed", "canary changed by hand"])
def test_promote_refuses_when_what_would_run_differs_from_what_the_canary_ran(lab, what):
    job, session, registry = lab
    paused(job)
    if what == "tag pushed again":
        registry.manifest_digest = lambda path, tag: "sha256:pushed-again00"
        expected = "now points to pushed-again"
    elif what == "spec changed":
        services = dict(job.fleet.services)
        services[SERVICE] = services[SERVICE].model_copy(update={"env": {"NEW": "1"}})
        job.fleet = job.fleet.model_copy(update={"services": services})
        session.fleet = job.fleet
        expected = "changed since the pause: env NEW (unset) -> 1"
    else:
        box = session.facts_by_host["mainpc"].containers[cmd.current(SERVICE)]
        session.facts_by_host["mainpc"].containers[cmd.current(SERVICE)] = Container(
            box.name, "running", SERVICE, "T9", "sha256:hand", box.profile_hash)
        expected = "the canary no longer runs what it ran (T9 now)"
    before = list(session.runs)
    with pytest.raises(RigError) as caught:
        pause.promote(job, lambda line: None)
    assert any(expected in line for line in caught.value.lines), caught.value.lines
    assert caught.value.lines[-1].startswith("promote refused")
    assert session.runs == before and session.lock("pc2")["paused"]   # nothing changed


def test_abort_restores_only_what_the_canary_replaced_and_releases_every_lock(lab):
    job, session, _ = lab
    paused(job)
    other_before = session.facts_by_host["mainpc"].containers[cmd.current(OTHER)]
    report = pause.abort(job, lambda line: None)
    assert report.ok and not session.locks
    [(_, hosts, kwargs)] = [r for r in session.runs if r[0] == "roll_back"]
    assert hosts == ["mainpc"] and list(kwargs["services"]["mainpc"]) == [SERVICE]
    assert session.running("mainpc", SERVICE).digest == "sha256:old"
    assert session.facts_by_host["mainpc"].containers[cmd.current(OTHER)] is other_before
    assert session.facts_by_host["mainpc"].state[SERVICE] == {"tag": "T1", "digest": "sha256:old",
                                                              "previous": None}
    assert [h for n, h in session.deploys() if n == "roll_out"] == [["mainpc"]]  # pause only


def test_abort_and_promote_refuse_another_rollouts_lock(lab):
    job, session, _ = lab
    paused(job)
    session.lock_files["pc2"] = json.dumps({"id": "someone-else", "operator": "bo"}).encode()
    with pytest.raises(RigError, match="pc2: locked by another rollout"):
        pause.abort(job, lambda line: None)
    assert session.running("mainpc", SERVICE).digest == "sha256:new"   # nothing touched
    assert session.lock("mainpc")["paused"]


def test_no_paused_rollout_nothing_to_do(lab):
    job, session, _ = lab
    with pytest.raises(RigError, match="no paused rollout"):
        pause.promote(job, lambda line: None)


def test_a_service_an_operator_stopped_does_not_block_promote(lab, monkeypatch):
    """The rollout left it stopped (and out of the record); promote must do the same, not call
    it a change since the pause."""
    job, session, _ = lab
    monkeypatch.setattr("rig.ops.hosts.verify", lambda *a, **k: 0)
    for host in HOSTS:
        facts = session.facts_by_host[host]
        box = facts.containers[cmd.current(OTHER)]
        facts.containers[cmd.current(OTHER)] = Container(box.name, "exited", *_rest(box))
        facts.state[OTHER]["stopped"] = True
    opts = ops.Options(services=[SERVICE, OTHER], verify=False, pause="manual")
    paused_report = ops.rollout(job, "T2", opts, lambda line: None)
    assert paused_report.paused and any(OTHER in line for line in paused_report.plan.skipped)
    promoted = pause.promote(job, lambda line: None)
    assert promoted.ok, promoted.lines
    assert all(session.running(h, OTHER) is None for h in HOSTS)            # still stopped
    assert {session.running(h, SERVICE).digest for h in HOSTS} == {"sha256:new"}


def _rest(box):
    return (box.service, box.tag, box.digest, box.profile_hash, box.config_hash, box.config)
