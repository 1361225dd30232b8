"""The per-host proxy: which strategy each service gets and why, haproxy.cfg, the admin
socket's scripts, and the rollout core's rule that only a passed gate reaches the proxy."""

from __future__ import annotations

import pytest

from rig.commands import container as cmd
from rig.commands import proxy
from rig.rollout.engine import Rollout
from rig.rollout.strategy import DIRECT, START_FIRST, STOP_FIRST, strategy_for

from .fakes import FakeSession
from .test_engine import SERVICE, changes_for, recorded_entries, three_hosts, with_running

MOC, AUDIO, TEXT = "model_ops_coordinator", "real_time_audio_pipeline", "affective_processing_center"


def runtime_layer(fleet, service, **settings):
    spec = fleet.services[service]
    runtime = spec.runtime.model_copy(update=settings)
    runtime.model_fields_set.update(settings)
    services = {**fleet.services, service: spec.model_copy(update={"runtime": runtime})}
    return fleet.model_copy(update={"services": services})


# -- auto: two copies where the card's memory allows --------------------------------------------
def test_auto_is_start_first_on_mainpcs_24_gib_and_stop_first_on_pc2s_12_gib(fleet):
    """The issue's case: an 8 GiB model (and the audio pipeline's 2 GiB beside it)."""
    main, pc2 = strategy_for(fleet, "mainpc", MOC), strategy_for(fleet, "pc2", MOC)
    assert (main.name, main.why) == (START_FIRST, (
        "auto: two copies fit: 2 x 8192 MiB + 2048 MiB of other services = 18432 MiB against "
        "23540 MiB (24564 MiB less gpu_reserve)"))
    assert (pc2.name, pc2.why) == (STOP_FIRST, (
        "auto: two copies do not fit: 2 x 8192 MiB + 2048 MiB of other services = 18432 MiB "
        "against 11264 MiB (12288 MiB less gpu_reserve)"))
    assert main.drain == pc2.drain == 30.0


def test_auto_counts_exactly_what_fits_and_one_mib_more_does_not(fleet):
    """23540 MiB of room on MainPC: 2 x m + 2048 fits while m <= 10746 MiB."""
    fits = runtime_layer(fleet, MOC, gpu_memory=10746 * 2**20)
    assert strategy_for(fits, "mainpc", MOC).name == START_FIRST
    over = runtime_layer(fleet, MOC, gpu_memory=10747 * 2**20)
    assert strategy_for(over, "mainpc", MOC).name == STOP_FIRST


def test_auto_without_gpu_memory_on_a_gpu_service_is_stop_first(fleet):
    unknown = runtime_layer(fleet, MOC, gpu_memory=None)
    chosen = strategy_for(unknown, "mainpc", MOC)
    assert (chosen.name, chosen.why) == (
        STOP_FIRST, "auto: a GPU service without gpu_memory: two copies may not fit on the card")


def test_auto_for_a_service_that_uses_no_gpu_is_start_first(fleet):
    assert strategy_for(fleet, "pc2", TEXT).why == "auto: uses no GPU"
    assert strategy_for(fleet, "pc2", TEXT).name == START_FIRST


def test_a_services_own_strategy_and_drain_win_over_the_fleets(fleet):
    mine = runtime_layer(fleet, TEXT, strategy="stop_first", drain=5.0)
    chosen = strategy_for(mine, "mainpc", TEXT)
    assert (chosen.name, chosen.why, chosen.drain) == (STOP_FIRST, "set by the service's runtime",
                                                       5.0)
    fleet_wide = fleet.model_copy(update={"rollout": fleet.rollout.model_copy(
        update={"strategy": "start_first"})})
    chosen = strategy_for(fleet_wide, "pc2", MOC)   # even where two copies do not fit: said so
    assert (chosen.name, chosen.why) == (START_FIRST, "set by rollout.strategy")


def test_without_the_proxy_every_service_is_swapped_directly(fleet):
    off = fleet.model_copy(update={"proxy": fleet.proxy.model_copy(update={"enabled": False})})
    chosen = strategy_for(off, "mainpc", TEXT)
    assert (chosen.name, chosen.proxied) == (DIRECT, False)


# -- haproxy.cfg and the maintenance answer ------------------------------------------------------
def test_the_config_has_a_frontend_and_two_disabled_slots_per_service(fleet):
    text = proxy.config_text(fleet, "mainpc")
    assert "    stats socket /run/haproxy-rig-admin.sock mode 600 level admin" in text
    assert "    server-state-file /var/lib/haproxy/rig-servers.state" in text
    assert "    load-server-state-from-file global" in text
    block = text[text.index(f"frontend {TEXT}"):].split("\n\n")[:2]
    assert block == [
        f"frontend {TEXT}\n    bind :6560\n    default_backend {TEXT}",
        f"backend {TEXT}\n    errorfile 503 /etc/haproxy/rig/{TEXT}.503\n"
        "    server a 127.0.0.1:16560 disabled\n    server b 127.0.0.1:26560 disabled"]
    assert proxy.config_text(fleet, "mainpc") == text   # from the spec alone: idempotent


