"""The rollout's control flow without hosts: the engine and the ops layer against a fake fleet
(tests/unit/fakes.py) that answers like hosts do: containers swap, probes answer from a script,
the lock file follows the lock scripts' rules, time is a fake clock. Waves, the canary, what
counts as a change, rollback scope, Ctrl-C between waves, locks on every path, ledger rows."""

from __future__ import annotations

import pytest

from rig.commands import container as cmd
from rig.errors import RigError
from rig.ops import rollout as ops
from rig.rollout.engine import Change, Rollout
from tasks.rollout import Container, RolloutFacts
from tasks.util import Shell

from .fakes import FakeJob, FakeSession

SERVICE = "affective_processing_center"  # runs on every host


def three_hosts(fleet, auto_rollback="wave"):
    hosts = {"mainpc": fleet.hosts["mainpc"], "pc2": fleet.hosts["pc2"], "node3": fleet.hosts["pc2"]}
    rollout = fleet.rollout.model_copy(update={"auto_rollback": auto_rollback})
    return fleet.model_copy(update={"hosts": hosts, "rollout": rollout})


def release(fleet, host, digest="sha256:new", tag="T2"):
    return cmd.Release(SERVICE, tag, "reg/affective", digest, fleet.profile_of(host).content_hash())


def running(fleet, host, digest="sha256:old", tag="T1", profile_hash=None):
    return Container(cmd.current(SERVICE), "running", SERVICE, tag, digest,
                     profile_hash or fleet.profile_of(host).content_hash())


def changes_for(fleet, session, digest="sha256:new"):
    return {h: [Change(h, release(fleet, h, digest), session.facts_by_host[h].running(SERVICE),
                       session.facts_by_host[h].state.get(SERVICE))]
            for h in session.hosts}


def engine(fleet, session):
    return Rollout(session, fleet, lambda line: None, "rollout", "T2")


def with_running(fleet, session, digest="sha256:old", tag="T1"):
    """Every host runs SERVICE at `digest`, recorded healthy in state.json."""
    for h in session.hosts:
        session.facts_by_host[h].containers = {cmd.current(SERVICE): running(fleet, h, digest, tag)}
        session.facts_by_host[h].state = {SERVICE: {"tag": tag, "digest": digest}}
    return session


def test_canary_first_then_batches_and_ledger_ok_rows(fleet):
    fleet = three_hosts(fleet)
    session = FakeSession(fleet, ["mainpc", "pc2", "node3"])
    outcome = engine(fleet, session).run([["mainpc"], ["pc2"], ["node3"]], changes_for(fleet, session))
    assert outcome.ok
    assert session.deploys() == [("roll_out", ["mainpc"]), ("switch", ["mainpc"]),
                                 ("record", ["mainpc"]),
                                 ("roll_out", ["pc2"]), ("switch", ["pc2"]), ("record", ["pc2"]),
                                 ("roll_out", ["node3"]), ("switch", ["node3"]),
                                 ("record", ["mainpc", "node3", "pc2"])]
    entries = session.runs[2][2]["entries"]["mainpc"]
    assert [(e["host"], e["service"], e["tag"], e["result"]) for e in entries] == [
        ("mainpc", SERVICE, "T2", "ok")]


@pytest.mark.parametrize("what", ["digest", "profile_hash"])
def test_a_container_differing_in_digest_or_profile_is_a_change(fleet, what):
    same = running(fleet, "mainpc", digest="sha256:new", tag="T2")
    ok = {"tag": "T2", "digest": "sha256:new"}  # state.json: its gate passed
    assert not Change("mainpc", release(fleet, "mainpc"), same, ok).needed
    other = {"digest": "sha256:old", "profile_hash": "0" * 64}[what]
    differs = running(fleet, "mainpc", **{"digest": "sha256:new", "tag": "T2", what: other})
    assert Change("mainpc", release(fleet, "mainpc"), differs, ok).needed
    assert Change("mainpc", release(fleet, "mainpc"), None).needed


def test_hosts_already_running_the_release_get_no_deploy(fleet):
    fleet = three_hosts(fleet)
    session = FakeSession(fleet, ["mainpc", "pc2", "node3"])
    session.facts_by_host["pc2"].containers = {
        cmd.current(SERVICE): running(fleet, "pc2", "sha256:new", "T2")}
    session.facts_by_host["pc2"].state = {SERVICE: {"tag": "T2", "digest": "sha256:new"}}
    outcome = engine(fleet, session).run([["mainpc"], ["pc2"], ["node3"]], changes_for(fleet, session))
    assert outcome.ok
    assert ("roll_out", ["pc2"]) not in session.deploys()


def test_failed_canary_rolls_back_the_wave_only_and_stops(fleet):
    fleet = three_hosts(fleet)
    session = FakeSession(fleet, ["mainpc", "pc2", "node3"], failing={("mainpc", SERVICE)})
    outcome = engine(fleet, session).run([["mainpc"], ["pc2"], ["node3"]], changes_for(fleet, session))
    assert not outcome.ok and not outcome.interrupted
    assert session.deploys() == [("roll_out", ["mainpc"]), ("roll_back", ["mainpc"]),
                                 ("record", ["mainpc"])]
    assert "later waves not touched: pc2, node3" in outcome.lines
    (entry,) = session.runs[2][2]["entries"]["mainpc"]
    assert entry["result"] == "failed"


def test_fleet_scope_rolls_back_every_touched_host(fleet):
    fleet = three_hosts(fleet, auto_rollback="fleet")
    session = FakeSession(fleet, ["mainpc", "pc2", "node3"], failing={("pc2", SERVICE)})
    outcome = engine(fleet, session).run([["mainpc"], ["pc2"], ["node3"]], changes_for(fleet, session))
    assert not outcome.ok
    rollbacks = [hosts for name, hosts in session.deploys() if name == "roll_back"]
    assert rollbacks == [["pc2", "mainpc"]]
    assert ("roll_out", ["node3"]) not in session.deploys()


def test_wave_scope_leaves_earlier_waves_on_the_new_version(fleet):
    fleet = three_hosts(fleet, auto_rollback="wave")
    session = FakeSession(fleet, ["mainpc", "pc2", "node3"], failing={("pc2", SERVICE)})
    engine(fleet, session).run([["mainpc"], ["pc2"], ["node3"]], changes_for(fleet, session))
    assert [hosts for name, hosts in session.deploys() if name == "roll_back"] == [["pc2"]]


