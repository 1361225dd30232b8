"""rig maintenance on|off SERVICE: the proxy's 503 answer on demand, under the rollout lock, in
the ledger and state.json; off only after the container passed its gate."""

from __future__ import annotations

import time

import pytest

from rig.errors import RigError
from rig.ledger import next_state
from rig.ops.service import control_service

from .test_core_ops import HOSTS, SERVICE, lab, quiet  # noqa: F401 - lab is a fixture


def test_maintenance_on_puts_the_503_in_front_without_a_gate_and_records_it(lab):  # noqa: F811
    job, session, _, _, _ = lab
    report = control_service(job, "maintenance-on", SERVICE, ["pc2"], False, quiet())
    assert report.ok and report.lines == [
        f"pc2: {SERVICE}: in maintenance (the proxy answers 503 maintenance)"]
    assert [(name, hosts, kw["verb"]) for name, hosts, kw in session.runs if name == "control"] \
        == [("control", ["pc2"], "maintenance-on")]
    assert session.facts_by_host["pc2"].proxy[SERVICE] == {"a": "maint", "b": "maint"}
    assert not [c for c in session.commands if "probe $(date" in c[1]]     # no gate
    state = session.facts_by_host["pc2"].state[SERVICE]
    assert state["maintenance"] is True and state["maintenance_since"]
    assert state["digest"] == "sha256:t1" and state["previous"] == {"tag": "T0",
                                                                    "digest": "sha256:t0"}
    assert not session.locks


def test_maintenance_off_gates_first_then_sends_clients_back(lab):  # noqa: F811
    job, session, _, _, _ = lab
    control_service(job, "maintenance-on", SERVICE, ["pc2"], False, quiet())
    report = control_service(job, "maintenance-off", SERVICE, ["pc2"], False, quiet())
    assert report.ok and report.lines[0].startswith(f"pc2: {SERVICE}: serving again, healthy")
    probes = [i for i, c in enumerate(session.commands) if "probe $(date" in c[1]]
    off = [i for i, r in enumerate(session.runs) if r[2].get("verb") == "maintenance-off"]
    assert probes and off      # the gate ran, then the switch
    assert session.facts_by_host["pc2"].proxy[SERVICE] == {"a": "live", "b": "maint"}
    state = session.facts_by_host["pc2"].state[SERVICE]
    assert (state["maintenance"], state["maintenance_since"]) == (False, None)


def test_maintenance_off_with_an_unhealthy_container_stays_in_maintenance_and_fails(lab):  # noqa: F811
    job, session, _, _, _ = lab
    control_service(job, "maintenance-on", SERVICE, ["pc2"], False, quiet())
    session.failing.add(("pc2", SERVICE))
    report = control_service(job, "maintenance-off", SERVICE, ["pc2"], False, quiet())
    assert not report.ok
    assert report.lines[0].startswith(f"pc2: {SERVICE}: still in maintenance: its container is "
                                      "UNHEALTHY: unhealthy 3 times in a row")
    assert [r[2].get("verb") for r in session.runs if r[0] == "control"] == ["maintenance-on"]
    assert session.facts_by_host["pc2"].proxy[SERVICE] == {"a": "maint", "b": "maint"}
    assert session.facts_by_host["pc2"].state[SERVICE]["maintenance"] is True


def test_maintenance_needs_the_proxy_and_off_needs_a_running_container(lab):  # noqa: F811
    job, session, _, _, _ = lab
    job.fleet = job.fleet.model_copy(update={"proxy": job.fleet.proxy.model_copy(
        update={"enabled": False})})
    with pytest.raises(RigError) as caught:
        control_service(job, "maintenance-on", SERVICE, ["pc2"], False, quiet())
    assert caught.value.lines == [
        "proxy.enabled is false: there is no proxy to answer for the service",
        "rig maintenance-on: nothing was changed"]
    job.fleet = job.fleet.model_copy(update={"proxy": job.fleet.proxy.model_copy(
        update={"enabled": True})})
    control_service(job, "stop", SERVICE, ["pc2"], False, quiet())
    with pytest.raises(RigError) as caught:
        control_service(job, "maintenance-off", SERVICE, ["pc2"], False, quiet())
    assert caught.value.lines[0] == f"pc2: {SERVICE} is not running (`rig start {SERVICE}` first)"
    assert len(HOSTS) == 3


def test_a_new_version_keeps_an_operators_maintenance_and_off_ends_it():
    state = {"svc": {"tag": "T1", "digest": "d1", "maintenance": True, "maintenance_since": "t0"}}
    entry = {"result": "ok", "action": "rollout", "service": "svc", "tag": "T2", "digest": "d2",
             "profile_hash": "p", "time": "t1"}
    after = next_state(state, [entry])["svc"]
    assert (after["digest"], after["maintenance"], after["maintenance_since"]) == ("d2", True, "t0")
    off = {**entry, "action": "maintenance-off", "time": "t2"}
    assert next_state({"svc": after}, [off])["svc"]["maintenance"] is False
    on = {**entry, "action": "maintenance-on", "time": "t3"}
    assert next_state({}, [on]) == {}     # nothing recorded: nothing to mark