def test_the_maintenance_answer_is_a_503_json_with_retry_after():
    head, _, body = proxy.errorfile("svc", 10).partition("\r\n\r\n")
    assert head.split("\r\n") == [
        "HTTP/1.1 503 Service Unavailable", "Content-Type: application/json", "Retry-After: 10",
        "Cache-Control: no-store", f"Content-Length: {len(body)}", "Connection: close"]
    assert body == '{"retry_after": 10, "service": "svc", "status": "maintenance"}\n'


@pytest.mark.parametrize("lines, expected", [
    (["proxy answers", "svc a no_check 0", "svc b MAINT 0"], {"svc": {"a": "live", "b": "maint"}}),
    (["proxy answers", "svc a DRAIN 2", "svc b UP 0"], {"svc": {"a": "drain", "b": "live"}}),
    (["proxy answers", "svc a MAINT_(resolution) 0", "svc b MAINT 0", "x c UP 0", "bad"],
     {"svc": {"a": "maint", "b": "maint"}}),
    (["proxy answers"], {}),
    (["no proxy"], None),
    ([], None),
])
def test_the_proxys_state_is_read_from_its_stats(lines, expected):
    assert proxy.parse_state(lines) == expected


@pytest.mark.parametrize("servers, live", [
    ({"a": "live", "b": "maint"}, "a"), ({"a": "drain", "b": "live"}, "b"),
    ({"a": "maint", "b": "maint"}, None), ({"a": "live", "b": "live"}, None), (None, None)])
def test_the_live_slot_is_the_one_server_taking_new_requests(servers, live):
    assert proxy.live_slot(servers) == live


def test_the_switch_reads_the_slot_from_the_running_container_and_stops_the_old_one_last():
    line = str(cmd.switch_to_current("svc", 30, 10))
    assert line.startswith('s="$(docker inspect -f \'{{index .Config.Labels "rig.slot"}}\' rig-svc)"')
    assert line.index("set server $b/$l state ready") < line.index('drain "$b" "$3" "$o"') \
        < line.index("docker stop -t 10 rig-svc-prev")
    assert "docker stop" not in str(cmd.switch_to_current("svc", 0, None))


# -- the rollout core: the proxy only ever reaches a container that passed its gate ---------------
def test_a_canary_that_fails_its_gate_never_reaches_the_proxy(fleet):
    fleet = three_hosts(fleet)
    session = with_running(fleet, FakeSession(fleet, ["mainpc", "pc2", "node3"],
                                              failing={("mainpc", SERVICE)}))
    outcome = Rollout(session, fleet, lambda m: None, "rollout", "T2").run(
        [["mainpc"], ["pc2"], ["node3"]], changes_for(fleet, session))
    assert not outcome.ok
    # the only switch is the restore's, back to the old container (still in slot a)
    assert session.switches == [("mainpc", SERVICE, "a", "sha256:old")]


def test_each_passed_wave_switches_its_hosts_to_the_new_containers(fleet):
    fleet = three_hosts(fleet)
    session = with_running(fleet, FakeSession(fleet, ["mainpc", "pc2", "node3"]))
    outcome = Rollout(session, fleet, lambda m: None, "rollout", "T2").run(
        [["mainpc"], ["pc2"], ["node3"]], changes_for(fleet, session))
    assert outcome.ok
    assert [(h, slot) for h, _, slot, digest in session.switches if digest != "sha256:old"] == [
        ("mainpc", "b"), ("pc2", "b"), ("node3", "b")]


def test_a_proxy_that_will_not_switch_fails_the_wave_and_it_is_rolled_back(fleet):
    fleet = three_hosts(fleet)
    session = with_running(fleet, FakeSession(fleet, ["mainpc", "pc2", "node3"],
                                              switch_fails={"pc2"}))
    outcome = Rollout(session, fleet, lambda m: None, "rollout", "T2").run(
        [["mainpc"], ["pc2"], ["node3"]], changes_for(fleet, session))
    assert not outcome.ok
    assert "wave 2 (batch) failed on pc2" in outcome.lines
    assert ("  pc2: the proxy could not be switched (Switch | proxy to the new container); the "
            "new containers passed their gates") in outcome.lines
    assert session.running("pc2", SERVICE).digest == "sha256:old"
    assert [line["result"] for line in recorded_entries(session)["pc2"]] == ["rollback_failed"]
    assert "node3" not in [h for h, _, _, _ in session.switches]


