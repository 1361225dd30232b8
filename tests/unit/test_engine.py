"""The rollout's control flow without hosts: the engine and the ops layer against a fake
session that records the deploys it is asked to run and answers with scripted facts and gate
results. Waves, the canary, what counts as a change, rollback scope, Ctrl-C between waves,
locks on every path, ledger rows."""

from __future__ import annotations

import pytest

from rig.commands import container as cmd
from rig.errors import RigError
from rig.ops import rollout as ops
from rig.rollout.engine import Change, Rollout
from rig.rollout.gate import Verdict
from rig.runner import HostResult
from rig.secrets import SecretStore
from tasks.rollout import Container, RolloutFacts, record, roll_back, roll_out, watch
from tasks.util import Shell

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


class FakeSession:
    """Records run(deploy, hosts, ...) calls; gates fail for the (host, service) in `failing`."""

    def __init__(self, fleet, hosts, failing=(), held=(), pull_fails=(), record_fails=(),
                 watch_fails=()):
        self.hosts, self.failing, self.held = list(hosts), set(failing), set(held)
        self.watch_fails = set(watch_fails)
        self.pull_fails, self.record_fails = set(pull_fails), set(record_fails)
        self.facts_by_host = {h: RolloutFacts(docker_active=True,
                                              profile_hash=fleet.profile_of(h).content_hash())
                              for h in hosts}
        self.runs: list[tuple[str, list[str], dict]] = []
        self.commands: list[tuple[str, str]] = []
        self.locks: set[str] = set()
        self.after_run = None

    def names(self):
        return list(self.hosts)

    def facts(self, fact_cls):
        return dict(self.facts_by_host)

    def shell(self, name, command, stdin=None, timeout=None):
        self.commands.append((name, str(command)))
        if "set -C" in command:
            if name in self.held:
                return Shell(True, 'HELD\n{"operator": "bo@x", "since": 1, "pid": 7}', [])
            self.locks.add(name)
            return Shell(True, "TAKEN", [])
        if "grep -qF" in command:
            self.locks.discard(name)
        return Shell(True, "", [])

    def run(self, deploy, hosts=None, **kwargs):
        name = {roll_out: "roll_out", roll_back: "roll_back", record: "record",
                watch: "watch"}[deploy]
        self.runs.append((name, list(hosts), kwargs))
        results = {}
        for host in hosts:
            ok = True
            if name == "roll_out" and host in self.pull_fails:
                results[host] = HostResult(host, failed=[f"Roll out | {SERVICE}: run T2"])
                continue
            if name == "record" and host in self.record_fails:
                results[host] = HostResult(host, unreachable="No route to host")
                continue
            if name == "roll_out":
                for r in kwargs["releases"].get(host, []):
                    passed = (host, r.service) not in self.failing
                    kwargs["results"][(host, r.service)] = Verdict(passed, "judged", "200 {}")
                    ok = ok and passed
            elif name == "watch":
                for service in kwargs["services"].get(host, []):
                    passed = (host, service) not in self.watch_fails
                    kwargs["results"][(host, service)] = Verdict(
                        passed, "healthy for 30.0 s" if passed else "unhealthy 3 times in a row",
                        "200 {}" if passed else '200 {"status": "degraded"}')
                    ok = ok and passed
            elif name == "roll_back":
                for service in kwargs["services"].get(host, {}):
                    kwargs["results"][(host, service)] = Verdict(True, "restored")
            results[host] = HostResult(host, failed=[] if ok else ["health gate"])
        if self.after_run:
            self.after_run(self)
        return results

    def deploys(self):
        return [(name, hosts) for name, hosts, _ in self.runs]


def changes_for(fleet, session, digest="sha256:new"):
    return {h: [Change(h, release(fleet, h, digest), session.facts_by_host[h].running(SERVICE),
                       session.facts_by_host[h].state.get(SERVICE))]
            for h in session.hosts}


def engine(fleet, session):
    return Rollout(session, fleet, lambda line: None, "rollout", "T2")