def test_ctrl_c_stops_between_waves(fleet):
    fleet = three_hosts(fleet)
    session = FakeSession(fleet, ["mainpc", "pc2", "node3"])
    rollout = engine(fleet, session)
    session.after_run = lambda s: rollout._interrupt()
    outcome = rollout.run([["mainpc"], ["pc2"], ["node3"]], changes_for(fleet, session))
    assert outcome.interrupted and not outcome.ok
    assert [n for n, h in session.deploys() if n == "roll_out"] == ["roll_out"]
    assert any("interrupted before wave 2" in line for line in outcome.lines)


# -- the ops layer: locks on every path ---------------------------------------------------------
def execute(fleet, session, resolve=None, opts=None):
    rel = {h: [release(fleet, h)] for h in session.hosts}
    resolve = resolve or (lambda facts: (rel, [], []))
    return ops._execute(FakeJob(fleet, session), "rollout", "T2", session.hosts, resolve,
                        opts or ops.Options(verify=False), lambda line: None)


def test_locks_are_released_after_success_and_after_failure(fleet):
    fleet = three_hosts(fleet)
    ok_session = FakeSession(fleet, ["mainpc", "pc2", "node3"])
    assert execute(fleet, ok_session).ok and ok_session.locks == set()
    bad_session = FakeSession(fleet, ["mainpc", "pc2", "node3"], failing={("mainpc", SERVICE)})
    assert not execute(fleet, bad_session).ok and bad_session.locks == set()


def test_locks_are_released_when_the_engine_raises(fleet, monkeypatch):
    fleet = three_hosts(fleet)
    session = FakeSession(fleet, ["mainpc", "pc2", "node3"])

    def boom(*args, **kwargs):
        raise RuntimeError("host vanished")
    monkeypatch.setattr(Rollout, "run", boom)
    with pytest.raises(RuntimeError):
        execute(fleet, session)
    assert session.locks == set()


def test_a_held_lock_fails_pre_flight_and_releases_the_others(fleet):
    fleet = three_hosts(fleet)
    session = FakeSession(fleet, ["mainpc", "pc2", "node3"], held={"pc2"})
    with pytest.raises(RigError) as caught:
        execute(fleet, session)
    assert caught.value.lines[0].startswith("pc2: locked by bo@x")
    assert session.locks == {"pc2"} and session.lock("pc2")["id"] == "bo@x-1"  # theirs stays
    assert session.runs == []


def test_rollback_resolves_the_previous_version_from_state(fleet):
    facts = {"mainpc": RolloutFacts(state={SERVICE: {"previous": {"tag": "T1", "digest": "sha256:1"}}}),
             "pc2": RolloutFacts(state={SERVICE: {"previous": None}})}
    target = ops.previous_target(facts)
    assert target("mainpc", SERVICE) == ("T1", "sha256:1")
    assert target("pc2", SERVICE) is None


# -- faults: re-runs, signals, corrupt state ----------------------------------------------------
def test_a_container_never_gated_to_the_end_is_gated_again(fleet):
    """A rollout killed mid-gate left the right digest running with no `ok` recorded: a re-run
    must not call that done; the 'before' to go back to is what was last recorded healthy."""
    new = running(fleet, "mainpc", digest="sha256:new", tag="T2")
    unfinished = Change("mainpc", release(fleet, "mainpc"), new,
                        recorded={"tag": "T1", "digest": "sha256:old"})
    assert unfinished.needed and unfinished.unfinished
    assert unfinished.before == {"tag": "T1", "digest": "sha256:old", "config_hash": None,
                                 "profile_hash": None}
    first_install = Change("mainpc", release(fleet, "mainpc"), new, recorded=None)
    assert first_install.needed and first_install.before is None
    done = Change("mainpc", release(fleet, "mainpc"), new,
                  recorded={"tag": "T2", "digest": "sha256:new"})
    assert not done.needed


def test_sigterm_and_sighup_stop_between_waves_like_ctrl_c(fleet):
    import signal

    for number in (signal.SIGTERM, signal.SIGHUP):
        fleet3 = three_hosts(fleet)
        session = FakeSession(fleet3, ["mainpc", "pc2", "node3"])
        rollout = engine(fleet3, session)
        session.after_run = lambda s, r=rollout, n=number: r._interrupt(n)
        outcome = rollout.run([["mainpc"], ["pc2"], ["node3"]], changes_for(fleet3, session))
        assert outcome.interrupted and outcome.signal == number
        assert signal.getsignal(number) is not None and signal.getsignal(number) != rollout._interrupt


def test_ctrl_c_while_taking_locks_releases_those_taken(fleet):
    fleet = three_hosts(fleet)
    session = FakeSession(fleet, ["mainpc", "pc2", "node3"])
    taken = session.shell

    def shell(name, command, stdin=None, timeout=None, retry=False):
        if " take " in command and name == "pc2":
            raise KeyboardInterrupt
        return taken(name, command, stdin, timeout)
    session.shell = shell
    with pytest.raises(KeyboardInterrupt):
        execute(fleet, session)
    assert session.locks == set()


def test_a_corrupt_state_json_is_rebuilt_from_the_labels():
    from tasks.rollout import parse_rollout_facts

    lines = ["--- docker", "active", "--- containers",
             f"rig-{SERVICE}\trunning\t{SERVICE}\tT1\tsha256:1\tph",
             f"rig-{SERVICE}-prev\texited\t{SERVICE}\tT0\tsha256:0\tph",
             "--- state", '{"half": ', "--- lock"]
    facts = parse_rollout_facts(lines)
    assert facts.state == {SERVICE: {"tag": "T1", "digest": "sha256:1", "profile_hash": "ph",
                                     "config_hash": None, "since": None, "previous": None}}
    assert facts.warnings and "rebuilt from the running containers' labels" in facts.warnings[0]
    odd = parse_rollout_facts(["--- state", '{"svc": "not a mapping"}'])
    assert odd.state == {} and odd.warnings


# -- the ledger tells the truth -----------------------------------------------------------------
def recorded_entries(session) -> dict:
    found: dict = {}
    for name, _, kwargs in session.runs:
        if name == "record":
            for host, lines in kwargs["entries"].items():
                found.setdefault(host, []).extend(lines)
    return found