def test_a_service_in_maintenance_is_rolled_out_but_the_proxy_stays_on_its_503(fleet):
    """An operator's `rig maintenance on` outlives a rollout: the new version starts and is
    gated, the proxy is not switched to it, and state.json still says maintenance."""
    fleet = three_hosts(fleet)
    session = with_running(fleet, FakeSession(fleet, ["mainpc", "pc2", "node3"]))
    session.facts_by_host["pc2"].state[SERVICE].update(maintenance=True,
                                                       maintenance_since="2026-11-30T10:00:00Z")
    said: list[str] = []
    outcome = Rollout(session, fleet, said.append, "rollout", "T2").run(
        [["mainpc"], ["pc2"], ["node3"]], changes_for(fleet, session))
    assert outcome.ok
    assert [h for h, _, _, _ in session.switches] == ["mainpc", "node3"]
    assert f"  pc2        {SERVICE}: in maintenance, so the proxy stays on its 503 answer " \
           "(`rig maintenance off` sends clients to what passed its gate)" in said
    state = session.facts_by_host["pc2"].state[SERVICE]
    assert (state["digest"], state["maintenance"], state["maintenance_since"]) == (
        "sha256:new", True, "2026-11-30T10:00:00Z")
    assert "maintenance" not in session.facts_by_host["mainpc"].state[SERVICE]


def test_the_default_drain_is_shortened_to_fit_a_short_host_timeout(fleet):
    """host_timeout 15 s, stop_timeout 10 s: one switch command has no room for a drain; the
    default 30 s becomes 0 rather than refusing the spec. 60 s: 40 s of room, 30 s kept."""
    short = fleet.model_copy(update={"rollout": fleet.rollout.model_copy(
        update={"host_timeout": 15.0})})
    assert strategy_for(short, "mainpc", TEXT).drain == 0.0
    roomy = fleet.model_copy(update={"rollout": fleet.rollout.model_copy(
        update={"host_timeout": 60.0})})
    assert strategy_for(roomy, "mainpc", TEXT).drain == 30.0
    mine = runtime_layer(roomy, TEXT, drain=45.0)
    assert strategy_for(mine, "mainpc", TEXT).drain == 40.0


def test_a_drain_set_beyond_host_timeout_is_refused_at_its_line(tmp_path):
    from rig.config import load_fleet
    from rig.errors import RigError

    from .test_runtime_spec import _spec_with

    path, text = _spec_with(tmp_path, [
        ("rollout:\n", "rollout:\n  host_timeout: 30s\n"),
        ("    runtime: {memory: 2g, cpus: 2}\n", "    runtime: {memory: 2g, cpus: 2, drain: 15s}\n")])
    with pytest.raises(RigError) as caught:
        load_fleet(path)
    line = next(i for i, row in enumerate(text.splitlines(), 1) if "drain: 15s" in row)
    assert caught.value.lines == [
        f"{path}:{line}: services.affective_processing_center.runtime.drain: "
        f"affective_processing_center on host {host}: drain 15 s + stop_timeout 10 s + 10 s "
        "leaves no room in rollout.host_timeout 30 s: lower drain or raise host_timeout"
        for host in ("mainpc", "pc2")]
    (tmp_path / "again").mkdir()
    path, _ = _spec_with(tmp_path / "again", [("rollout:\n", "rollout:\n  host_timeout: 15s\n")])
    assert load_fleet(path).rollout.drain == 30.0      # the default: shortened, not refused


def test_a_restore_that_fails_its_gate_leaves_the_proxy_where_it_is(fleet):
    """The kept container is put back but is unhealthy too: the proxy is not sent to it (the
    service stays behind whatever the proxy had: the failed new one was never switched to)."""
    fleet = three_hosts(fleet)
    session = with_running(fleet, FakeSession(fleet, ["mainpc", "pc2", "node3"],
                                              failing={("mainpc", SERVICE)}))

    def still_failing(s):
        if s.runs[-1][0] == "roll_back":
            s.failing.add(("mainpc", SERVICE))
    session.after_run = still_failing
    outcome = Rollout(session, fleet, lambda m: None, "rollout", "T2").run(
        [["mainpc"], ["pc2"], ["node3"]], changes_for(fleet, session))
    assert not outcome.ok and session.switches == []
    assert "  mainpc: ROLLBACK FAILED: check it by hand" in outcome.lines