@pytest.mark.parametrize("proxy, state, lock, missing, word", [
    ({SERVICE: {"a": "live", "b": "maint"}}, {}, None, False, "slot a"),
    ({SERVICE: {"a": "maint", "b": "maint"}}, {SERVICE: {"maintenance": True}}, None, False,
     "maintenance"),
    # a rollout at work (stop_first: its 503 while the new one loads), or paused
    ({SERVICE: {"a": "maint", "b": "maint"}}, {}, {"operator": "al", "heartbeat": time.time(),
                                                   "machine": "far"}, False, "maintenance"),
    ({SERVICE: {"a": "maint", "b": "maint"}}, {}, {"paused": True}, False, "maintenance"),
    # its holder gone (killed mid-load), a lock file no one can read: nobody is at work
    ({SERVICE: {"a": "maint", "b": "maint"}}, {}, {"operator": "al", "heartbeat": 1,
                                                   "machine": "far"}, False, "no live slot"),
    ({SERVICE: {"a": "maint", "b": "maint"}}, {}, {"malformed": "empty"}, False, "no live slot"),
    # nobody asked: HAProxy restarted without its state file (`rig rollout` switches back)
    ({SERVICE: {"a": "maint", "b": "maint"}}, {SERVICE: {"digest": "sha256:1"}}, None, False,
     "no live slot"),
    (None, {}, None, True, "no proxy"),
    (None, {}, None, False, None),                         # not read
])
def test_status_says_where_the_proxy_sends_and_whether_anyone_asked_for_the_503(
        fleet, proxy, state, lock, missing, word):
    from rig.ops.rollout import proxy_word
    from tasks.rollout import RolloutFacts

    facts = RolloutFacts(proxy=proxy, state=state, lock=lock, proxy_missing=missing)
    assert proxy_word(fleet, facts, SERVICE) == word


def test_maintenance_off_refuses_to_send_clients_to_a_version_no_rollout_recorded(lab):  # noqa: F811
    """An interrupted start_first rollout left T2 (never recorded as gated) as rig-S and the
    recorded T1 running beside it as rig-S-prev; then `maintenance on`. `off` would switch to
    T2: refused, nothing changed."""
    import dataclasses

    job, session, _, _, _ = lab
    control_service(job, "maintenance-on", SERVICE, ["pc2"], False, quiet())
    containers = session.facts_by_host["pc2"].containers
    t1 = containers[f"rig-{SERVICE}"]
    containers[f"rig-{SERVICE}-prev"] = dataclasses.replace(t1, name=f"rig-{SERVICE}-prev")
    containers[f"rig-{SERVICE}"] = dataclasses.replace(t1, tag="T2", digest="sha256:t2")
    runs = len(session.runs)
    with pytest.raises(RigError) as caught:
        control_service(job, "maintenance-off", SERVICE, ["pc2"], False, quiet())
    assert caught.value.lines == [
        f"pc2: {SERVICE}: rig-{SERVICE} runs T2, which no rollout recorded as gated (one was "
        f"interrupted), and the recorded T1 is kept beside it as rig-{SERVICE}-prev: run `rig "
        "rollout` (or `rig rollback`) to settle which one serves",
        "rig maintenance-off: nothing was changed"]
    assert len(session.runs) == runs
    # the kept one stopped (stop_first): still the recorded one, still refused
    containers[f"rig-{SERVICE}-prev"] = dataclasses.replace(
        containers[f"rig-{SERVICE}-prev"], state="exited")
    with pytest.raises(RigError):
        control_service(job, "maintenance-off", SERVICE, ["pc2"], False, quiet())
    # neither is the recorded one (a host changed by hand): nothing to prefer, off goes ahead
    containers[f"rig-{SERVICE}-prev"] = dataclasses.replace(t1, name=f"rig-{SERVICE}-prev",
                                                             digest="sha256:t0")
    assert control_service(job, "maintenance-off", SERVICE, ["pc2"], False, quiet()).ok
    control_service(job, "maintenance-on", SERVICE, ["pc2"], False, quiet())
    # rig-S gone (removed by hand), the recorded one kept: pre-flight says it, no crash
    containers[f"rig-{SERVICE}-prev"] = dataclasses.replace(t1, name=f"rig-{SERVICE}-prev")
    del containers[f"rig-{SERVICE}"]
    with pytest.raises(RigError) as caught:
        control_service(job, "maintenance-off", SERVICE, ["pc2"], False, quiet())
    assert caught.value.lines[0] == f"pc2: {SERVICE} was never rolled out here (no container rig-{SERVICE})"
    # nothing recorded (state.json lost) and nothing kept: nothing to prefer, off goes ahead
    containers[f"rig-{SERVICE}"] = dataclasses.replace(t1, digest="sha256:t2")
    del containers[f"rig-{SERVICE}-prev"]
    del session.facts_by_host["pc2"].state[SERVICE]
    assert control_service(job, "maintenance-off", SERVICE, ["pc2"], False, quiet()).ok
    # the recorded one is rig-S (a rollout finished since): off goes ahead
    containers[f"rig-{SERVICE}"] = t1
    assert control_service(job, "maintenance-off", SERVICE, ["pc2"], False, quiet()).ok