def test_a_failed_pull_gets_its_ledger_line_with_the_reason(fleet):
    fleet = three_hosts(fleet)
    session = FakeSession(fleet, ["mainpc", "pc2", "node3"], pull_fails={"mainpc"})
    outcome = engine(fleet, session).run([["mainpc"], ["pc2"], ["node3"]], changes_for(fleet, session))
    assert not outcome.ok
    (line,) = recorded_entries(session)["mainpc"]
    assert line["result"] == "failed"
    assert line["reason"] == f"not started: Roll out | {SERVICE}: pull T2"


def test_healthy_services_of_a_failed_wave_are_recorded_as_rolled_back(fleet):
    fleet = three_hosts(fleet)
    session = FakeSession(fleet, ["mainpc", "pc2", "node3"], failing={("pc2", SERVICE)})
    two = {h: [*changes_for(fleet, session)[h]] for h in ("mainpc", "pc2", "node3")}
    engine(fleet, session).run([["mainpc"], ["pc2", "node3"]], two)
    entries = recorded_entries(session)
    assert [e["result"] for e in entries["pc2"]] == ["failed"]
    assert [e["result"] for e in entries["node3"]] == ["rolled_back"]
    assert entries["mainpc"][0]["result"] == "ok"      # wave 1 finished; scope is the wave


def test_fleet_rollback_of_a_first_install_leaves_state_naming_nothing(fleet):
    fleet = three_hosts(fleet, auto_rollback="fleet")
    session = FakeSession(fleet, ["mainpc", "pc2", "node3"], failing={("pc2", SERVICE)})
    rollout = engine(fleet, session)
    rollout.run([["mainpc"], ["pc2"], ["node3"]], changes_for(fleet, session))
    back = [e for e in recorded_entries(session)["mainpc"] if e["action"] == "auto-rollback"]
    assert [(e["result"], e["digest"]) for e in back] == [("ok", None)]
    final_states = [kw["states"]["mainpc"] for n, _, kw in session.runs if n == "record"][-1]
    assert SERVICE not in final_states


def test_a_ledger_write_that_fails_fails_the_command(fleet):
    fleet = three_hosts(fleet)
    session = FakeSession(fleet, ["mainpc", "pc2", "node3"], record_fails={"node3"})
    outcome = engine(fleet, session).run([["mainpc"], ["pc2"], ["node3"]], changes_for(fleet, session))
    assert not outcome.ok
    assert any(line.startswith("node3: could not write the ledger/state.json (No route to host)")
               for line in outcome.lines)


def test_history_merges_every_hosts_ledger_by_time_and_skips_torn_lines():
    from rig.ops.history import merge

    ledgers = {
        "mainpc": '{"time": "2026-11-23T10:00:00Z", "service": "a", "result": "ok"}\n'
                  '{"time": "2026-11-23T12:00:00Z", "service": "b", "result": "failed"}\n{"tor',
        "pc2": '{"time": "2026-11-23T11:00:00Z", "service": "a", "result": "ok"}\n',
    }
    rows = merge(ledgers, None, 10)
    assert [(r["host"], r["time"][11:13]) for r in rows] == [("mainpc", "10"), ("pc2", "11"),
                                                             ("mainpc", "12")]
    assert [r["host"] for r in merge(ledgers, "a", 10)] == ["mainpc", "pc2"]
    assert [r["service"] for r in merge(ledgers, None, 1)] == ["b"]


def test_history_shows_a_line_of_the_wrong_types_as_it_is_never_a_traceback():
    from rig.cli.rollout import history_line
    from rig.ops.history import merge

    rows = merge({"pc2": '{"time": 5}\n{"host": 7, "time": "2026-12-01T00:00:00Z", "service": null, '
                         '"tag": 7, "reason": ["x"]}\n'}, None, 10)
    assert [history_line(r).split() for r in rows] == [
        ["2026-12-01T00:00:00", "7", "?", "?", "7", "?", "?", '(["x"])'],
        ["5", "pc2", "?", "?", "-", "?", "?"]]


def test_a_second_signal_stops_the_gates_and_rolls_the_wave_back_as_interrupted(fleet):
    import signal

    from rig.rollout.probing import STOPPED

    fleet = three_hosts(fleet)
    session = FakeSession(fleet, ["mainpc", "pc2", "node3"], loading={("mainpc", SERVICE): 60})
    rollout = engine(fleet, session)
    probes = []

    def on_shell(s, host, command):  # both signals arrive while the canary loads
        if "probe $(date" in command:
            probes.append(host)
            if len(probes) == 3:
                rollout._interrupt(signal.SIGINT)
                rollout._interrupt(signal.SIGINT)
    session.on_shell = on_shell
    outcome = rollout.run([["mainpc"], ["pc2"], ["node3"]], changes_for(fleet, session))
    assert outcome.interrupted and outcome.signal == signal.SIGINT and not outcome.ok
    assert len(probes) == 3 + 1   # no probe after the abort but the restored gate's first
    assert [h for n, h, _ in session.runs if n == "roll_back"] == [["mainpc"]]
    [line] = recorded_entries(session)["mainpc"]
    assert (line["result"], line["reason"]) == ("interrupted", STOPPED)
    # the report says what the service last answered, not "nothing"
    assert any(line.endswith(f'{STOPPED}; answered: 503 {{"status": "loading"}}')
               for line in outcome.lines), outcome.lines


def test_the_gate_stops_at_its_next_probe_once_aborted(lab_fleet):
    import threading

    from rig.rollout import probing

    calls = []
    abort = threading.Event()
    abort.set()
    verdicts = probing.gate(lambda c, t: calls.append(c) or Shell(True, "", []), lab_fleet,
                            "mainpc", [SERVICE], abort=abort, sleep=lambda s: None)
    assert verdicts[SERVICE].reason == probing.STOPPED and not verdicts[SERVICE].passed
    assert calls == []  # no probe, and no logs fetched for an operator's stop


def test_a_service_an_operator_stopped_is_left_stopped_and_named(fleet):
    fleet = three_hosts(fleet)
    session = FakeSession(fleet, ["mainpc", "pc2", "node3"])
    session.facts_by_host["pc2"].state = {SERVICE: {"tag": "T1", "digest": "sha256:old",
                                                    "stopped": True, "stopped_since": "t0"}}
    session.facts_by_host["pc2"].containers = {cmd.current(SERVICE): Container(
        cmd.current(SERVICE), "exited", SERVICE, "T1", "sha256:old", "ph")}
    report = execute(fleet, session)
    started = [h for name, hosts, _ in session.runs if name == "roll_out" for h in hosts]
    assert report.ok and started == ["mainpc", "node3"]
    assert report.plan.skipped == [f"pc2 {SERVICE}: stopped by an operator since t0; left "
                                   "stopped (--start-stopped starts it)"]
    session = FakeSession(fleet, ["mainpc", "pc2", "node3"])
    session.facts_by_host["pc2"].state = {SERVICE: {"stopped": True}}
    report = execute(fleet, session, opts=ops.Options(verify=False, start_stopped=True))
    started = [h for name, hosts, _ in session.runs if name == "roll_out" for h in hosts]
    assert report.plan.skipped == [] and started == ["mainpc", "pc2", "node3"]