def test_without_the_proxy_no_switch_runs(fleet):
    fleet = three_hosts(fleet)
    fleet = fleet.model_copy(update={"proxy": fleet.proxy.model_copy(update={"enabled": False})})
    session = with_running(fleet, FakeSession(fleet, ["mainpc", "pc2", "node3"]))
    outcome = Rollout(session, fleet, lambda m: None, "rollout", "T2").run(
        [["mainpc"], ["pc2"], ["node3"]], changes_for(fleet, session))
    assert outcome.ok and "switch" not in [name for name, _, _ in session.runs]


def test_a_host_the_switch_did_not_report_on_fails_its_wave(fleet):
    fleet = three_hosts(fleet)
    session = with_running(fleet, FakeSession(fleet, ["mainpc", "pc2", "node3"]))
    plain = session.run

    def run(deploy, hosts=None, **kwargs):
        results = plain(deploy, hosts=hosts, **kwargs)
        if session.runs[-1][0] == "switch" and hosts == ["mainpc"] and len(session.switches) == 1:
            results.pop("mainpc")       # no word from mainpc about its switch
        return results
    session.run = run
    outcome = Rollout(session, fleet, lambda m: None, "rollout", "T2").run(
        [["mainpc"], ["pc2"], ["node3"]], changes_for(fleet, session))
    assert not outcome.ok
    assert ("  mainpc: the proxy could not be switched (did not answer); the new containers "
            "passed their gates") in outcome.lines


def test_a_rollout_given_its_facts_reads_maintenance_from_them(fleet):
    """run() with the pre-flight's facts passed in (the engine did not read them itself)."""
    fleet = three_hosts(fleet)
    session = with_running(fleet, FakeSession(fleet, ["mainpc", "pc2", "node3"]))
    facts = session.facts(None)
    outcome = Rollout(session, fleet, lambda m: None, "rollout", "T2").run(
        [["mainpc"], ["pc2"], ["node3"]], changes_for(fleet, session), facts)
    assert outcome.ok and len(session.switches) == 3


# -- a rollback after the switch goes back through the proxy without a refused request ----------
def test_the_restore_commands_warm_swap_names_and_cold_ones_put_up_the_503_first():
    assert [str(c) for c in cmd.restore_commands("svc", True, warm=True)] == [
        "{ docker rm -f rig-svc-rollback >/dev/null 2>&1 || true; } && docker rename rig-svc "
        "rig-svc-rollback && docker rename rig-svc-prev rig-svc && docker rename "
        "rig-svc-rollback rig-svc-prev && docker start rig-svc"]
    assert [str(c) for c in cmd.restore_commands("svc", True, drain=20)] == [
        str(proxy.maintenance("svc", 20)), "docker rm -f rig-svc >/dev/null 2>&1 || true",
        "docker rename rig-svc-prev rig-svc && docker start rig-svc"]
    assert [str(c) for c in cmd.restore_commands("svc", True)] == [
        "docker rm -f rig-svc >/dev/null 2>&1 || true",
        "docker rename rig-svc-prev rig-svc && docker start rig-svc"]


def test_the_switch_back_removes_the_version_rolled_back_from_once_drained():
    line = str(cmd.switch_to_current("svc", 30, None, remove_previous=True))
    assert line.index('drain "$b" "$3" "$o"') < line.index("docker rm -f rig-svc-prev")
    assert "docker stop" not in line
    assert "docker rm" not in str(cmd.switch_to_current("svc", 30, 10))


def live_on_a(fleet, session):
    """Every host runs SERVICE T1 in slot a, and its proxy sends there."""
    import dataclasses

    with_running(fleet, session)
    for h in session.hosts:
        facts = session.facts_by_host[h]
        found = facts.containers[cmd.current(SERVICE)]
        facts.containers[found.name] = dataclasses.replace(found, slot="a")
        facts.proxy[SERVICE] = {"a": "live", "b": "maint"}
    return session