def test_a_stop_or_restart_puts_the_503_up_first_and_a_restart_goes_back_after_its_gate(
        lab):  # noqa: F811
    job, session, _, _, _ = lab
    assert control_service(job, "restart", SERVICE, ["pc2"], False, quiet()).ok
    assert [r[2]["verb"] for r in session.runs if r[0] == "control"] == [
        "restart", "maintenance-off"]
    assert session.facts_by_host["pc2"].proxy[SERVICE] == {"a": "live", "b": "maint"}
    assert control_service(job, "stop", SERVICE, ["pc2"], False, quiet()).ok
    assert session.facts_by_host["pc2"].proxy[SERVICE] == {"a": "maint", "b": "maint"}
    assert control_service(job, "start", SERVICE, ["pc2"], False, quiet()).ok
    assert session.facts_by_host["pc2"].proxy[SERVICE] == {"a": "live", "b": "maint"}


def test_a_restart_keeps_an_operators_maintenance_and_a_failed_gate_keeps_the_503(
        lab):  # noqa: F811
    job, session, _, _, _ = lab
    control_service(job, "maintenance-on", SERVICE, ["pc2"], False, quiet())
    assert control_service(job, "restart", SERVICE, ["pc2"], False, quiet()).ok
    assert [r[2]["verb"] for r in session.runs if r[0] == "control"] == [
        "maintenance-on", "restart"]
    session.failing.add(("node3", SERVICE))
    report = control_service(job, "restart", SERVICE, ["node3"], False, quiet())
    assert not report.ok and "UNHEALTHY" in report.lines[0]
    assert session.facts_by_host["node3"].proxy[SERVICE] == {"a": "maint", "b": "maint"}


def test_a_restart_whose_switch_back_fails_says_so(lab):  # noqa: F811
    job, session, _, _, _ = lab
    session.switch_fails.add("pc2")
    report = control_service(job, "restart", SERVICE, ["pc2"], False, quiet())
    assert not report.ok
    assert report.lines[0] == (f"pc2: {SERVICE}: restart FAILED: Control a service | {SERVICE}: "
                               "maintenance-off")


@pytest.mark.parametrize("verb, proxy_read, first, enabled", [
    ("stop", True, "maintenance", True), ("restart", True, "maintenance", True),
    ("start", True, None, True), ("stop", False, None, True),
    ("stop", True, None, False)])       # proxy.enabled false: a HAProxy left from before
def test_the_stop_and_restart_commands_put_up_the_503_before_docker_acts(
        fleet, verb, proxy_read, first, enabled):
    from rig.commands import container as cmd
    from rig.commands import proxy
    from tasks.control import container_controlled
    from tasks.rollout import Container, RolloutFacts

    from .fakes import FakeHost, run_op

    state = "exited" if verb == "start" else "running"
    facts = RolloutFacts(containers={f"rig-{SERVICE}": Container(
        f"rig-{SERVICE}", state, SERVICE, "T1", "sha256:1", "ph", slot="a")},
        proxy={SERVICE: {"a": "live", "b": "maint"}} if proxy_read else None)
    fleet = fleet.model_copy(update={"proxy": fleet.proxy.model_copy(update={"enabled": enabled})})
    out = [str(c) for c in run_op(container_controlled, FakeHost(facts, fleet, "pc2"),
                                  service=SERVICE, verb=verb)]
    docker = str(cmd.control_command(verb, SERVICE, 10))
    assert out == ([str(proxy.maintenance(SERVICE, 30.0))] if first else []) + [docker]


def test_a_restart_that_failed_or_a_proxy_not_read_gets_no_switch_back(lab):  # noqa: F811
    from rig.runner import HostResult

    job, session, _, _, _ = lab
    plain = session._control
    session._control = lambda host, service, verb: (
        HostResult(host, failed=[f"Control a service | {service}: restart"])
        if verb == "restart" and host == "pc2" else plain(host, service, verb))
    report = control_service(job, "restart", SERVICE, ["pc2"], False, quiet())
    assert not report.ok and report.lines[0] == (
        f"pc2: {SERVICE}: restart FAILED: Control a service | {SERVICE}: restart")
    session.facts_by_host["node3"].proxy = None          # not read: nothing to switch
    assert control_service(job, "restart", SERVICE, ["node3"], False, quiet()).ok
    assert [r[2]["verb"] for r in session.runs if r[0] == "control"] == ["restart", "restart"]
