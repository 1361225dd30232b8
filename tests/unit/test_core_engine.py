"""The rollout engine's rules at their edges (rig/rollout/engine.py), against the fake fleet: what a
change says it changes and what it replaced, how releases are resolved, what each failure policy
does and writes to the ledger, what the report says about a restore, a lost host and secrets, and
which kept containers a finished rollout removes."""

from __future__ import annotations

import dataclasses
import json

import pytest

from rig.commands import container as cmd
from rig.images import image_for
from rig.rollout import engine as eng
from rig.rollout.engine import Change, Rollout
from rig.rollout.gate import Verdict
from rig.runner import HostResult
from rig.secrets import Secret
from tasks.rollout import Container, RolloutFacts

from .fakes import FakeSession

SERVICE = "affective_processing_center"
HOSTS = ["mainpc", "pc2", "node3"]
WAVES = [["mainpc"], ["pc2"], ["node3"]]


def three_hosts(fleet, auto_rollback="wave"):
    hosts = {"mainpc": fleet.hosts["mainpc"], "pc2": fleet.hosts["pc2"], "node3": fleet.hosts["pc2"]}
    rollout = fleet.rollout.model_copy(update={"auto_rollback": auto_rollback})
    return fleet.model_copy(update={"hosts": hosts, "rollout": rollout})


def release(fleet, host, digest="sha256:new", tag="T2", config=""):
    return cmd.Release(SERVICE, tag, "reg/affective", digest, fleet.profile_of(host).content_hash(),
                       config)


def box(fleet, host, digest="sha256:old", tag="T1", profile_hash=None, config="", state="running"):
    config_hash = cmd.Release(SERVICE, tag, "r", digest, "p", config).config_hash
    return Container(cmd.current(SERVICE), state, SERVICE, tag, digest,
                     fleet.profile_of(host).content_hash() if profile_hash is None else profile_hash,
                     config_hash, config)


def session_running(fleet, **faults):
    """Every host runs SERVICE T1 (sha256:old), recorded healthy."""
    session = FakeSession(fleet, HOSTS, **faults)
    for h in HOSTS:
        session.facts_by_host[h].containers = {cmd.current(SERVICE): box(fleet, h)}
        session.facts_by_host[h].state = {SERVICE: {"tag": "T1", "digest": "sha256:old"}}
    return session


def changes_for(fleet, session):
    return {h: [Change(h, release(fleet, h), session.facts_by_host[h].running(SERVICE),
                       session.facts_by_host[h].state.get(SERVICE))] for h in session.hosts}


def engine(fleet, session, said=None, action="rollout"):
    return Rollout(session, fleet, (said.append if said is not None else lambda line: None),
                   action, "T2")


def ledger(session) -> dict:
    found: dict = {}
    for name, _, kwargs in session.runs:
        if name == "record":
            for host, lines in kwargs["entries"].items():
                found.setdefault(host, []).extend(lines)
    return found


# -- a change, in words -------------------------------------------------------------------------------
def test_why_names_the_image_the_settings_or_the_profile_that_differ(fleet):
    new = release(fleet, "mainpc", config='{"memory": "4g"}')
    assert Change("mainpc", new, None).why == ["not running"]
    old_image = box(fleet, "mainpc", config='{"memory": "4g"}')
    assert Change("mainpc", new, old_image).why == ["image T1 -> T2"]
    settings = box(fleet, "mainpc", "sha256:new", "T2", config='{"memory": "2g"}')
    assert Change("mainpc", new, settings).why == ["memory 2g -> 4g"]
    profile = box(fleet, "mainpc", "sha256:new", "T2", profile_hash="0" * 64,
                  config='{"memory": "4g"}')
    assert Change("mainpc", new, profile).why == ["machine profile changed"]
    same = box(fleet, "mainpc", "sha256:new", "T2", config='{"memory": "4g"}')
    assert Change("mainpc", new, same, {"tag": "T2", "digest": "sha256:new"}).why == []
    assert Change("mainpc", new, same, {"tag": "T1", "digest": "sha256:old"}).why == [
        "not recorded as gated (an earlier rollout stopped before its end)"]


def test_an_unlabelled_container_that_was_never_gated_says_only_what_differs(fleet):
    """An older rig's container (no config label) runs the right digest but was never recorded
    healthy: the change names the settings, not also 'not yet gated'."""
    new = release(fleet, "mainpc", config='{"memory": "4g"}')
    unlabelled = box(fleet, "mainpc", "sha256:new", "T2")
    change = Change("mainpc", new, unlabelled, {"tag": "T1", "digest": "sha256:old"})
    assert change.unfinished
    assert change.why == ["settings (not labelled by this rig version)"]


def test_before_is_what_runs_or_for_an_unfinished_change_what_was_recorded(fleet):
    new = release(fleet, "mainpc")
    running = box(fleet, "mainpc")
    assert Change("mainpc", new, running).before == {
        "digest": "sha256:old", "tag": "T1", "profile_hash": running.profile_hash,
        "config_hash": None}
    assert Change("mainpc", new, None).before is None
    done = box(fleet, "mainpc", "sha256:new", "T2")
    assert Change("mainpc", new, done, {"tag": "T1", "digest": "sha256:old"}).before == {
        "digest": "sha256:old", "tag": "T1", "profile_hash": None, "config_hash": None}