def test_a_switched_host_rolled_back_keeps_serving_the_new_one_until_the_old_passes_its_gate(fleet):
    """auto_rollback: fleet, wave 2 fails: the canary, switched to T2 in slot b, is restored
    warm. The kept T1 starts again beside T2 (the two swap names), T2 serves while T1 is gated,
    the proxy switches back to slot a, and T2 goes once drained. pc2 never switched: its T1
    served throughout, and its failed T2 just goes."""
    fleet = three_hosts(fleet, auto_rollback="fleet")
    session = live_on_a(fleet, FakeSession(fleet, ["mainpc", "pc2", "node3"],
                                           failing={("pc2", SERVICE)}))
    seen = []

    def during_restore_gates(s, host, command):
        if host == "mainpc" and "probe $(date" in command and s.restores:
            facts = s.facts_by_host["mainpc"]
            kept = facts.containers.get(cmd.previous(SERVICE))
            seen.append((proxy.live_slot(facts.proxy[SERVICE]), kept.digest, kept.state))
    session.on_shell = during_restore_gates
    outcome = Rollout(session, fleet, lambda m: None, "rollout", "T2").run(
        [["mainpc"], ["pc2"], ["node3"]], changes_for(fleet, session))
    assert not outcome.ok
    assert sorted(session.restores) == [("mainpc", SERVICE, "warm"), ("pc2", SERVICE, "cold")]
    assert seen and set(seen) == {("b", "sha256:new", "running")}
    assert [s for s in session.switches if s[0] == "mainpc"] == [
        ("mainpc", SERVICE, "b", "sha256:new"), ("mainpc", SERVICE, "a", "sha256:old")]
    assert [kw["then"] for name, _, kw in session.runs if name == "switch"] == ["stop", "remove"]
    for host in ("mainpc", "pc2"):
        containers = session.facts_by_host[host].containers
        assert list(containers) == [cmd.current(SERVICE)]
        assert (containers[cmd.current(SERVICE)].digest,
                containers[cmd.current(SERVICE)].slot) == ("sha256:old", "a")
    assert "  mainpc: serving its previous version (restored and healthy: " \
           f"{SERVICE})" in outcome.lines


# -- the admin-socket scripts, run by sh against a stand-in for socat -----------------------------
FAKE_SOCAT = r'''#!/usr/bin/env python3
"""socat as the proxy scripts use it: one admin command line on stdin, HAProxy's answer out.
SILENT=1: a socket that accepts and closes, saying nothing."""
import json, os, sys
states = os.environ["STATES"]
servers = json.load(open(states)) if os.path.exists(states) else {"a": "MAINT", "b": "MAINT"}
line = sys.stdin.read().strip()
if os.environ.get("SILENT"):
    sys.exit(0)
for command in line.split(";"):
    words = command.split()
    if words[:2] == ["set", "server"]:
        servers[words[2].split("/")[1]] = {"ready": "no check", "drain": "DRAIN",
                                           "maint": "MAINT"}[words[4]]
    elif words == ["show", "stat"]:
        for slot, status in servers.items():
            row = ["svc", slot, "", "", "0"] + [""] * 12 + [status]
            print(",".join(row))
    elif words[:3] == ["show", "servers", "state"]:
        print("1\n# be_id be_name srv_id srv_name")
json.dump(servers, open(states, "w"))
'''


def run_script(tmp_path, command, silent=False):
    import os
    import subprocess

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "socat").write_text(FAKE_SOCAT)
    (bin_dir / "socat").chmod(0o755)
    line = str(command).replace(proxy.STATE_DIR, str(tmp_path))    # the state: tmp_path/STATE_NAME
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}",
           "STATES": str(tmp_path / "servers.json"), **({"SILENT": "1"} if silent else {})}
    return subprocess.run(["sh", "-c", line], capture_output=True, text=True, env=env, timeout=30)


def test_a_switch_is_proven_by_the_proxys_stats_not_by_its_silence(tmp_path):
    done = run_script(tmp_path, proxy.switch("svc", "b", 0))
    assert done.returncode == 0, done.stderr
    assert (tmp_path / proxy.STATE_NAME).read_text() == "1\n# be_id be_name srv_id srv_name\n"
    silent = run_script(tmp_path / "x" if (tmp_path / "x").mkdir() is None else tmp_path,
                        proxy.switch("svc", "b", 0), silent=True)
    assert silent.returncode == 1
    assert "proxy: svc/b is not live after the change (its status: no answer)" in silent.stderr


def test_maintenance_is_proven_by_the_proxys_stats_not_by_its_silence(tmp_path):
    done = run_script(tmp_path, proxy.maintenance("svc", 0))
    assert done.returncode == 0, done.stderr
    silent = run_script(tmp_path, proxy.maintenance("svc", 0), silent=True)
    assert silent.returncode == 1
    assert "proxy: svc/a is not maint after the change (its status: no answer)" in silent.stderr


# -- a proxy that lost its live slot (HAProxy restarted without its state file) -----------------
def unserved_session(fleet, **faults):
    """Every host runs SERVICE T1 in slot a, recorded, and its proxy answers 503 (no live
    slot) though no one asked for maintenance."""
    session = live_on_a(fleet, FakeSession(fleet, ["mainpc", "pc2", "node3"], **faults))
    for h in session.hosts:
        session.facts_by_host[h].proxy[SERVICE] = {"a": "maint", "b": "maint"}
    return session