def test_stop_and_start_flip_stopped_and_keep_the_version():
    from rig.ledger import next_state

    state = {SERVICE: {"tag": "T1", "digest": "sha256:1", "previous": {"tag": "T0"}}}
    stop = {"time": "t1", "action": "stop", "service": SERVICE, "result": "ok", "digest": "sha256:1"}
    after = next_state(state, [stop])
    assert after[SERVICE] == {"tag": "T1", "digest": "sha256:1", "previous": {"tag": "T0"},
                              "stopped": True, "stopped_since": "t1"}
    start = {**stop, "time": "t2", "action": "start"}
    assert next_state(after, [start])[SERVICE]["stopped"] is False
    failed = {**start, "result": "failed"}
    assert next_state(after, [failed])[SERVICE]["stopped"] is True


def test_a_timed_pause_watches_the_canary_then_goes_on(fleet):
    fleet = three_hosts(fleet)
    session = FakeSession(fleet, ["mainpc", "pc2", "node3"])
    outcome = Rollout(session, fleet, lambda m: None, "rollout", "T2").run(
        [["mainpc"], ["pc2"], ["node3"]], changes_for(fleet, session), pause=30.0)
    assert outcome.ok and not outcome.paused
    assert [n for n, _ in session.deploys()][:3] == ["roll_out", "switch", "record"]
    # the canary watched for 30 s, probed every 0.5 s; the batches gated for min_healthy only
    mainpc = [t for h, c, t in session.commands if h == "mainpc" and "probe $(date" in c]
    pc2 = [t for h, c, t in session.commands if h == "pc2" and "probe $(date" in c]
    assert len(mainpc) > 60 and len(pc2) < 10


def test_a_canary_that_degrades_during_the_pause_is_rolled_back_like_a_failed_gate(fleet):
    fleet = three_hosts(fleet)
    session = with_running(fleet, FakeSession(fleet, ["mainpc", "pc2", "node3"],
                                              watch_fails={("mainpc", SERVICE)}))
    outcome = Rollout(session, fleet, lambda m: None, "rollout", "T2").run(
        [["mainpc"], ["pc2"], ["node3"]], changes_for(fleet, session), pause=30.0)
    assert not outcome.ok   # live while watched: the proxy went to it, and back to the old one
    assert [n for n, _ in session.deploys()] == ["roll_out", "switch", "roll_back", "switch",
                                                 "record"]
    assert [slot for _, _, slot, _ in session.switches] == ["b", "a"]
    assert "later waves not touched: pc2, node3" in outcome.lines
    [line] = recorded_entries(session)["mainpc"]
    assert (line["result"], line["reason"]) == (
        "failed", 'unhealthy 3 times in a row; answered: 200 {"status": "degraded"}')
    assert session.running("mainpc", SERVICE).digest == "sha256:old"


def test_a_manual_pause_stops_after_the_canary_recorded_and_keeps_its_previous(fleet):
    fleet = three_hosts(fleet)
    session = FakeSession(fleet, ["mainpc", "pc2", "node3"])
    outcome = Rollout(session, fleet, lambda m: None, "rollout", "T2").run(
        [["mainpc"], ["pc2"], ["node3"]], changes_for(fleet, session), pause="manual")
    assert outcome.ok and outcome.paused == [["pc2"], ["node3"]]
    assert session.deploys() == [("roll_out", ["mainpc"]), ("switch", ["mainpc"]),
                                 ("record", ["mainpc"])]
    assert session.runs[2][2]["finished"] == {}  # rig-<service>-prev stays for `rig abort`
    assert recorded_entries(session)["mainpc"][0]["result"] == "ok"


def test_pause_values():
    from rig.config.rollout import parse_pause

    assert [parse_pause(v) for v in ("manual", "5m", "30s", 0, "0", None)] == [
        "manual", 300.0, 30.0, None, None, None]
    with pytest.raises(ValueError, match="pause must be a duration such as 5m or 30s, or manual"):
        parse_pause("later")
    assert ops.options_from(pause="0").pause == "none" and ops.options_from().pause is None
    with pytest.raises(RigError, match="--pause soon: pause must be a duration"):
        ops.options_from(pause="soon")


# -- gates of any length, lost and frozen hosts, failed rollbacks -------------------------------
def slow_fleet(fleet, start_period=900.0, host_timeout=30.0):
    """SERVICE loads like a model server: a start period of 15 minutes, a 30 s host_timeout."""
    fleet = three_hosts(fleet)
    services = dict(fleet.services)
    spec = services[SERVICE]
    services[SERVICE] = spec.model_copy(update={"health": spec.health.model_copy(
        update={"start_period": start_period})})
    rollout = fleet.rollout.model_copy(update={"host_timeout": host_timeout})
    return fleet.model_copy(update={"services": services, "rollout": rollout})


def test_a_gate_longer_than_host_timeout_passes_one_short_probe_at_a_time(fleet):
    fleet = slow_fleet(fleet)
    session = FakeSession(fleet, ["mainpc", "pc2", "node3"], loading={("mainpc", SERVICE): 600})
    outcome = engine(fleet, session).run([["mainpc"], ["pc2"], ["node3"]],
                                         changes_for(fleet, session))
    assert outcome.ok
    assert outcome.gate_seconds >= 600
    probes = [t for h, c, t in session.commands if "probe $(date" in c]
    assert max(probes) < fleet.rollout.host_timeout        # no command waits that long
    assert len([1 for h, c, _ in session.commands if h == "mainpc" and "probe" in c]) > 600