def test_a_release_back_to_what_ran_before_or_to_nothing(fleet):
    new = release(fleet, "mainpc")
    assert eng.back_release(new, {"tag": "T1", "digest": "sha256:old", "profile_hash": "p0"}) == \
        cmd.Release(SERVICE, "T1", "reg/affective", "sha256:old", "p0")
    assert eng.back_release(new, {"tag": "T1", "digest": "sha256:old"}).profile_hash == \
        new.profile_hash
    assert eng.back_release(new, None) == cmd.Release(SERVICE, "", "reg/affective", "",
                                                      new.profile_hash)
    doc = eng.release_doc(release(fleet, "mainpc", config='{"a": 1}'))
    assert eng.release_of(doc) == release(fleet, "mainpc", config='{"a": 1}')
    assert eng.release_of({**doc, "config": None}).config == ""


# -- releases -----------------------------------------------------------------------------------------
class Registry:
    def __init__(self, missing=()):
        self.asked: list = []
        self.missing = set(missing)

    def manifest_digest(self, path, tag):
        self.asked.append((path, tag))
        return None if path in self.missing else f"sha256:{tag}"


def test_each_image_is_looked_up_once_and_a_missing_one_is_named(fleet, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hunter2-secret-value")
    fleet = three_hosts(fleet)
    registry = Registry()
    releases, problems = eng.resolve_releases(fleet, ["pc2", "node3"], [SERVICE], eng.at_tag("T2"),
                                              registry)
    assert problems == [] and len(registry.asked) == 1
    assert [(h, r.service, r.tag, r.digest) for h, rs in releases.items() for r in rs] == [
        ("pc2", SERVICE, "T2", "sha256:T2"), ("node3", SERVICE, "T2", "sha256:T2")]
    registry = Registry(missing={registry.asked[0][0]})
    releases, problems = eng.resolve_releases(fleet, ["pc2", "node3"], [SERVICE], eng.at_tag("T2"),
                                              registry)
    assert releases == {} and len(registry.asked) == 1
    assert problems == [f"{image_for(fleet, SERVICE, 'pc2', 'T2').ref}: not in the registry"]


def test_the_look_ups_run_together_and_each_target_is_asked_once(fleet, monkeypatch):
    """Every image of a rollout is looked up at once (a registry an ocean away answers in one
    round trip's time, not one per image); a target (rollback's notes it) is asked once."""
    import gevent

    monkeypatch.setenv("HF_TOKEN", "hunter2-secret-value")
    fleet = three_hosts(fleet)
    in_flight, most = [0], [0]

    class Slow(Registry):
        def manifest_digest(self, path, tag):
            in_flight[0] += 1
            most[0] = max(most[0], in_flight[0])
            gevent.sleep(0.05)
            in_flight[0] -= 1
            return super().manifest_digest(path, tag)
    registry, asked = Slow(), []

    def target(host, service):
        asked.append((host, service))
        return ("T2", None)
    releases, problems = eng.resolve_releases(fleet, ["mainpc", "pc2", "node3"], None, target,
                                              registry)
    images = {image_for(fleet, s, h, "T2").ref for h in ("mainpc", "pc2", "node3")
              for s in fleet.services_on(h)}
    assert problems == [] and len(registry.asked) == len(images) >= 3
    assert most[0] == len(images)                   # all in flight together
    assert sorted(asked) == sorted(set(asked))       # each (host, service) once
    assert [r.service for r in releases["mainpc"]] == fleet.services_on("mainpc")


def test_a_target_with_a_digest_is_not_looked_up_and_none_leaves_the_service_out(fleet):
    fleet = three_hosts(fleet)
    registry = Registry()
    target = {("pc2", SERVICE): ("T1", "sha256:pinned")}
    releases, problems = eng.resolve_releases(fleet, ["pc2", "node3"], None,
                                              lambda h, s: target.get((h, s)), registry)
    assert registry.asked == [] and problems == []
    assert {h: [(r.service, r.digest) for r in rs] for h, rs in releases.items()} == {
        "pc2": [(SERVICE, "sha256:pinned")]}


def test_a_services_secrets_are_in_its_release_as_versions_never_values(fleet, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hunter2-secret-value")
    fleet = three_hosts(fleet)
    releases, _ = eng.resolve_releases(fleet, ["mainpc"], ["model_ops_coordinator"],
                                       eng.at_tag("T2"), Registry())
    [mine] = releases["mainpc"]
    assert set(mine.secret_versions) == {"HF_TOKEN"} and "hunter2" not in mine.config


def test_host_problems_say_whether_the_profile_is_missing_or_different(fleet):
    fleet = three_hosts(fleet)
    good = fleet.profile_of("mainpc").content_hash()
    facts = {"mainpc": RolloutFacts(docker_active=True, profile_hash=good),
             "pc2": RolloutFacts(docker_active=True, profile_hash="0" * 64),
             "node3": RolloutFacts(docker_active=True, profile_hash="")}
    assert eng.host_problems(fleet, facts, False, 0) == [
        "pc2: machine profile differs from the spec (run `rig bootstrap`)",
        "node3: machine profile missing (run `rig bootstrap`)"]


# -- failure policies and the ledger --------------------------------------------------------------------
def test_auto_rollback_none_leaves_the_wave_and_says_so(fleet):
    fleet = three_hosts(fleet, auto_rollback="none")
    session = session_running(fleet, failing={("mainpc", SERVICE)})
    outcome = engine(fleet, session).run(WAVES, changes_for(fleet, session))
    assert not outcome.ok
    assert "auto_rollback: none, so the wave's hosts were left as they are" in outcome.lines
    assert [n for n, _ in session.deploys()] == ["roll_out", "record"]
    assert session.running("mainpc", SERVICE).digest == "sha256:new"
    [line] = ledger(session)["mainpc"]
    assert line["result"] == "failed"


def test_with_auto_rollback_none_a_healthy_host_of_a_failed_wave_is_recorded_ok(fleet):
    fleet = three_hosts(fleet, auto_rollback="none")
    session = session_running(fleet, failing={("node3", SERVICE)})
    engine(fleet, session).run([["mainpc"], ["pc2", "node3"]], changes_for(fleet, session))
    entries = ledger(session)
    assert [(e["result"], e.get("reason")) for e in entries["pc2"]] == [
        ("ok", "healthy; the wave failed on another host or service")]
    assert entries["node3"][0]["result"] == "failed"


def test_a_fleet_rollback_that_fails_on_an_earlier_host_is_in_its_ledger_line(fleet):
    fleet = three_hosts(fleet, auto_rollback="fleet")
    session = session_running(fleet, failing={("pc2", SERVICE)}, rollback_fails={"mainpc"})
    outcome = engine(fleet, session).run(WAVES, changes_for(fleet, session))
    back = [e for e in ledger(session)["mainpc"] if e["action"] == "auto-rollback"]
    assert [(e["result"], e["reason"], e["tag"], e["digest"], e["previous_digest"]) for e in back] \
        == [("rollback_failed", "wave 2 failed (auto_rollback: fleet)", "T1", "sha256:old",
             "sha256:new")]
    assert "  mainpc: ROLLBACK FAILED: check it by hand" in outcome.lines
    assert "    mainpc: Roll back | restore previous" in outcome.lines
    assert not any(line.startswith("    pc2: ") for line in outcome.lines)     # restored fine
    assert "  pc2: serving its previous version (restored and healthy: " \
        f"{SERVICE})" in outcome.lines


def test_a_failed_gate_is_reported_with_its_answer_and_its_last_eight_log_lines(fleet):
    fleet = three_hosts(fleet)
    session = session_running(fleet, failing={("mainpc", SERVICE)})
    real = session.shell

    def shell(name, command, stdin=None, timeout=None, retry=False):
        if "docker logs" in command:
            from tasks.util import Shell
            return Shell(True, "".join(f"line {i}\n" for i in range(12)), [])
        return real(name, command, stdin, timeout)
    session.shell = shell
    outcome = engine(fleet, session).run(WAVES, changes_for(fleet, session))
    start = outcome.lines.index("wave 1 (canary) failed on mainpc")
    assert outcome.lines[start + 1:start + 10] == [
        f'  mainpc {SERVICE} T2: unhealthy 3 times in a row; answered: 200 {{"status": '
        '"degraded"}', *[f"    | line {i}" for i in range(4, 12)]]


def test_a_gate_that_answered_nothing_says_so_and_a_short_secret_is_not_masked(fleet):
    fleet = three_hosts(fleet)
    session = session_running(fleet)
    rollout = engine(fleet, session)
    rollout.secrets._read[SERVICE] = {"SHORT": Secret("abc", "env"), "KEY": Secret("wxyz", "env")}
    lines = rollout._failure_lines(1, "canary", ["mainpc"],
                                   {("mainpc", SERVICE): Verdict(False, "abc wxyz", "",
                                                                 logs=["wxyz abc"])},
                                   {"mainpc": changes_for(fleet, session)["mainpc"]}, {})
    assert lines == ["wave 1 (canary) failed on mainpc",
                     f"  mainpc {SERVICE} T2: abc [secret]; answered: nothing",
                     "    | [secret] abc"]


def test_a_gate_loop_that_crashes_fails_that_hosts_gates(fleet, monkeypatch):
    fleet = three_hosts(fleet)
    session = session_running(fleet)

    def boom(*args, **kwargs):
        raise RuntimeError("bug")
    monkeypatch.setattr(eng.probing, "gate", boom)
    verdicts = engine(fleet, session).gate({"mainpc": [SERVICE], "pc2": []})
    assert {k: (v.passed, v.reason) for k, v in verdicts.items()} == {
        ("mainpc", SERVICE): (False, "gate error: bug")}


def test_a_lost_host_says_what_to_run_when_it_is_back(fleet):
    c = Change("pc2", release(fleet, "pc2"), box(fleet, "pc2"))
    assert eng._lost_lines("pc2", "Socket is closed", [c], "rollout", "T2") == [
        "    pc2 LOST: Socket is closed",
        f"    last seen: {SERVICE} T1 -> T2 (unknown which); its lock is still held",
        "    when it answers again: `rig status`, then `rig rollout --tag T2 --break-lock` "
        "finishes the job"]
    done = Change("pc2", release(fleet, "pc2"), box(fleet, "pc2", "sha256:new", "T2"),
                  {"tag": "T2", "digest": "sha256:new"})
    first = Change("pc2", release(fleet, "pc2"), None)
    assert eng._lost_lines("pc2", "gone", [done], "rollback", "previous")[1:] == [
        "    last seen: nothing to change; its lock is still held",
        "    when it answers again: `rig status`, then `rig rollback --break-lock` finishes the job"]
    assert eng._lost_lines("pc2", "gone", [first], "rollout", "T2")[1] == (
        f"    last seen: {SERVICE} nothing -> T2 (unknown which); its lock is still held")


# -- what a finished rollout cleans up -------------------------------------------------------------------
def finished_of(session):
    return [kw["finished"] for name, _, kw in session.runs if name == "record"][-1]


def test_cleanup_removes_a_promoted_canarys_kept_containers_only_when_the_rollout_passed(fleet):
    fleet = three_hosts(fleet)
    session = session_running(fleet)
    outcome = engine(fleet, session).run([["pc2"], ["node3"]], changes_for(fleet, session),
                                         cleanup={"mainpc": [SERVICE]})
    assert outcome.ok and finished_of(session) == {"pc2": [SERVICE], "node3": [SERVICE],
                                                   "mainpc": [SERVICE]}
    session = session_running(fleet, failing={("node3", SERVICE)})
    engine(fleet, session).run([["pc2"], ["node3"]], changes_for(fleet, session),
                               cleanup={"mainpc": [SERVICE]})
    assert finished_of(session) == {"pc2": [SERVICE]}


def test_a_finished_rollout_cleans_up_what_an_earlier_killed_one_of_the_same_version_kept(
        fleet):
    """An earlier rollout of T2 killed in its last wave: its first wave's host runs T2,
    recorded, with T1 kept as -prev for a rollback that never came. The rerun has nothing to
    change there; once it finished, the kept one goes. A live kept one (it serves: _strays),
    or a host that runs something else, keeps its -prev; a failed rerun removes nothing."""
    fleet = three_hosts(fleet)

    def rerun(**faults):
        session = session_running(fleet, **faults)
        done = session.facts_by_host["mainpc"]      # wave 1 of the killed rollout: finished
        done.containers = {cmd.current(SERVICE): box(fleet, "mainpc", "sha256:new", "T2"),
                           cmd.previous(SERVICE): dataclasses.replace(
                               box(fleet, "mainpc", state="exited"), name=cmd.previous(SERVICE))}
        done.state = {SERVICE: {"tag": "T2", "digest": "sha256:new"}}
        other = session.facts_by_host["node3"]      # runs T1 still, with an old kept one
        other.containers[cmd.previous(SERVICE)] = dataclasses.replace(
            box(fleet, "node3", "sha256:older", "T0", state="exited"), name=cmd.previous(SERVICE))
        outcome = engine(fleet, session).run([["mainpc"], ["pc2", "node3"]],
                                             changes_for(fleet, session))
        return outcome, session
    outcome, session = rerun()
    assert outcome.ok and finished_of(session) == {"mainpc": [SERVICE], "pc2": [SERVICE],
                                                   "node3": [SERVICE]}
    outcome, session = rerun(failing={("node3", SERVICE)})
    assert not outcome.ok and "mainpc" not in finished_of(session)
    changes = {"mainpc": [Change("mainpc", release(fleet, "mainpc"),
                                 box(fleet, "mainpc", "sha256:new", "T2"),
                                 {"tag": "T2", "digest": "sha256:new"})]}
    facts = RolloutFacts(containers={
        cmd.current(SERVICE): box(fleet, "mainpc", "sha256:new", "T2"),
        cmd.previous(SERVICE): dataclasses.replace(box(fleet, "mainpc", state="exited"),
                                                   name=cmd.previous(SERVICE))})
    rollout = engine(fleet, session_running(fleet))
    assert rollout._leftovers(changes, {"mainpc": facts}) == {"mainpc": [SERVICE]}
    assert rollout._leftovers(changes, {"mainpc": None}) == {}
    alone = RolloutFacts(containers={cmd.current(SERVICE): facts.containers[cmd.current(SERVICE)]})
    assert rollout._leftovers(changes, {"mainpc": alone}) == {}     # nothing kept: no step
    live = dataclasses.replace(facts, proxy={SERVICE: {"a": "live", "b": "maint"}})
    live.containers = {**facts.containers, cmd.previous(SERVICE): dataclasses.replace(
        box(fleet, "mainpc", "sha256:new", "T2"), name=cmd.previous(SERVICE), slot="a")}
    live.containers[cmd.current(SERVICE)] = dataclasses.replace(
        box(fleet, "mainpc", "sha256:x", "T3"), slot="b")
    assert live.live_previous(SERVICE) and rollout._leftovers(changes, {"mainpc": live}) == {}
    regate = {"mainpc": [dataclasses.replace(changes["mainpc"][0], recorded=None)]}
    assert rollout._leftovers(regate, {"mainpc": facts}) == {}     # not yet gated: it stays


def test_a_paused_canary_keeps_its_kept_containers_even_with_cleanup(fleet):
    fleet = three_hosts(fleet)
    session = session_running(fleet)
    outcome = engine(fleet, session).run(WAVES, changes_for(fleet, session), pause="manual",
                                         cleanup={"pc2": [SERVICE]})
    assert outcome.paused and finished_of(session) == {}


def test_record_overrides_put_back_or_drop_a_state_entry(fleet):
    fleet = three_hosts(fleet)
    session = session_running(fleet)
    rollout = engine(fleet, session)
    states = {"mainpc": {SERVICE: {"tag": "T2"}, "other": {"tag": "X"}}}
    rollout.record({}, states, {"mainpc": []}, {"mainpc": {SERVICE: {"tag": "T1"},
                                                           "other": None}})
    assert states == {"mainpc": {SERVICE: {"tag": "T1"}}}
    [(_, hosts, kwargs)] = session.runs
    assert hosts == ["mainpc"] and kwargs["finished"] == {"mainpc": []}
    rollout.record({}, states)
    assert len(session.runs) == 1                    # nothing to record: no deploy at all


def test_a_record_that_a_host_did_not_answer_is_a_failure_of_the_run(fleet):
    fleet = three_hosts(fleet)
    session = session_running(fleet)
    rollout = engine(fleet, session)
    session.run = lambda deploy, hosts=None, **kw: {"mainpc": HostResult("mainpc",
                                                                         failed=["disk full"])}
    rollout.record({"mainpc": [], "pc2": []}, {"mainpc": {}, "pc2": {}})
    assert rollout.record_failures == [
        "mainpc: could not write the ledger/state.json (disk full); `rig history` and `rig "
        "status` may be behind until the next run",
        "pc2: could not write the ledger/state.json (did not answer); `rig history` and `rig "
        "status` may be behind until the next run"]


# -- a paused rollout's record ---------------------------------------------------------------------------
def test_a_paused_record_without_facts_read_has_no_state_for_the_canary(fleet):
    fleet = three_hosts(fleet)
    session = session_running(fleet)
    rollout = engine(fleet, session)
    changes = changes_for(fleet, session)
    record = rollout.paused_record(WAVES, changes)
    assert record["mainpc"][SERVICE]["state"] is None
    assert record["mainpc"][SERVICE]["from"]["digest"] == "sha256:old"
    rollout.facts()
    assert rollout.paused_record(WAVES, changes)["mainpc"][SERVICE]["state"] == {
        "tag": "T1", "digest": "sha256:old"}
    assert rollout.paused_record([], changes) == {}


def test_the_canary_records_only_what_it_changed_the_batches_everything(fleet):
    fleet = three_hosts(fleet)
    session = session_running(fleet)
    session.facts_by_host["mainpc"].containers = {cmd.current(SERVICE): box(
        fleet, "mainpc", "sha256:new", "T2")}
    session.facts_by_host["mainpc"].state = {SERVICE: {"tag": "T2", "digest": "sha256:new"}}
    session.facts_by_host["pc2"].containers = dict(session.facts_by_host["mainpc"].containers)
    session.facts_by_host["pc2"].state = dict(session.facts_by_host["mainpc"].state)
    rollout = engine(fleet, session)
    rollout.facts()
    record = rollout.paused_record(WAVES, changes_for(fleet, session))
    assert set(record) == {"pc2", "node3"}
    assert json.dumps(record["pc2"][SERVICE]["to"]) == json.dumps(eng.release_doc(
        release(fleet, "pc2")))


@pytest.mark.parametrize("number", [1, 2])
def test_the_wave_kind_is_canary_first_then_batch(fleet, number):
    fleet = three_hosts(fleet)
    session = session_running(fleet, failing={(WAVES[number - 1][0], SERVICE)})
    outcome = engine(fleet, session).run(WAVES, changes_for(fleet, session))
    kind = "canary" if number == 1 else "batch"
    assert f"wave {number} ({kind}) failed on {WAVES[number - 1][0]}" in outcome.lines


# -- what the operator is told ----------------------------------------------------------------------------
def in_order(said, expected):
    """Every expected line was said, in this order (progress lines may come between)."""
    positions = [said.index(line) for line in expected]
    return positions == sorted(positions)


def test_the_operator_hears_each_wave_its_gates_and_the_pause(fleet):
    fleet = three_hosts(fleet)
    session = session_running(fleet)
    session.facts_by_host["pc2"].containers = {cmd.current(SERVICE): box(fleet, "pc2",
                                                                         "sha256:new", "T2")}
    session.facts_by_host["pc2"].state = {SERVICE: {"tag": "T2", "digest": "sha256:new"}}
    said = []
    outcome = engine(fleet, session, said).run(WAVES, changes_for(fleet, session), pause=30.0)
    assert outcome.ok
    assert in_order(said, [
        "wave 1/3 (canary) mainpc: 1 service(s) to start",
        f"  mainpc     {SERVICE}: healthy for 2.0 s (2.0 s)",
        "pause 30 s: watching the canary's health before the next wave",
        "pause over: the canary stayed healthy for 30 s",
        "wave 2/3 (batch) pc2: nothing to change",
        "wave 3/3 (batch) node3: 1 service(s) to start",
        f"  node3      {SERVICE}: healthy for 2.0 s (2.0 s)"])
    assert outcome.gate_seconds == 2.0 + 30.0 + 2.0


def test_each_wave_swaps_on_what_pre_flight_read_without_reading_again(fleet):
    """The hosts are locked from pre-flight on and a wave's hosts untouched until their wave:
    the swap decides on the pre-flight read (tasks/rollout.py roll_out's `known`)."""
    fleet = three_hosts(fleet)
    session = session_running(fleet)
    rollout = engine(fleet, session)
    facts = rollout.facts()
    assert rollout.run(WAVES, changes_for(fleet, session), facts).ok
    swaps = [(hosts, kw["known"]) for name, hosts, kw in session.runs if name == "roll_out"]
    assert [hosts for hosts, _ in swaps] == WAVES and all(known is facts for _, known in swaps)


def test_the_operator_hears_the_signals_and_the_rollback(fleet):
    import signal

    fleet = three_hosts(fleet)
    session = session_running(fleet, loading={("mainpc", SERVICE): 60})
    said = []
    rollout = engine(fleet, session, said)
    probes = []

    def on_shell(s, host, command):
        if "probe $(date" in command:
            probes.append(host)
            if len(probes) == 2:
                rollout._interrupt(signal.SIGTERM)
                rollout._interrupt(signal.SIGTERM)
                rollout._interrupt(signal.SIGTERM)      # a third: nothing more to do
    session.on_shell = on_shell
    outcome = rollout.run(WAVES, changes_for(fleet, session))
    assert outcome.interrupted and outcome.signal == signal.SIGTERM
    assert [line for line in said if line.startswith("SIGTERM")] == [
        "SIGTERM: finishing the current wave (its gates decide), then stopping; again to stop "
        "the gates and roll the wave back now",
        "SIGTERM again: stopping the gates, rolling the wave back (a wave whose gates all passed "
        "already finishes)"]
    assert "rolling back mainpc (auto_rollback: wave)" in said


def test_a_host_the_deploy_did_not_report_on_is_not_gated_and_fails_its_wave(fleet):
    fleet = three_hosts(fleet)
    session = session_running(fleet)
    real = session.run

    def run(deploy, hosts=None, **kwargs):
        results = real(deploy, hosts=hosts, **kwargs)
        if deploy is eng.roll_out:
            results.pop("mainpc", None)
        return results
    session.run = run
    outcome = engine(fleet, session).run(WAVES, changes_for(fleet, session))
    assert not outcome.ok
    assert f"  mainpc {SERVICE}: not started (did not answer)" in outcome.lines
    [line] = ledger(session)["mainpc"]
    assert (line["result"], line["reason"]) == ("failed", "not started: an earlier step failed")


def test_a_restore_whose_gate_fails_is_a_failed_rollback_naming_the_gate(fleet):
    fleet = three_hosts(fleet)
    session = session_running(fleet, failing={("mainpc", SERVICE)})

    def still_failing(s):
        if s.runs[-1][0] == "roll_back":
            s.failing.add(("mainpc", SERVICE))
    session.after_run = still_failing
    outcome = engine(fleet, session).run(WAVES, changes_for(fleet, session))
    start = outcome.lines.index("  mainpc: ROLLBACK FAILED: check it by hand")
    assert outcome.lines[start + 1] == (f"    {SERVICE}: restore gate: unhealthy 3 times in a "
                                        'row; 200 {"status": "degraded"}')
    [line] = ledger(session)["mainpc"]
    assert line["result"] == "rollback_failed"


def test_the_engine_redacts_with_the_secret_store_it_was_given(fleet):
    from rig.secrets import SecretStore

    fleet = three_hosts(fleet)
    store = SecretStore(fleet)
    store._read[SERVICE] = {"KEY": Secret("wxyz-1234", "env KEY")}
    rollout = Rollout(session_running(fleet), fleet, lambda line: None, "rollout", "T2", store)
    assert rollout.redact("token wxyz-1234 seen") == "token [secret] seen"


def test_take_locks_without_options_does_not_break_a_stale_lock(fleet):
    import time as _time

    fleet = three_hosts(fleet)
    session = session_running(fleet)
    session.lock_files["pc2"] = json.dumps({"id": "bo-1", "operator": "bo", "machine": "far",
                                            "heartbeat": _time.time() - 7200}).encode()
    rollout = engine(fleet, session)
    [problem] = rollout.take_locks()
    assert problem.startswith("pc2: locked by bo") and session.lock("pc2")["id"] == "bo-1"
    assert not session.locks - {"pc2"}
    session.lock_files["pc2"] = json.dumps({"id": "bo-1", "operator": "bo", "machine": "far",
                                            "heartbeat": _time.time()}).encode()
    [problem] = rollout.take_locks(break_lock=True)          # live: only with --force
    assert "its heartbeat is fresh, so --break-lock refuses" in problem


def test_a_host_whose_containers_changed_before_it_was_locked_is_refused(fleet):
    """Read, then another rig came and went (it left a kept container), then our lock: the
    waves would act on a stale read, so nothing starts; every lock taken is given back."""
    fleet = three_hosts(fleet)
    session = session_running(fleet)
    rollout = engine(fleet, session)
    rollout.facts()
    assert rollout.take_locks() == [] and session.locks == set(HOSTS)   # unchanged: locked
    rollout.release_locks()
    import dataclasses

    session.facts_by_host["pc2"].containers[cmd.previous(SERVICE)] = dataclasses.replace(
        box(fleet, "pc2", state="exited"), name=cmd.previous(SERVICE))
    assert rollout.take_locks() == [
        f"pc2: changed between the pre-flight read and taking the lock (rig-{SERVICE}-prev): "
        "another rollout, `rig maintenance`, or by hand? run the command again"]
    assert rollout.release_locks() == [] and session.locks == set()


@pytest.mark.parametrize("change, named", [
    # `rig maintenance on` came and went between the read and the lock
    (lambda f: f.state[SERVICE].update(maintenance=True), f"{SERVICE}: maintenance"),
    # ... or `rig maintenance off`, or a switch: the proxy's live slot moved
    (lambda f: f.proxy.update({SERVICE: {"a": "live", "b": "maint"}}), f"{SERVICE}: proxy"),
])
def test_a_host_whose_maintenance_or_proxy_changed_before_it_was_locked_is_refused(
        fleet, change, named):
    """A rollout would act on the read: undo an operator's maintenance, or keep a 503 the
    operator just ended (and remove the container it serves). Nothing starts."""
    fleet = three_hosts(fleet)
    session = session_running(fleet)
    rollout = engine(fleet, session)
    rollout.facts()
    change(session.facts_by_host["node3"])
    assert rollout.take_locks() == [
        f"node3: changed between the pre-flight read and taking the lock ({named}): another "
        "rollout, `rig maintenance`, or by hand? run the command again"]
    assert session.locks == set()


def test_a_proxy_not_read_either_time_is_no_change(fleet):
    fleet = three_hosts(fleet)
    session = session_running(fleet)
    rollout = engine(fleet, session)
    rollout.facts()
    session.facts_by_host["node3"].proxy = None
    assert rollout.take_locks() == []


def test_a_lock_broken_by_force_goes_back_to_its_live_holder_when_the_hosts_changed(fleet):
    """--break-lock --force took over a live rollout's locks, then found the hosts changed
    since its read (that rollout is swapping): the taker gives up, and the live holder gets its
    locks back exactly as they were, on every host, not deleted."""
    import dataclasses
    import time

    fleet = three_hosts(fleet)
    session = session_running(fleet)
    theirs = {h: json.dumps({"operator": "al@x", "since": 1, "pid": 7, "id": f"al-{h}",
                             "machine": "elsewhere", "heartbeat": time.time()}).encode()
              for h in HOSTS}
    session.lock_files.update(theirs)
    rollout = engine(fleet, session)
    rollout.facts()
    session.facts_by_host["pc2"].containers[cmd.previous(SERVICE)] = dataclasses.replace(
        box(fleet, "pc2", state="exited"), name=cmd.previous(SERVICE))
    [problem] = rollout.take_locks(break_lock=True, force=True)
    assert problem.startswith("pc2: changed between the pre-flight read")
    assert rollout.release_locks() == []
    assert session.lock_files == theirs


def test_a_host_whose_containers_cannot_be_read_again_once_locked_is_refused(fleet):
    from tasks.util import Shell

    fleet = three_hosts(fleet)
    session = session_running(fleet)
    plain = session.shell

    def shell(name, command, stdin=None, timeout=None, retry=False):
        if name == "node3" and str(command) == cmd.recheck_command().line:
            return Shell(False, "", ["Cannot connect to the Docker daemon"])
        return plain(name, command, stdin, timeout, retry)
    session.shell = shell
    rollout = engine(fleet, session)
    rollout.facts()
    assert rollout.take_locks() == ["node3: could not read its containers again once locked: "
                                    "Cannot connect to the Docker daemon"]


@pytest.mark.parametrize("pause,waves,failing,watched", [
    (1.0, WAVES, False, True),                 # a second is a pause too
    (30.0, [["mainpc"]], False, False),        # nothing comes after the canary
    (30.0, WAVES, True, False),                # a canary that failed is not watched
])
def test_which_canary_is_watched(fleet, pause, waves, failing, watched):
    fleet = three_hosts(fleet)
    session = session_running(fleet, failing={("mainpc", SERVICE)} if failing else ())
    said = []
    engine(fleet, session, said).run(waves, changes_for(fleet, session), pause=pause)
    assert any(line.startswith(f"pause {pause:g} s: watching") for line in said) is watched


def test_a_pause_of_zero_seconds_watches_nothing(fleet):
    fleet = three_hosts(fleet)
    session = session_running(fleet)
    said = []
    outcome = engine(fleet, session, said).run(WAVES, changes_for(fleet, session), pause=0.0)
    assert outcome.ok and not any(line.startswith("pause") for line in said)
    assert outcome.gate_seconds == 3 * 2.0


def test_a_restore_the_runner_did_not_report_on_is_a_failed_rollback(fleet):
    fleet = three_hosts(fleet)
    session = session_running(fleet, failing={("mainpc", SERVICE)})
    real = session.run

    def run(deploy, hosts=None, **kwargs):
        results = real(deploy, hosts=hosts, **kwargs)
        if deploy is eng.roll_back:
            results.pop("mainpc", None)
        return results
    session.run = run
    outcome = engine(fleet, session).run(WAVES, changes_for(fleet, session))
    assert "  mainpc: ROLLBACK FAILED: check it by hand" in outcome.lines
    assert not any(line.startswith("    mainpc: ") for line in outcome.lines)
    [line] = ledger(session)["mainpc"]
    assert line["result"] == "rollback_failed"


def test_a_lost_host_is_reported_lost_not_as_a_failed_step(fleet):
    fleet = three_hosts(fleet)
    session = session_running(fleet, frozen={"pc2"})
    outcome = engine(fleet, session).run(WAVES, changes_for(fleet, session))
    start = outcome.lines.index("  pc2: LOST, not rolled back")
    assert outcome.lines[start + 1] == "    pc2 LOST: lost earlier (no answer within 12 s)"
    assert "    pc2: " not in outcome.lines


def test_a_restored_container_never_recorded_as_gated_is_recorded_once_its_restore_gate_passes(fleet):
    """mainpc runs T1.5, started by a rollout killed mid-gate (state.json still says T1). T2 fails
    its gate and T1.5 is put back and passes its restore gate: the ledger says so and state.json
    names T1.5, so `rig plan` and `rig status` agree with what runs."""
    fleet = three_hosts(fleet)
    session = session_running(fleet, failing={("mainpc", SERVICE)})
    session.facts_by_host["mainpc"].containers = {cmd.current(SERVICE): box(
        fleet, "mainpc", "sha256:mid", "T1.5")}
    session.after_run = lambda s: s.failing.discard(("mainpc", SERVICE)) \
        if s.runs[-1][0] == "roll_back" else None
    outcome = engine(fleet, session).run(WAVES, changes_for(fleet, session))
    assert "  mainpc: serving its previous version (restored and healthy: " \
        f"{SERVICE})" in outcome.lines
    failed, restored = ledger(session)["mainpc"]
    assert failed["result"] == "failed" and failed["digest"] == "sha256:new"
    assert (restored["action"], restored["result"], restored["tag"], restored["digest"]) == (
        "auto-rollback", "ok", "T1.5", "sha256:mid")
    assert restored["reason"] == "restored T1.5 passed its restore gate (it was running, never " \
        "recorded as gated)"
    [states] = [kw["states"] for name, _, kw in session.runs if name == "record"]
    assert states["mainpc"][SERVICE]["digest"] == "sha256:mid"
    assert states["mainpc"][SERVICE]["previous"] == {"tag": "T1", "digest": "sha256:old"}


def test_a_restore_of_what_state_json_names_adds_no_ledger_line(fleet):
    fleet = three_hosts(fleet)
    session = session_running(fleet, failing={("mainpc", SERVICE)})
    session.after_run = lambda s: s.failing.discard(("mainpc", SERVICE)) \
        if s.runs[-1][0] == "roll_back" else None
    engine(fleet, session).run(WAVES, changes_for(fleet, session))
    assert [line["result"] for line in ledger(session)["mainpc"]] == ["failed"]


def signal_on_first_probe(rollout, host: str, number: int):
    """An on_shell hook: the signal arrives once, with the first health probe of `host`."""
    sent = []

    def once(session, name, command):
        if "probe $(date" in command and name == host and not sent:
            sent.append(rollout._interrupt(number))
    return once


def test_a_signal_during_the_last_wave_that_finishes_is_still_reported(fleet):
    """SIGTERM while the last wave gates: the wave finishes and is recorded ok, and the exit
    says the signal came (143), not 0 as if nobody had asked to stop."""
    import signal

    fleet = three_hosts(fleet)
    session = session_running(fleet)
    rollout = engine(fleet, session)
    session.on_shell = signal_on_first_probe(rollout, "node3", signal.SIGTERM)
    outcome = rollout.run(WAVES, changes_for(fleet, session))
    assert (outcome.ok, outcome.interrupted, outcome.signal) == (True, True, signal.SIGTERM)
    assert outcome.lines[-1] == "the signal came during the last wave, which finished: nothing is " \
        "left to do"
    assert [line["result"] for line in ledger(session)["node3"]] == ["ok"]


def test_an_unreadable_state_json_is_written_whole_again_by_a_rollout_that_changes_nothing(fleet):
    fleet = three_hosts(fleet)
    session = session_running(fleet)
    session.facts_by_host["pc2"].state_rebuilt = True       # rebuilt from the labels at read
    rollout = engine(fleet, session)
    assert rollout.take_locks() == []
    nothing = {h: [] for h in HOSTS}
    outcome = rollout.run(WAVES, nothing)
    assert outcome.ok
    [(name, _, kwargs)] = [r for r in session.runs if r[0] == "record"]
    assert kwargs["repair"] == ("pc2",) and kwargs["entries"] == {}
    assert not session.facts_by_host["pc2"].state_rebuilt     # written
    rollout.locks.release()


def test_an_ungated_version_whose_restore_failed_is_not_recorded(fleet):
    fleet = three_hosts(fleet)
    session = session_running(fleet, failing={("mainpc", SERVICE)})
    session.facts_by_host["mainpc"].containers = {cmd.current(SERVICE): box(
        fleet, "mainpc", "sha256:mid", "T1.5")}

    def still_failing(s):
        if s.runs[-1][0] == "roll_back":
            s.failing.add(("mainpc", SERVICE))
    session.after_run = still_failing
    engine(fleet, session).run(WAVES, changes_for(fleet, session))
    assert [line["result"] for line in ledger(session)["mainpc"]] == ["rollback_failed"]


def test_a_service_that_ran_nothing_before_is_restored_to_nothing_without_a_record(fleet):
    """state.json names T1 but nothing runs (removed by hand): the failed start goes back to
    running nothing, and no 'restored' line is written for a version that does not run."""
    fleet = three_hosts(fleet)
    session = session_running(fleet, failing={("mainpc", SERVICE)})
    session.facts_by_host["mainpc"].containers = {}
    session.after_run = lambda s: s.failing.discard(("mainpc", SERVICE)) \
        if s.runs[-1][0] == "roll_back" else None
    engine(fleet, session).run(WAVES, changes_for(fleet, session))
    assert [line["action"] for line in ledger(session)["mainpc"]] == ["rollout"]


def test_a_signal_in_an_earlier_wave_is_not_said_to_have_come_in_the_last(fleet):
    import signal

    fleet = three_hosts(fleet)
    session = session_running(fleet)
    rollout = engine(fleet, session)
    session.on_shell = signal_on_first_probe(rollout, "mainpc", signal.SIGINT)
    outcome = rollout.run(WAVES, changes_for(fleet, session))
    assert outcome.interrupted and outcome.signal == signal.SIGINT
    assert outcome.lines[0].startswith("interrupted before wave 2: pc2 not touched")
    assert not any("during the last wave" in line for line in outcome.lines)


def test_a_state_json_is_repaired_only_where_this_rollout_holds_the_lock_and_the_host_answered(fleet):
    fleet = three_hosts(fleet)
    session = session_running(fleet)
    for host in HOSTS:
        session.facts_by_host[host].state_rebuilt = True
    rollout = engine(fleet, session)
    assert rollout.take_locks() == []
    facts = rollout.facts()
    facts["node3"] = None                                     # it did not answer the read
    rollout.locks.locked.remove("pc2")                        # pc2's lock is not this rollout's
    rollout.run(WAVES, {h: [] for h in HOSTS}, facts=facts)
    [(_, hosts, kwargs)] = [r for r in session.runs if r[0] == "record"]
    assert kwargs["repair"] == ("mainpc",) and hosts == ["mainpc"]
    rollout.locks.release()


def test_a_host_lost_during_its_restore_gate_is_named_lost_not_a_failed_rollback(fleet):
    """The restore ran, then the host froze while its restore gate probed: rig cannot know
    which version serves there, and says what to run when it answers (not "check it by hand")."""
    fleet = three_hosts(fleet)
    session = session_running(fleet, failing={("mainpc", SERVICE)})

    def freeze(s, host, command):
        if host == "mainpc" and "probe $(date" in command and s.deploys()[-1][0] == "roll_back":
            s.frozen.add("mainpc")
    session.on_shell = freeze
    outcome = engine(fleet, session).run(WAVES, changes_for(fleet, session))
    assert not outcome.ok
    start = outcome.lines.index("  mainpc: LOST during its rollback: which version serves "
                                "is unknown")
    assert outcome.lines[start + 2].startswith("    mainpc LOST: no answer within ")
    assert outcome.lines[start + 4] == ("    when it answers again: `rig status`, then `rig "
                                        "rollout --tag T2 --break-lock` finishes the job")