def rollout_of_what_runs(fleet, session) -> tuple:
    """A rollout of T1 (sha256:old) to three hosts that all run it: (its outcome, what it said)."""
    said: list[str] = []
    changes = changes_for(fleet, session, digest="sha256:old")
    assert not any(c.needed for cs in changes.values() for c in cs)
    outcome = Rollout(session, fleet, said.append, "rollout", "T1").run(
        [["mainpc"], ["pc2"], ["node3"]], changes)
    assert outcome.ok, outcome.lines
    return outcome, said


def test_a_rollout_with_nothing_to_change_sends_the_proxy_back_to_what_runs(fleet):
    fleet = three_hosts(fleet)
    session = unserved_session(fleet)
    session.facts_by_host["pc2"].proxy[SERVICE] = {"a": "live", "b": "maint"}    # serving
    outcome, said = rollout_of_what_runs(fleet, session)
    assert session.switches == [("mainpc", SERVICE, "a", "sha256:old"),
                                ("node3", SERVICE, "a", "sha256:old")]
    assert [kw["then"] for name, _, kw in session.runs if name == "switch"] == ["keep"]
    assert outcome.gate_seconds == 2.0      # the gates it ran (min_healthy 2s), not 0.00 s
    assert f"  mainpc     {SERVICE}: the proxy answers 503 though no one asked for maintenance: " \
           "gating what runs, then switching the proxy back to it" in said
    assert any(line.startswith(f"  mainpc     {SERVICE}: healthy") for line in said), said


def test_an_operators_maintenance_is_not_what_a_rollout_undoes(fleet):
    fleet = three_hosts(fleet)
    session = unserved_session(fleet)
    for h in session.hosts:
        session.facts_by_host[h].state[SERVICE]["maintenance"] = True
    outcome = Rollout(session, fleet, lambda m: None, "rollout", "T1").run(
        [["mainpc"], ["pc2"], ["node3"]], changes_for(fleet, session, digest="sha256:old"))
    assert outcome.ok and session.switches == [] and not probes(session)


def probes(session) -> list[str]:
    return [c for _, c, _ in session.commands if "probe $(date" in c]


def test_only_a_labelled_rig_container_that_serves_nothing_is_sent_back_to(fleet):
    """A container from before the proxy (no slot label) is not switched to (the next change
    replaces it); a kept container the proxy serves from (live_previous) is served already."""
    import dataclasses

    fleet = three_hosts(fleet)
    session = unserved_session(fleet)
    mainpc = session.facts_by_host["mainpc"]
    found = mainpc.containers[cmd.current(SERVICE)]
    mainpc.containers[found.name] = dataclasses.replace(found, slot="")
    pc2 = session.facts_by_host["pc2"]
    found = pc2.containers.pop(cmd.current(SERVICE))
    pc2.containers[cmd.previous(SERVICE)] = dataclasses.replace(found, name=cmd.previous(SERVICE))
    pc2.containers[found.name] = dataclasses.replace(found, slot="b", digest="sha256:unswitched")
    pc2.proxy[SERVICE] = {"a": "live", "b": "maint"}
    assert pc2.live_previous(SERVICE)
    outcome = Rollout(session, fleet, lambda m: None, "rollout", "T1").run(
        [["mainpc"], ["pc2"], ["node3"]], {h: cs for h, cs in changes_for(
            fleet, session, digest="sha256:old").items() if h != "node3"})
    assert outcome.ok and session.switches == [] and not probes(session)


def stray_on_pc2(fleet, **faults):
    """pc2: the recorded T1 serves as rig-S-prev (slot a); rig-S beside it runs T2 (slot b),
    which the proxy never sent to (a rollout or an abort killed before its switch)."""
    import dataclasses

    session = live_on_a(fleet, FakeSession(fleet, ["mainpc", "pc2", "node3"], **faults))
    pc2 = session.facts_by_host["pc2"]
    found = pc2.containers.pop(cmd.current(SERVICE))
    pc2.containers[cmd.previous(SERVICE)] = dataclasses.replace(found, name=cmd.previous(SERVICE))
    pc2.containers[found.name] = dataclasses.replace(found, slot="b", tag="T2",
                                                     digest="sha256:unswitched")
    assert pc2.live_previous(SERVICE)
    return session


def test_a_container_the_proxy_never_sent_to_goes_when_what_serves_is_wanted(fleet):
    fleet = three_hosts(fleet)
    session = stray_on_pc2(fleet)
    outcome, said = rollout_of_what_runs(fleet, session)
    pc2 = session.facts_by_host["pc2"]
    assert list(pc2.containers) == [cmd.current(SERVICE)]
    assert (pc2.containers[cmd.current(SERVICE)].digest, pc2.containers[cmd.current(SERVICE)].slot,
            pc2.proxy[SERVICE]["a"]) == ("sha256:old", "a", "live")
    assert [(n, h, kw["services"]) for n, h, kw in session.runs if n == "settle"] == [
        ("settle", ["pc2"], {"pc2": [SERVICE]})]
    assert session.switches == [] and not probes(session)
    assert f"  pc2        {SERVICE}: rig-{SERVICE} (T2) never took a request, beside the kept " \
           f"container that serves what is wanted: removed, and the kept one is rig-{SERVICE} " \
           "again" in said