def test_a_service_still_loading_after_its_start_period_fails_its_gate(fleet):
    fleet = slow_fleet(fleet, start_period=60.0)
    session = with_running(fleet, FakeSession(fleet, ["mainpc", "pc2", "node3"],
                                              loading={("mainpc", SERVICE): 600}))
    outcome = engine(fleet, session).run([["mainpc"], ["pc2"], ["node3"]],
                                         changes_for(fleet, session))
    assert not outcome.ok
    assert any('unhealthy 3 times in a row; answered: 503 {"status": "loading"}' in line
               for line in outcome.lines)
    assert session.running("mainpc", SERVICE).digest == "sha256:old"   # back on the old one


def test_a_host_frozen_during_its_gate_is_lost_not_waited_for(fleet):
    fleet = three_hosts(fleet)
    session = with_running(fleet, FakeSession(fleet, ["mainpc", "pc2", "node3"], frozen={"pc2"}))
    outcome = engine(fleet, session).run([["mainpc"], ["pc2"], ["node3"]],
                                         changes_for(fleet, session))
    assert not outcome.ok
    assert "  pc2: LOST, not rolled back" in outcome.lines
    assert any(line.startswith("    pc2 LOST: ") for line in outcome.lines)
    assert [h for n, h in session.deploys() if n == "roll_out"] == [["mainpc"], ["pc2"]]
    assert any(line.startswith("pc2: could not write the ledger/state.json") for line in outcome.lines)


def test_a_host_lost_in_its_wave_is_reported_lost_and_later_waves_untouched(fleet):
    fleet = three_hosts(fleet)
    session = with_running(fleet, FakeSession(fleet, ["mainpc", "pc2", "node3"],
                                              lost_in_wave={"pc2"}))
    outcome = engine(fleet, session).run([["mainpc"], ["pc2"], ["node3"]],
                                         changes_for(fleet, session))
    assert not outcome.ok and "later waves not touched: node3" in outcome.lines
    assert "  pc2 affective_processing_center: unknown whether started (stopped answering: " \
        "connection lost: Socket is closed)" in outcome.lines
    assert "  pc2: LOST, not rolled back" in outcome.lines


def test_a_rollback_that_fails_is_recorded_as_rollback_failed(fleet):
    fleet = three_hosts(fleet)
    session = with_running(fleet, FakeSession(fleet, ["mainpc", "pc2", "node3"],
                                              failing={("mainpc", SERVICE)},
                                              rollback_fails={"mainpc"}))
    outcome = engine(fleet, session).run([["mainpc"], ["pc2"], ["node3"]],
                                         changes_for(fleet, session))
    assert "  mainpc: ROLLBACK FAILED: check it by hand" in outcome.lines
    [line] = recorded_entries(session)["mainpc"]
    assert line["result"] == "rollback_failed"
    assert line["reason"].endswith("; the rollback failed too")


def test_no_secret_value_in_the_report_or_the_ledger(fleet):
    from rig.secrets import Secret

    fleet = three_hosts(fleet)
    session = with_running(fleet, FakeSession(fleet, ["mainpc", "pc2", "node3"],
                                              failing={("mainpc", SERVICE)}))
    rollout = engine(fleet, session)
    rollout.secrets._read["model_ops_coordinator"] = {"HF_TOKEN": Secret("hunter2-secret-value",
                                                                         "env HF_TOKEN")}
    outcome = rollout.run([["mainpc"], ["pc2"], ["node3"]], changes_for(fleet, session))
    text = "\n".join(outcome.lines) + repr(recorded_entries(session))
    assert "hunter2" not in text and "    | HF_TOKEN=[secret]" in outcome.lines


def test_a_rollout_whose_lock_was_taken_over_stops_before_the_next_wave(fleet):
    from rig.rollout.locks import HostLocks

    fleet = three_hosts(fleet)
    session = FakeSession(fleet, ["mainpc", "pc2", "node3"])
    rollout = engine(fleet, session)
    assert rollout.take_locks() == []

    def steal(s):  # wave 1 ran and was recorded: someone forces the locks away at once
        if len(s.runs) == 3:  # (long before the background heartbeat would notice)
            assert HostLocks(s, 3600, "rollout", "T9").take(break_lock=True, force=True) == []
    session.after_run = steal
    outcome = rollout.run([["mainpc"], ["pc2"], ["node3"]], changes_for(fleet, session))
    rollout.release_locks()
    assert not outcome.ok
    assert [h for n, h in session.deploys() if n == "roll_out"] == [["mainpc"]]
    assert any(line.startswith("pc2: this rollout's lock was taken over: locked by")
               for line in outcome.lines)
    assert "stopped before wave 2: pc2 not touched" in outcome.lines
    assert any(line.startswith("mainpc: not recorded (ledger, state.json): this rollout's lock")
               for line in outcome.lines)                  # their state.json is not ours to write
    assert [h for n, h, _ in session.runs if n == "record"] == [["mainpc"]]


def test_a_manual_pause_records_what_the_canary_replaced_and_what_the_batches_will_run(fleet):
    fleet = three_hosts(fleet)
    session = with_running(fleet, FakeSession(fleet, ["mainpc", "pc2", "node3"]))
    rollout = engine(fleet, session)
    rollout.facts()
    changes = changes_for(fleet, session)
    outcome = rollout.run([["mainpc"], ["pc2"], ["node3"]], changes, pause="manual")
    assert outcome.paused == [["pc2"], ["node3"]]
    record = rollout.paused_record([["mainpc"], ["pc2"], ["node3"]], changes)
    assert set(record) == {"mainpc", "pc2", "node3"}
    row = record["mainpc"][SERVICE]
    assert row["to"]["digest"] == "sha256:new" and row["to"]["config"] == ""
    assert row["from"] == {"digest": "sha256:old", "tag": "T1", "config_hash": None,
                           "profile_hash": fleet.profile_of("mainpc").content_hash()}
    assert row["state"] == {"tag": "T1", "digest": "sha256:old"}
    assert set(record["pc2"][SERVICE]) == {"to"}       # not run yet: nothing replaced