def test_canary_first_then_batches_and_ledger_ok_rows(fleet):
    fleet = three_hosts(fleet)
    session = FakeSession(fleet, ["mainpc", "pc2", "node3"])
    outcome = engine(fleet, session).run([["mainpc"], ["pc2"], ["node3"]], changes_for(fleet, session))
    assert outcome.ok
    assert session.deploys() == [("roll_out", ["mainpc"]), ("record", ["mainpc"]),
                                 ("roll_out", ["pc2"]), ("record", ["pc2"]),
                                 ("roll_out", ["node3"]), ("record", ["mainpc", "node3", "pc2"])]
    entries = session.runs[1][2]["entries"]["mainpc"]
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
class FakeJob:
    def __init__(self, fleet, session):
        self.fleet, self._session = fleet, session
        self.secrets = SecretStore(fleet)

    def session(self, hosts, say=None):
        session = self._session

        class Ctx:
            def __enter__(self):
                return session

            def __exit__(self, *exc):
                return False
        return Ctx()


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
    assert session.locks == set() and session.runs == []


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
    assert unfinished.before == {"tag": "T1", "digest": "sha256:old", "config_hash": None}
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

    def shell(name, command, stdin=None, timeout=None):
        if "set -C" in command and name == "pc2":
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
    assert line["reason"] == f"not started: Roll out | {SERVICE}: run T2"


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


def test_a_second_signal_stops_the_gates_and_rolls_the_wave_back_as_interrupted(fleet):
    import signal

    from tasks.rollout import STOPPED

    fleet = three_hosts(fleet)
    session = FakeSession(fleet, ["mainpc", "pc2", "node3"])
    rollout = engine(fleet, session)
    real_run = session.run

    def run(deploy, hosts=None, **kwargs):  # both signals arrive while the canary is gated
        if deploy is roll_out:
            rollout._interrupt(signal.SIGINT)
            rollout._interrupt(signal.SIGINT)
            assert kwargs["abort"].is_set()
            for r in kwargs["releases"]["mainpc"]:
                kwargs["results"][("mainpc", r.service)] = Verdict(False, STOPPED)
            return {"mainpc": HostResult("mainpc", failed=["health gate"])}
        return real_run(deploy, hosts, **kwargs)
    session.run = run
    outcome = rollout.run([["mainpc"], ["pc2"], ["node3"]], changes_for(fleet, session))
    assert outcome.interrupted and outcome.signal == signal.SIGINT and not outcome.ok
    assert [h for n, h, _ in session.runs if n == "roll_back"] == [["mainpc"]]
    assert [e["result"] for e in recorded_entries(session)["mainpc"]] == ["interrupted"]


def test_the_gate_stops_at_its_next_probe_once_aborted(monkeypatch, lab_fleet):
    import threading

    import tasks.rollout as tr

    calls = []
    monkeypatch.setattr(tr, "host_shell", lambda *a, **k: calls.append(a) or Shell(True, "", []))

    class Host:
        name = "mainpc"
        data = {"rig_fleet": lab_fleet}
    abort, results = threading.Event(), {}
    abort.set()
    assert tr._gate(None, Host(), [SERVICE], results, (), abort) is False
    assert results[("mainpc", SERVICE)].reason == tr.STOPPED
    assert len(calls) == 1  # only the container's logs, no probe


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
    assert [n for n, _ in session.deploys()][:3] == ["roll_out", "watch", "record"]
    assert session.runs[1][2]["hold"] == 30.0 and session.runs[1][1] == ["mainpc"]
    assert [n for n, _ in session.deploys()].count("watch") == 1  # the canary only


def test_a_canary_that_degrades_during_the_pause_is_rolled_back_like_a_failed_gate(fleet):
    fleet = three_hosts(fleet)
    session = FakeSession(fleet, ["mainpc", "pc2", "node3"], watch_fails={("mainpc", SERVICE)})
    outcome = Rollout(session, fleet, lambda m: None, "rollout", "T2").run(
        [["mainpc"], ["pc2"], ["node3"]], changes_for(fleet, session), pause=30.0)
    assert not outcome.ok
    assert [n for n, _ in session.deploys()] == ["roll_out", "watch", "roll_back", "record"]
    assert "later waves not touched: pc2, node3" in outcome.lines
    [line] = recorded_entries(session)["mainpc"]
    assert (line["result"], line["reason"]) == (
        "failed", 'unhealthy 3 times in a row; answered: 200 {"status": "degraded"}')


def test_a_manual_pause_stops_after_the_canary_recorded_and_keeps_its_previous(fleet):
    fleet = three_hosts(fleet)
    session = FakeSession(fleet, ["mainpc", "pc2", "node3"])
    outcome = Rollout(session, fleet, lambda m: None, "rollout", "T2").run(
        [["mainpc"], ["pc2"], ["node3"]], changes_for(fleet, session), pause="manual")
    assert outcome.ok and outcome.paused == [["pc2"], ["node3"]]
    assert session.deploys() == [("roll_out", ["mainpc"]), ("record", ["mainpc"])]
    assert session.runs[1][2]["finished"] == {}  # rig-<service>-prev stays for `rig abort`
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