def test_a_stray_that_is_wanted_is_switched_to_and_one_that_will_not_go_fails_the_rollout(fleet):
    fleet = three_hosts(fleet)
    session = stray_on_pc2(fleet)      # T2 wanted: the unswitched one is replaced, not removed
    changes = changes_for(fleet, session, digest="sha256:unswitched")
    outcome = Rollout(session, fleet, lambda m: None, "rollout", "T2").run(
        [["pc2"]], {"pc2": changes["pc2"]})
    assert not [r for r in session.runs if r[0] == "settle"]
    session = stray_on_pc2(fleet, switch_fails={"pc2"})
    outcome = Rollout(session, fleet, lambda m: None, "rollout", "T1").run(
        [["mainpc"], ["pc2"], ["node3"]], changes_for(fleet, session, digest="sha256:old"))
    assert not outcome.ok and outcome.lines == [
        "  pc2: could not remove the container the proxy never sent to (Settle | remove the "
        "container the proxy never sent to); what serves was not touched"]
    assert session.facts_by_host["pc2"].live_previous(SERVICE)
    session = stray_on_pc2(fleet)
    real = session.run
    session.run = lambda deploy, hosts=None, **kw: {} if deploy.__name__ == "settle" else real(
        deploy, hosts=hosts, **kw)
    outcome = Rollout(session, fleet, lambda m: None, "rollout", "T1").run(
        [["mainpc"], ["pc2"], ["node3"]], changes_for(fleet, session, digest="sha256:old"))
    assert not outcome.ok and outcome.lines == [
        "  pc2: could not remove the container the proxy never sent to (did not answer); what "
        "serves was not touched"]
    from rig.runner import HostResult

    session = stray_on_pc2(fleet)
    real = session.run
    session.run = lambda deploy, hosts=None, **kw: {
        "pc2": HostResult("pc2", unreachable="connection lost")} \
        if deploy.__name__ == "settle" else real(deploy, hosts=hosts, **kw)
    outcome = Rollout(session, fleet, lambda m: None, "rollout", "T1").run(
        [["mainpc"], ["pc2"], ["node3"]], changes_for(fleet, session, digest="sha256:old"))
    assert outcome.lines == ["  pc2: could not remove the container the proxy never sent to "
                             "(connection lost); what serves was not touched"]


def test_what_runs_but_fails_its_gate_stays_behind_the_503_and_the_rollout_fails(fleet):
    fleet = three_hosts(fleet)
    session = unserved_session(fleet, failing={("node3", SERVICE)})
    outcome = Rollout(session, fleet, lambda m: None, "rollout", "T1").run(
        [["mainpc"], ["pc2"], ["node3"]], changes_for(fleet, session, digest="sha256:old"))
    assert not outcome.ok
    assert [h for h, _, _, _ in session.switches] == ["mainpc", "pc2"]
    assert any(line.startswith(f"  node3: {SERVICE} runs but fails its gate (") and line.endswith(
        "): the proxy stays on its 503 answer") for line in outcome.lines), outcome.lines


def test_a_service_the_rollout_changes_is_not_switched_before_its_gate(fleet):
    """A needed change goes through its wave as always (the switch after its own gate)."""
    fleet = three_hosts(fleet)
    session = unserved_session(fleet)
    outcome = Rollout(session, fleet, lambda m: None, "rollout", "T2").run(
        [["mainpc"], ["pc2"], ["node3"]], changes_for(fleet, session))
    assert outcome.ok
    assert [(h, slot) for h, _, slot, _ in session.switches] == [
        ("mainpc", "b"), ("pc2", "b"), ("node3", "b")]


def test_without_the_proxy_or_its_read_nothing_is_switched(fleet):
    fleet = three_hosts(fleet)
    off = fleet.model_copy(update={"proxy": fleet.proxy.model_copy(update={"enabled": False})})
    session = unserved_session(fleet)
    outcome = Rollout(session, off, lambda m: None, "rollout", "T1").run(
        [["mainpc"], ["pc2"], ["node3"]], changes_for(off, session, digest="sha256:old"))
    assert outcome.ok and session.switches == [] and not probes(session)
    for h in session.hosts:
        session.facts_by_host[h].proxy = None           # not read
    outcome = Rollout(session, fleet, lambda m: None, "rollout", "T1").run(
        [["mainpc"], ["pc2"], ["node3"]], changes_for(fleet, session, digest="sha256:old"))
    assert outcome.ok and session.switches == []