def test_rollback_after_a_crash_goes_to_the_last_version_recorded_healthy(fleet):
    from rig.ops.rollout import previous_target

    crashed = RolloutFacts(state={SERVICE: {"tag": "T1", "digest": "sha256:1",
                                            "previous": {"tag": "T0", "digest": "sha256:0"}}})
    crashed.containers = {cmd.current(SERVICE): running(fleet, "mainpc", "sha256:2", "T2")}
    healthy = RolloutFacts(state={SERVICE: {"tag": "T1", "digest": "sha256:1",
                                            "previous": {"tag": "T0", "digest": "sha256:0"}}})
    healthy.containers = {cmd.current(SERVICE): running(fleet, "pc2", "sha256:1", "T1")}
    notes: list[str] = []
    target = previous_target({"mainpc": crashed, "pc2": healthy}, notes)
    assert target("mainpc", SERVICE) == ("T1", "sha256:1")
    assert target("pc2", SERVICE) == ("T0", "sha256:0")
    # a per-machine service's image tags carry the machine: rollback looks up the build's tag
    moc = RolloutFacts(state={"model_ops_coordinator": {
        "tag": "T1-mainpc", "digest": "sha256:1", "previous": {"tag": "T0-mainpc",
                                                               "digest": "sha256:0"}}})
    assert ops.previous_target({"mainpc": moc}, None, fleet)("mainpc", "model_ops_coordinator") \
        == ("T0", "sha256:0")
    assert notes == [f"mainpc {SERVICE}: runs T2 (2), which state.json never recorded as "
                     "healthy (an interrupted rollout); going back to the last healthy version, T1"]


# -- an operator's stop / start, and bootstrap's lock ---------------------------------------------
def test_stop_and_start_are_locked_gated_and_in_the_ledger(fleet):
    from rig.ops.service import control_service

    fleet = three_hosts(fleet)
    session = with_running(fleet, FakeSession(fleet, ["mainpc", "pc2", "node3"]))
    job = FakeJob(fleet, session)
    stopped = control_service(job, "stop", SERVICE, None, False, lambda line: None)
    assert stopped.ok and not session.locks
    assert all(session.running(h, SERVICE) is None for h in session.hosts)
    assert not any("probe $(date" in c for _, c, _ in session.commands)   # a stop is not gated
    assert session.facts_by_host["pc2"].state[SERVICE]["stopped"] is True
    session.failing.add(("pc2", SERVICE))
    started = control_service(job, "start", SERVICE, None, False, lambda line: None)
    assert not started.ok and not session.locks
    assert started.lines[1].startswith(f"pc2: {SERVICE}: started but UNHEALTHY: unhealthy 3 times")
    assert session.facts_by_host["pc2"].state[SERVICE]["stopped"] is True     # failed: unchanged
    assert session.facts_by_host["mainpc"].state[SERVICE]["stopped"] is False


def test_stop_refuses_a_live_lock_and_a_service_never_rolled_out(fleet):
    import json as _json
    import time as _time

    from rig.ops.service import control_service

    fleet = three_hosts(fleet)
    session = FakeSession(fleet, ["mainpc", "pc2", "node3"])
    job = FakeJob(fleet, session)
    with pytest.raises(RigError) as caught:
        control_service(job, "stop", SERVICE, None, False, lambda line: None)
    assert caught.value.lines[0] == (f"mainpc: {SERVICE} was never rolled out here (no container "
                                     f"rig-{SERVICE})")
    session = with_running(fleet, FakeSession(fleet, ["mainpc", "pc2", "node3"]))
    session.lock_files["pc2"] = _json.dumps({"id": "x", "operator": "bo", "machine": "far",
                                             "heartbeat": _time.time()}).encode()
    with pytest.raises(RigError, match="--break-lock refuses"):
        control_service(FakeJob(fleet, session), "stop", SERVICE, None, True, lambda line: None)
    assert session.runs == [] and session.locks == {"pc2"}


# -- readiness beyond /health: gate checks --------------------------------------------------------
def with_gate_check(fleet):
    from rig.config.checks import CheckSpec

    fleet = three_hosts(fleet)
    services = dict(fleet.services)
    spec = services[SERVICE]
    check = CheckSpec(name="lists the model", path="/models", expect={"loaded": ["m"]}, gate=True)
    services[SERVICE] = spec.model_copy(update={"checks": [*spec.checks, check]})
    return fleet.model_copy(update={"services": services})


def test_a_gate_check_holds_the_gate_until_the_model_is_listed(fleet):
    fleet = with_gate_check(fleet)
    session = FakeSession(fleet, ["mainpc", "pc2", "node3"],
                          checks_fail_until={("mainpc", SERVICE): 12})
    lines = []
    outcome = Rollout(session, fleet, lines.append, "rollout", "T2").run(
        [["mainpc"], ["pc2"], ["node3"]], changes_for(fleet, session))
    assert outcome.ok
    said = [line for line in lines if line.startswith("  mainpc")]
    assert said and "gate checks passed: lists the model" in said[0]
    assert outcome.gate_seconds >= 12
    ran = [c for h, c, _ in session.commands if h == "mainpc" and c.startswith("docker exec ")]
    assert len(ran) > 3 and all("scores a sentence" not in c for c in ran)  # only gate: true


def test_a_gate_check_that_never_answers_fails_the_canary_after_the_gates_deadline(fleet):
    fleet = with_gate_check(fleet)
    session = with_running(fleet, FakeSession(fleet, ["mainpc", "pc2", "node3"],
                                              checks_fail_until={("mainpc", SERVICE): 1e9}))
    outcome = engine(fleet, session).run([["mainpc"], ["pc2"], ["node3"]],
                                         changes_for(fleet, session))
    assert not outcome.ok
    assert any("gate check 'lists the model' failed: answer lacks" in line
               for line in outcome.lines)
    assert session.running("mainpc", SERVICE).digest == "sha256:old"
    assert outcome.gate_seconds > fleet.services[SERVICE].health.start_period


# -- GPU errors during a gate ---------------------------------------------------------------------
XID_79 = ("2027-01-15T08:00:30+0000 mainpc kernel: NVRM: Xid (PCI:0000:01:00): 79, pid=1234, "
          "GPU has fallen off the bus.\n")      # 30 s after the hosts' clock (1_800_000_000)
OLD_79 = XID_79.replace("2027-01-15T08:00:30+0000", "2026-11-30T10:01:02,123456+00:00")
XID_45 = ("2026-11-30T10:01:02+0000 mainpc kernel: NVRM: Xid (PCI:0000:01:00): 45, pid=1234, "
          "Ch 00000010\n")


@pytest.mark.parametrize("log,fails", [(XID_79, True), (XID_45, False), ("", False),
                                       (OLD_79, False),   # dmesg's whole buffer: before the wave
                                       (OLD_79 + XID_79, True)])
def test_a_fatal_gpu_error_during_the_canarys_gate_fails_it(fleet, log, fails):
    fleet = three_hosts(fleet)
    session = with_running(fleet, FakeSession(fleet, ["mainpc", "pc2", "node3"]))
    for host in session.hosts:
        session.facts_by_host[host].host_time = 1_800_000_000.0
    session.kernel_log["mainpc"] = log
    rollout = engine(fleet, session)
    outcome = rollout.run([["mainpc"], ["pc2"], ["node3"]], changes_for(fleet, session),
                          facts=rollout.facts())
    reads = [c for h, c, _ in session.commands if h == "mainpc" and "journalctl" in c]
    assert reads and reads[0].startswith("{ journalctl -k --since @17999999")
    assert outcome.ok is not fails
    if fails:
        assert any(line.startswith(f"  mainpc {SERVICE} T2: GPU error on mainpc: Xid 79 (")
                   for line in outcome.lines), outcome.lines
        assert session.running("mainpc", SERVICE).digest == "sha256:old"


def test_a_long_gate_is_shown_as_it_goes_and_a_short_one_stays_quiet(fleet):
    fleet = slow_fleet(fleet)
    session = FakeSession(fleet, ["mainpc", "pc2", "node3"], loading={("mainpc", SERVICE): 60})
    lines: list[str] = []
    outcome = Rollout(session, fleet, lines.append, "rollout", "T2").run(
        [["mainpc"], ["pc2"], ["node3"]], changes_for(fleet, session))
    assert outcome.ok
    shown = [line for line in lines if f" {SERVICE}: " in line and " of " in line]
    assert all(line.split()[1] == "mainpc" for line in shown)          # pc2's gate was short
    assert any('503 {"status": "loading"}' in line for line in shown)
    assert [line.split(": ", 1)[1] for line in shown] == [   # every 15 s or on a change
        '503 {"status": "loading"} (15 s of 917 s)', '503 {"status": "loading"} (30 s of 917 s)',
        '503 {"status": "loading"} (45 s of 917 s)', '200 {"status": "ok"} (60 s of 917 s)']


def test_on_a_terminal_the_gates_are_one_live_table():
    from rig.rollout.gate import Probe
    from rig.rollout.watch import GateWatch

    said: list[str] = []
    with GateWatch(said.append, {("mainpc", SERVICE): 330.0}, live=True) as watch:
        watch.probe("mainpc", SERVICE, Probe(42.0, "running", 0, 503, '{"status": "loading"}'))
        rows = watch._table().rows
        assert watch._table().columns[4].header == "GPU memory"
        watch.gpu("mainpc", [(18200, 24564)])
        assert list(watch._table().columns[4].cells) == ["18200/24564 MiB"]
    assert said == [] and len(rows) == 1          # drawn in place, not printed line by line
    assert watch.rows[("mainpc", SERVICE)].answer == '503 {"status": "loading"}'
    assert watch._line("mainpc", watch.rows[("mainpc", SERVICE)]) == \
        '503 {"status": "loading"} (42 s of 330 s, GPU memory 18200/24564 MiB)'
    assert watch._line("pc2", watch.rows[("mainpc", SERVICE)]) == \
        '503 {"status": "loading"} (42 s of 330 s)'


def test_a_long_gate_on_a_gpu_host_shows_its_cards_memory(fleet):
    fleet = slow_fleet(fleet)
    session = FakeSession(fleet, ["mainpc", "pc2", "node3"], loading={("mainpc", SERVICE): 60})
    for host in session.hosts:
        session.facts_by_host[host].host_time = 1_800_000_000.0
    session.gpu_memory["mainpc"] = (
        "0, GPU-1, NVIDIA GeForce RTX 4090, 8.9, 24564, 18200, 535.129.03\n"
        "1, GPU-2, NVIDIA GeForce RTX 4090, 8.9, [N/A], [N/A], 535.129.03\n")
    lines: list[str] = []
    rollout = Rollout(session, fleet, lines.append, "rollout", "T2")
    assert rollout.run([["mainpc"], ["pc2"], ["node3"]], changes_for(fleet, session),
                       facts=rollout.facts()).ok
    shown = [line for line in lines if f"mainpc     {SERVICE}: " in line and " of " in line]
    assert len(shown) == 4 and all(line.endswith(" s, GPU memory 18200/24564 MiB)")
                                   for line in shown), shown


def test_a_restored_version_is_judged_by_health_not_by_gate_checks_it_never_had(fleet):
    fleet = with_gate_check(fleet)
    session = with_running(fleet, FakeSession(fleet, ["mainpc", "pc2", "node3"],
                                              checks_fail_until={("mainpc", SERVICE): 1e9}))
    outcome = engine(fleet, session).run([["mainpc"], ["pc2"], ["node3"]],
                                         changes_for(fleet, session))
    assert not outcome.ok and "  mainpc: serving its previous version (restored and healthy: " \
        f"{SERVICE})" in outcome.lines
    mainpc = [c for h, c, _ in session.commands if h == "mainpc"]
    last_check = max(i for i, c in enumerate(mainpc) if c.startswith("docker exec "))
    logs = max(i for i, c in enumerate(mainpc) if "docker logs" in c)   # the failed gate's end
    assert last_check < logs                       # the restore gate ran no gate check ...
    assert any("probe $(date" in c for c in mainpc[logs:])   # ... only /health probes


def test_a_lock_taken_over_on_a_later_host_alone_still_fails_the_rollout(fleet):
    """Wave 1 recorded fine on mainpc; pc2's lock alone is forced away before its wave: the
    rollout stops there and fails, though every record it wrote succeeded."""
    from rig.rollout.locks import HostLocks

    fleet = three_hosts(fleet)
    session = FakeSession(fleet, ["mainpc", "pc2", "node3"])
    rollout = engine(fleet, session)
    assert rollout.take_locks() == []

    class Pc2Only:
        def names(self):
            return ["pc2"]

        def shell(self, name, command, stdin=None, timeout=None, retry=False):
            return session.shell(name, command, stdin, timeout)

    def steal(s):
        if len(s.runs) == 2:
            assert HostLocks(Pc2Only(), 3600, "rollout", "T9").take(break_lock=True,
                                                                    force=True) == []
    session.after_run = steal
    outcome = rollout.run([["mainpc"], ["pc2"], ["node3"]], changes_for(fleet, session))
    rollout.release_locks()
    assert not outcome.ok and rollout.record_failures == []
    assert "stopped before wave 2: pc2 not touched" in outcome.lines