def test_a_switch_back_that_fails_fails_the_rollout(fleet):
    fleet = three_hosts(fleet)
    session = unserved_session(fleet, switch_fails={"node3"})
    outcome = Rollout(session, fleet, lambda m: None, "rollout", "T1").run(
        [["mainpc"], ["pc2"], ["node3"]], changes_for(fleet, session, digest="sha256:old"))
    assert not outcome.ok
    assert ("  node3: the proxy could not be switched (Switch | proxy back to the container "
            "that runs); what runs passed its gate") in outcome.lines


def test_a_proxy_read_only_once_is_no_change_between_the_reads():
    from rig.rollout.engine import _changes
    from tasks.rollout import RolloutFacts

    seen = RolloutFacts(proxy={"svc": {"a": "live", "b": "maint"}})
    assert _changes(RolloutFacts(proxy=None), seen) == []
    assert _changes(seen, RolloutFacts(proxy=None)) == []
    assert _changes(seen, RolloutFacts(proxy={"svc": {"a": "maint", "b": "live"}})) == ["svc: proxy"]


# -- a host's services switch at once -------------------------------------------------------------
def test_concurrent_commands_overlap_each_exit_ends_only_its_own_and_any_failure_fails_the_line(
        tmp_path):
    import subprocess

    from rig.commands.base import Cmd, concurrently

    out = tmp_path / "order"
    line = concurrently(Cmd(f"sleep 0.5; echo slow >> {out}"),
                        Cmd(f"echo quick >> {out}; exit 3"),
                        then=Cmd(f"echo then >> {out}"))
    done = subprocess.run(["sh", "-c", line], capture_output=True, text=True, timeout=30)
    assert done.returncode == 1
    # the quick one did not wait for the slow one, its exit did not end the slow one, and
    # `then` came after both
    assert out.read_text().split() == ["quick", "slow", "then"]
    ok_line = concurrently(Cmd("true"), Cmd("true"), then=Cmd("false"))
    assert subprocess.run(["sh", "-c", ok_line], timeout=30).returncode == 0
    named = concurrently(Cmd("true"), Cmd("exit 2"), labels=["a: run T", "b's: run T"])
    done = subprocess.run(["sh", "-c", named], capture_output=True, text=True, timeout=30)
    assert done.returncode == 1 and done.stderr == "rig: failed: b's: run T\n"
    assert concurrently(Cmd("echo one")) == "echo one"
    assert subprocess.run(["sh", "-c", concurrently()], timeout=30).returncode == 0


def test_a_hosts_switches_run_at_once_and_the_proxys_state_is_saved_after_all_of_them():
    line = str(cmd.switch_all([("a", 30, 10, False), ("b", 0, None, True)]))
    first, second = str(cmd.switch_to_current("a", 30, 10)), \
        str(cmd.switch_to_current("b", 0, None, remove_previous=True))
    assert line.index(f"( {first} ) &") < line.index(f"( {second} ) &") \
        < line.index("wait $_p0") < line.index("wait $_p1") < line.index(
            str(proxy.save_state())) < line.index("[ $_rc -eq 0 ]")
    # one service: its switch as it is, nothing around it
    assert str(cmd.switch_all([("a", 30, 10, False)])) == first


def test_a_save_leaves_no_temporary_file_and_clears_those_a_killed_save_left(tmp_path):
    import os
    import time

    stale, fresh = (tmp_path / f"{proxy.STATE_NAME}.new.{n}" for n in (111, 222))
    stale.write_text("")
    fresh.write_text("")
    os.utime(stale, (time.time() - 120, time.time() - 120))   # a save killed 2 minutes ago
    done = run_script(tmp_path, proxy.switch("svc", "b", 0))
    assert done.returncode == 0, done.stderr
    # the stale one went; one as young as a save at work beside this one stays
    assert sorted(p.name for p in tmp_path.glob(f"{proxy.STATE_NAME}*")) == [
        proxy.STATE_NAME, fresh.name]
    fresh.unlink()
    failed = run_script(tmp_path, proxy.save_state().replace('[ ! -S "$sock" ] || ', ""),
                        silent=True)      # an empty answer: not saved, and nothing left
    assert failed.returncode == 1 and "could not be saved" in failed.stderr
    assert sorted(p.name for p in tmp_path.glob(f"{proxy.STATE_NAME}*")) == [proxy.STATE_NAME]


def test_each_save_writes_its_own_temporary_file_so_two_at_once_cannot_mix():
    assert f"t={proxy.STATE}.new.$$;" in proxy._HELPERS
    assert f"> {proxy.STATE}.new " not in proxy._HELPERS