def test_rollback_to_a_previous_version_recorded_without_a_tag(fleet):
    facts = RolloutFacts(state={"model_ops_coordinator": {
        "tag": "T1-mainpc", "digest": "sha256:1", "previous": {"tag": None, "digest": "sha256:0"}}})
    target = ops.previous_target({"mainpc": facts}, None, fleet)
    assert target("mainpc", "model_ops_coordinator") == (None, "sha256:0")


# -- a restore is judged by the timings its version passed under ----------------------------------
SLOW = {"start_period": 120.0, "interval": 1.0, "timeout": 2.0, "retries": 3}


@pytest.mark.parametrize("recorded,restored_ok", [(SLOW, True), (None, False)])
def test_a_restored_slow_loader_is_judged_by_its_recorded_timings_not_the_new_specs(
        fleet, recorded, restored_ok):
    """The previous version loads for 75 s and passed its gate with start_period 120 s; the
    spec now says 20 s. Its restore after a failed canary must wait out its own load."""
    fleet = with_gate_check(fleet)
    assert fleet.services[SERVICE].health.start_period == 20.0
    session = with_running(fleet, FakeSession(fleet, ["mainpc", "pc2", "node3"],
                                              loading={("mainpc", SERVICE): 75},
                                              checks_fail_until={("mainpc", SERVICE): 1e9}))
    if recorded:
        session.facts_by_host["mainpc"].state[SERVICE]["health"] = recorded
    session.now += 100      # the old container finished loading long ago
    session.started[("mainpc", SERVICE)] = 0.0
    outcome = engine(fleet, session).run([["mainpc"], ["pc2"], ["node3"]],
                                         changes_for(fleet, session))
    assert not outcome.ok
    restored = f"  mainpc: serving its previous version (restored and healthy: {SERVICE})"
    assert (restored in outcome.lines) is restored_ok, outcome.lines
    assert session.running("mainpc", SERVICE).digest == "sha256:old"
    state = session.facts_by_host["mainpc"].state[SERVICE]
    assert state.get("health") == recorded       # the restore keeps the version's timings


def test_a_version_that_passes_its_gate_is_recorded_with_its_gate_timings(fleet):
    fleet = three_hosts(fleet)
    session = FakeSession(fleet, ["mainpc", "pc2", "node3"])
    assert engine(fleet, session).run([["mainpc"], ["pc2"], ["node3"]],
                                      changes_for(fleet, session)).ok
    health = fleet.services[SERVICE].health
    for host in session.hosts:
        assert session.facts_by_host[host].state[SERVICE]["health"] == {
            "start_period": health.start_period, "interval": health.interval,
            "timeout": health.timeout, "retries": health.retries}


def test_a_fleet_rollback_puts_back_each_touched_hosts_version_with_its_hash_and_timings(fleet):
    """mainpc passed wave 1, pc2 fails wave 2: mainpc's auto-rollback ledger line and state.json
    name the version it went back to, with that version's config hash and gate timings."""
    fleet = three_hosts(fleet, auto_rollback="fleet")
    session = with_running(fleet, FakeSession(fleet, ["mainpc", "pc2", "node3"],
                                              failing={("pc2", SERVICE)}))
    old = session.facts_by_host["mainpc"].containers[cmd.current(SERVICE)]
    session.facts_by_host["mainpc"].containers[cmd.current(SERVICE)] = Container(
        old.name, old.state, old.service, old.tag, old.digest, old.profile_hash, "c0ffee")
    session.facts_by_host["mainpc"].state[SERVICE].update(config_hash="c0ffee", health=SLOW)
    outcome = engine(fleet, session).run([["mainpc"], ["pc2"], ["node3"]],
                                         changes_for(fleet, session))
    assert not outcome.ok
    state = session.facts_by_host["mainpc"].state[SERVICE]
    assert (state["digest"], state["config_hash"], state["health"]) == ("sha256:old", "c0ffee",
                                                                        SLOW)


def test_side_by_side_raises_the_first_failure_in_the_caller_without_gevent_printing_it(capsys):
    import gevent

    from rig.errors import RigError
    from rig.registry import side_by_side

    def look(n):
        gevent.sleep(0.01 * (3 - n))     # the later items finish first
        if n in (1, 2):
            raise RigError(f"registry: no answer for {n}")
        return n * 10
    assert side_by_side(lambda n: n * 10, [1, 2, 3]) == [10, 20, 30]
    with pytest.raises(RigError, match="no answer for 1"):
        side_by_side(look, [0, 1, 2])
    assert "Traceback" not in capsys.readouterr().err


def test_a_service_whose_part_of_a_side_by_side_step_ran_is_said_started_not_gated():
    from rig.rollout.engine import _attempt, _not_gated
    from rig.runner import HostResult

    step = HostResult("mainpc", failed=["Roll out | a: run T, b: run T (failed: b: run T)"],
                      failed_parts=["b: run T"], failed_steps=["a: run T, b: run T"])
    why = "Roll out | a: run T, b: run T (failed: b: run T)"
    assert _not_gated(step, "b") == ("not started", why)
    assert _not_gated(step, "a") == ("started, not gated", why)
    assert _attempt(None, step, "wave", "a") == ("failed", f"started, not gated: {why}")
    assert _attempt(None, step, "wave", "b") == ("failed", f"not started: {why}")
    one = HostResult("mainpc", failed=["Roll out | a: run T"],     # a step of its own that
                     failed_steps=["a: run T"])                     # failed, the host there
    assert _not_gated(one, "a") == ("not started", "Roll out | a: run T")
    assert _not_gated(HostResult("pc2", unreachable="no answer"), "a") == ("not started",
                                                                          "no answer")
    # lost during the step: its swap may have begun (a begun command runs to its end); lost
    # after a step before it failed (its pull): the swap was never sent
    lost = HostResult("pc2", failed=["Roll out | a: run T, b: run T"],
                      failed_steps=["a: run T, b: run T"], unreachable="gone")
    assert _not_gated(lost, "b") == ("unknown whether started", "gone")
    assert _not_gated(lost, "c") == ("not started", "gone")
    named_so = HostResult("pc2", failed=["Roll out | b: run T"], unreachable="gone")
    assert _not_gated(named_so, "b") == ("not started", "gone")  # the step's own name counts
    pull = HostResult("pc2", failed=["Roll out | pull images"], failed_steps=["pull images"],
                      unreachable="gone")
    assert _not_gated(pull, "a") == ("not started", "gone")
    assert _attempt(None, None, "wave", "a") == ("failed", "not started: an earlier step failed")
