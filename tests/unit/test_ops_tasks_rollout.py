"""tasks/rollout.py as data: a fake pyinfra host with RolloutState in, the commands each operation
yields out (exact strings), and which operation each deploy calls for which host."""

from __future__ import annotations

import base64
import json
import logging
import re

import pytest
from pyinfra.context import ctx_host

from rig.commands import container as cmd
from rig.commands import proxy
from rig.commands.base import all_of
from rig.secrets import Secret
from tasks import rollout as tasks_rollout
from tasks.rollout import (
    Container,
    RolloutFacts,
    RolloutState,
    parse_rollout_facts,
    release_restored,
    releases_running,
)
from tasks.util import Shell

from . import fakes
from .fakes import run_op

SERVICE = "model_ops_coordinator"
CURRENT, PREVIOUS = f"rig-{SERVICE}", f"rig-{SERVICE}-prev"


def FakeHost(fleet, facts: RolloutFacts, name="mainpc") -> fakes.FakeHost:  # noqa: N802
    """The shared fake host (fakes.py), with the fleet first as these tests pass it."""
    return fakes.FakeHost(facts, fleet, name)


def lines(commands) -> list[str]:
    return [str(c) for c in commands]


def swaps_of(commands) -> list[str]:
    """The swap of each service in a swap step (tasks_rollout.swap_step), as it runs."""
    [step] = lines(commands)
    return re.findall(r"\( (.*?) \) & _p\d+=\$!", step)


def release(fleet, tag="T2", digest="sha256:" + "b" * 64, secrets=None) -> cmd.Release:
    ph = fleet.profile_of("mainpc").content_hash()
    config = cmd.container_config(fleet, "mainpc", SERVICE, digest, ph, secrets or {})
    return cmd.Release(SERVICE, tag, f"reg.example/rig/{SERVICE}", digest, ph, config)


def container(name, state, r: cmd.Release) -> Container:
    return Container(name, state, r.service, r.tag, r.digest, r.profile_hash, r.config_hash,
                     r.config)


# -- releases_running -----------------------------------------------------------------------------
def test_releases_running_is_a_noop_when_the_release_already_runs(fleet):
    r = release(fleet)
    fake = FakeHost(fleet, RolloutFacts(containers={CURRENT: container(CURRENT, "running", r)}))
    assert run_op(releases_running, spooled=True, host=fake, releases=[r]) == []
    assert fake.noops == [f"{SERVICE} already runs T2"]


def test_releases_running_on_a_fresh_host_runs_the_pulled_image_by_digest(fleet):
    r = release(fleet)
    fake = FakeHost(fleet, RolloutFacts())
    out = swaps_of(run_op(releases_running, spooled=True, host=fake, releases=[r]))
    assert len(out) == 1 and out[0].startswith(f"docker run -d --name {CURRENT} ")
    assert f" reg.example/rig/{SERVICE}@sha256:{'b' * 64}" in out[0]
    assert fake.noops == []


def with_strategy(fleet, strategy: str):
    return fleet.model_copy(update={"rollout": fleet.rollout.model_copy(
        update={"strategy": strategy})})


def container_in(name, state, r: cmd.Release, slot: str) -> Container:
    return Container(name, state, r.service, r.tag, r.digest, r.profile_hash, r.config_hash,
                     r.config, slot)


def test_start_first_keeps_the_old_one_running_and_starts_the_new_one_in_the_other_slot(fleet):
    """MainPC's 24 GiB take two copies of the 8 GiB model: the old one is only renamed (it
    serves on through the proxy), the new one starts beside it in slot b."""
    new, old = release(fleet), release(fleet, "T1", "sha256:" + "a" * 64)
    fake = FakeHost(fleet, RolloutFacts(containers={
        CURRENT: container_in(CURRENT, "running", old, "a"),
        PREVIOUS: container_in(PREVIOUS, "exited", old, "b")}))
    out = swaps_of(run_op(releases_running, spooled=True, host=fake, releases=[new]))
    assert len(out) == 1
    assert out[0].startswith(f"docker rm -f {PREVIOUS} && docker rename {CURRENT} {PREVIOUS} && "
                             f"docker run -d --name {CURRENT} --network rig "
                             "-p 127.0.0.1:28212:8212 ")
    assert "docker stop" not in out[0] and "rig.slot=b" in out[0]


def test_stop_first_puts_the_service_in_maintenance_before_the_old_one_stops(fleet):
    """PC2's 12 GiB do not: the proxy answers 503 maintenance (open requests finish first),
    then the old one stops and is kept, the new one starts in the other slot."""
    new, old = release(fleet), release(fleet, "T1", "sha256:" + "a" * 64)
    fake = FakeHost(fleet, RolloutFacts(containers={
        CURRENT: container_in(CURRENT, "running", old, "b"),
        PREVIOUS: container_in(PREVIOUS, "exited", old, "a")}), name="pc2")
    out = swaps_of(run_op(releases_running, spooled=True, host=fake, releases=[new]))
    maintenance = str(proxy.maintenance(SERVICE, 30))
    assert out[0].startswith(f"docker rm -f {PREVIOUS} && {maintenance} && docker stop -t 10 "
                             f"{CURRENT} && docker rename {CURRENT} {PREVIOUS} && "
                             f"docker run -d --name {CURRENT} --network rig "
                             "-p 127.0.0.1:18212:8212 ")


def test_a_stopped_container_of_the_same_release_is_replaced_not_kept_as_is(fleet):
    r = release(fleet)
    fleet = with_strategy(fleet, "stop_first")
    fake = FakeHost(fleet, RolloutFacts(containers={CURRENT: container(CURRENT, "exited", r)}))
    out = swaps_of(run_op(releases_running, spooled=True, host=fake, releases=[r]))
    assert out[0].startswith(f"{proxy.maintenance(SERVICE, 30)} && docker stop -t 10 {CURRENT} "
                             f"&& docker rename {CURRENT} {PREVIOUS} && "
                             f"docker run -d --name {CURRENT} ")
    assert fake.noops == []


@pytest.mark.parametrize("ok", [True, False])
def test_write_secret_sends_the_value_base64_on_stdin_never_in_the_command(fleet, monkeypatch,
                                                                          caplog, ok):
    calls = []

    def shell(host, command, stdin=None, timeout=None):
        calls.append((str(command), stdin, timeout))
        return Shell(ok, "", [] if ok else ["chown: invalid user"])
    monkeypatch.setattr(tasks_rollout, "host_shell", shell)
    fake = FakeHost(fleet, RolloutFacts())
    with caplog.at_level(logging.ERROR, logger="pyinfra"):
        assert tasks_rollout._write_secret(None, fake, SERVICE, "HF_TOKEN", Secret("s3cret", "env TEST"),
                                           "v1") is ok
    assert calls == [(cmd.write_secret(SERVICE, "HF_TOKEN", "v1").line,
                      base64.b64encode(b"s3cret").decode(), 30)]
    assert "s3cret" not in calls[0][0]
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == ([] if ok else
                      [f"[mainpc] could not write secret HF_TOKEN of {SERVICE}: chown: invalid user"])


# -- release_restored -----------------------------------------------------------------------------
def test_restore_is_a_noop_when_the_service_runs_what_it_ran_before(fleet):
    old = release(fleet, "T1", "sha256:" + "a" * 64)
    fake = FakeHost(fleet, RolloutFacts(containers={CURRENT: container(CURRENT, "running", old)}))
    before = {"tag": "T1", "digest": old.digest}
    assert run_op(release_restored, spooled=True, host=fake, service=SERVICE, before=before) == []
    assert fake.noops == [f"{SERVICE} already runs its previous version"]


def test_restore_starts_the_kept_container_again(fleet):
    new, old = release(fleet), release(fleet, "T1", "sha256:" + "a" * 64)
    fake = FakeHost(fleet, RolloutFacts(containers={
        CURRENT: container(CURRENT, "running", new), PREVIOUS: container(PREVIOUS, "exited", old)}))
    out = lines(run_op(release_restored, spooled=True, host=fake, service=SERVICE,
                       before={"tag": "T1", "digest": old.digest}))
    # one command: a host that stopped between the two would run nothing
    assert out == [f"{{ docker rm -f {CURRENT} >/dev/null 2>&1 || true; }} && "
                   f"docker rename {PREVIOUS} {CURRENT} && docker start {CURRENT}"]


def test_restore_without_a_kept_container_fails_the_host_naming_the_version(fleet):
    new = release(fleet)
    fake = FakeHost(fleet, RolloutFacts(containers={CURRENT: container(CURRENT, "running", new)}))
    out = lines(run_op(release_restored, spooled=True, host=fake, service=SERVICE,
                       before={"tag": "T1", "digest": "sha256:" + "a" * 64}))
    assert out == [f"echo 'rig: {SERVICE}: no kept container to go back to T1' >&2; exit 1"]


def test_restore_of_a_first_rollout_removes_the_new_container(fleet):
    new = release(fleet)
    fake = FakeHost(fleet, RolloutFacts(containers={CURRENT: container(CURRENT, "running", new)}))
    out = lines(run_op(release_restored, spooled=True, host=fake, service=SERVICE, before=None))
    assert out == [f"docker rm -f {CURRENT} >/dev/null 2>&1 || true"]


# -- the deploys: which operation for which host ---------------------------------------------------
@pytest.fixture
def ops_log(monkeypatch):
    log: list[tuple] = []
    for name in ("releases_running", "release_restored", "recorded", "images_pulled",
                 "secrets_written"):
        monkeypatch.setattr(tasks_rollout, name,
                            lambda name_=name, **kw: log.append((name_, kw)))
    return log


def run_deploy(deploy, fake, **kwargs):
    with ctx_host.use(fake):
        deploy._inner(**kwargs)


def test_roll_out_runs_this_hosts_releases_with_their_services_secrets(fleet, ops_log):
    r = release(fleet)
    other = cmd.Release("real_time_audio_pipeline", "T2", "reg/x", "sha256:3", "ph")
    secrets = {SERVICE: {"HF_TOKEN": Secret("v", "env TEST")}}
    run_deploy(tasks_rollout.roll_out, FakeHost(fleet, RolloutFacts()),
               releases={"mainpc": [r, other], "pc2": [r]}, secrets=secrets)
    assert ops_log == [
        ("images_pulled", {"name": "pull images", "releases": [r, other], "known": None}),
        ("secrets_written", {"name": "secrets", "releases": [r, other], "secrets": secrets,
                             "known": None}),
        ("releases_running", {"name": f"{SERVICE}: run T2, real_time_audio_pipeline: run T2",
                              "releases": [r, other], "known": None})]
    ops_log.clear()
    run_deploy(tasks_rollout.roll_out, FakeHost(fleet, RolloutFacts(), "node9"),
               releases={"mainpc": [r]})
    assert ops_log == []


def test_roll_back_restores_only_services_off_their_previous_version(fleet, ops_log):
    new, old = release(fleet), release(fleet, "T1", "sha256:" + "a" * 64)
    audio = "real_time_audio_pipeline"
    audio_release = cmd.Release(audio, "T1", "reg/a", "sha256:9", "ph")
    facts = RolloutFacts(containers={
        CURRENT: container(CURRENT, "running", new), PREVIOUS: container(PREVIOUS, "exited", old),
        f"rig-{audio}": container(f"rig-{audio}", "running", audio_release)})
    before = {SERVICE: {"tag": "T1", "digest": old.digest},
              audio: {"tag": "T1", "digest": "sha256:9"}}
    restored: dict = {}
    run_deploy(tasks_rollout.roll_back, FakeHost(fleet, facts),
               services={"mainpc": before}, restored=restored)
    assert restored == {"mainpc": [SERVICE]}
    assert ops_log == [("release_restored", {"name": f"{SERVICE}: restore previous",
                                             "service": SERVICE, "before": before[SERVICE]})]
    ops_log.clear()
    run_deploy(tasks_rollout.roll_back, FakeHost(fleet, facts, "pc2"),
               services={"mainpc": before}, restored=restored)
    assert ops_log == [] and "pc2" not in restored


def test_record_is_one_operation_per_host_with_what_that_host_finished_and_records(fleet,
                                                                                   ops_log):
    entries = {"mainpc": [{"e": 1}], "pc2": [{"e": 2}]}
    states = {"mainpc": {"s": 1}, "pc2": {"s": 2}}
    for name in ("mainpc", "pc2", "node9"):   # node9: nothing finished, nothing to record
        run_deploy(tasks_rollout.record, FakeHost(fleet, RolloutFacts(), name), entries=entries,
                   states=states, finished={"mainpc": [SERVICE]})
    step = "ledger, state and clean-up"
    assert ops_log == [
        ("recorded", {"name": step, "finished": [SERVICE], "entries": [{"e": 1}],
                      "state_doc": {"s": 1}}),
        ("recorded", {"name": step, "finished": [], "entries": [{"e": 2}], "state_doc": {"s": 2}}),
        ("recorded", {"name": step, "finished": [], "entries": [], "state_doc": None})]


# -- the fact ---------------------------------------------------------------------------------------
def test_rollout_state_fact_is_one_command_and_parses_every_section():
    fact = RolloutState()
    assert fact.command() == cmd.rollout_state_command()
    lock = base64.b64encode(json.dumps({"operator": "bo@x", "pid": 7}).encode()).decode()
    facts = fact.process([
        "--- time", "1700000000", "--- docker", "inactive",
        "--- containers", "rig-svc\trunning\tsvc\tT1\tsha256:1\tph\tch\t{}", "too\tfew",
        "--- gpu", "no nvidia-smi",
        "--- gpu-pids", "123 /rig-svc", "x /bad", "456",
        "--- lock", f"{cmd.LOCK_PRESENT} abc123", lock,
        "--- state", "{not json"])
    assert facts.host_time == 1700000000.0 and not facts.docker_active
    assert list(facts.containers) == ["rig-svc"]
    assert facts.containers["rig-svc"].config_hash == "ch"
    assert facts.gpu_error == "nvidia-smi is not installed" and facts.gpus == []
    assert facts.gpu_containers == {123: "rig-svc"}
    assert facts.lock == {"operator": "bo@x", "pid": 7} and facts.lock_sha == "abc123"
    # state.json unreadable: rebuilt from the running containers' labels, with a warning
    assert facts.state == {"svc": {"tag": "T1", "digest": "sha256:1", "profile_hash": "ph",
                                   "config_hash": "ch", "since": None, "previous": None}}
    assert facts.warnings == ["state.json was unreadable ('{not json'...): rebuilt from the "
                              "running containers' labels"]


def test_a_failing_nvidia_smi_is_named_with_its_first_line():
    facts = parse_rollout_facts(["--- time", "soon", "--- gpu",
                                 "NVIDIA-SMI has failed because it couldn't communicate", "x"])
    assert facts.host_time is None
    assert facts.gpu_error == ("nvidia-smi failed: NVIDIA-SMI has failed because it couldn't "
                               "communicate")


def test_an_unswitched_container_beside_a_live_kept_one_is_replaced_and_the_live_one_kept(fleet):
    """A start_first rollout that never switched (its gate failed under auto_rollback: none):
    v1 as -prev still serves (the proxy is on its slot a), v2 beside it in b never took a
    request. The next rollout removes v2, never the live v1, and starts v3 in slot b; v1 is
    what the host runs, so a rollback goes back to it."""
    new, v1 = release(fleet), release(fleet, "T1", "sha256:" + "a" * 64)
    v2 = release(fleet, "T1.5", "sha256:" + "c" * 64)
    facts = RolloutFacts(containers={
        CURRENT: container_in(CURRENT, "running", v2, "b"),
        PREVIOUS: container_in(PREVIOUS, "running", v1, "a")},
        proxy={SERVICE: {"a": "live", "b": "maint"}})
    assert facts.live_previous(SERVICE) and facts.running(SERVICE).digest == v1.digest
    out = swaps_of(run_op(releases_running, spooled=True, host=FakeHost(fleet, facts), releases=[new]))
    assert out[0].startswith(f"docker rm -f {CURRENT} && docker run -d --name {CURRENT} "
                             "--network rig -p 127.0.0.1:28212:8212 ")
    assert PREVIOUS not in out[0]
    # on pc2 (stop_first) the live one goes behind the maintenance answer and stops, kept
    pc2 = swaps_of(run_op(releases_running, spooled=True, host=FakeHost(fleet, facts, name="pc2"),
                       releases=[new]))
    assert pc2[0].startswith(f"docker rm -f {CURRENT} && {proxy.maintenance(SERVICE, 30)} && "
                             f"docker stop -t 10 {PREVIOUS} && docker run -d --name {CURRENT} ")


@pytest.mark.parametrize("proxy_state, prev_state, current_slot, live_previous", [
    ({"a": "live", "b": "maint"}, "running", "b", True),
    ({"a": "maint", "b": "live"}, "running", "b", False),    # switched: rig-X serves
    ({"a": "live", "b": "maint"}, "exited", "b", False),     # the kept one does not run
    ({"a": "maint", "b": "maint"}, "running", "b", False),   # maintenance: nothing live
    ({"a": "live", "b": "maint"}, "running", "a", False),    # rig-X is on the live slot
    (None, "running", "b", False),                            # no proxy read
    ({"a": "live", "b": "maint"}, "running", None, True),     # rig-X removed by hand
    ({"a": "maint", "b": "live"}, "running", None, False),    # the proxy is on another slot
])
def test_the_kept_container_serves_only_when_the_proxy_is_on_its_slot(
        fleet, proxy_state, prev_state, current_slot, live_previous):
    v1, v2 = release(fleet, "T1", "sha256:" + "a" * 64), release(fleet)
    containers = {PREVIOUS: container_in(PREVIOUS, prev_state, v1, "a")}
    if current_slot:
        containers[CURRENT] = container_in(CURRENT, "running", v2, current_slot)
    facts = RolloutFacts(containers=containers,
                         proxy={SERVICE: proxy_state} if proxy_state else None)
    assert facts.live_previous(SERVICE) is live_previous
    serving = facts.running(SERVICE)
    assert (serving.digest if serving else None) == (
        v1.digest if live_previous else v2.digest if current_slot else None)


# -- release_restored behind the proxy ---------------------------------------------------------
@pytest.mark.parametrize("host, proxy_state, expected", [
    # switched to v2 (slot b), start_first: warm, v1 starts beside the serving v2
    ("mainpc", {"a": "maint", "b": "live"}, "warm"),
    # switched, stop_first (two copies do not fit): the 503 first, open requests drained
    ("pc2", {"a": "maint", "b": "live"}, "drain"),
    # never switched (its gate failed): the proxy is still on v1, v2 took no request
    ("mainpc", {"a": "live", "b": "maint"}, "cold"),
    ("pc2", {"a": "maint", "b": "maint"}, "cold"),     # in maintenance
    ("mainpc", None, "cold"),                          # no proxy read
    ("mainpc", {"a": "live", "b": "maint"}, "cold"),   # the proxy on the kept one's slot
])
def test_a_restore_goes_back_warm_behind_a_503_or_plainly_as_the_proxy_stands(
        fleet, host, proxy_state, expected):
    v1, v2 = release(fleet, "T1", "sha256:" + "a" * 64), release(fleet)
    facts = RolloutFacts(containers={CURRENT: container_in(CURRENT, "running", v2, "b"),
                                     PREVIOUS: container_in(PREVIOUS, "exited", v1, "a")},
                         proxy={SERVICE: proxy_state} if proxy_state else None)
    out = lines(run_op(release_restored, spooled=True,
                       host=FakeHost(fleet, facts, name=host), service=SERVICE,
                       before={"tag": "T1", "digest": v1.digest}))
    assert out == [all_of(*cmd.restore_commands(SERVICE, True, warm=expected == "warm",
                                                drain=30.0 if expected == "drain" else None))]


def test_a_warm_restore_needs_the_kept_one_in_the_other_slot(fleet):
    """A kept container with no slot label (from before the proxy) or on the same slot cannot
    start beside the serving one: the restore goes behind the 503 instead."""
    v1, v2 = release(fleet, "T1", "sha256:" + "a" * 64), release(fleet)
    for kept_slot in ("", "b"):
        facts = RolloutFacts(containers={CURRENT: container_in(CURRENT, "running", v2, "b"),
                                         PREVIOUS: container_in(PREVIOUS, "exited", v1, kept_slot)},
                             proxy={SERVICE: {"a": "maint", "b": "live"}})
        out = lines(run_op(release_restored, spooled=True, host=FakeHost(fleet, facts), service=SERVICE,
                           before={"tag": "T1", "digest": v1.digest}))
        assert out == [all_of(*cmd.restore_commands(SERVICE, True, drain=30.0))]


@pytest.mark.parametrize("host, then, expected", [
    ("mainpc", "stop", lambda: cmd.switch_to_current(SERVICE, 30.0, 10)),
    ("mainpc", "remove", lambda: cmd.switch_to_current(SERVICE, 30.0, None, remove_previous=True)),
    ("mainpc", "keep", lambda: cmd.switch_to_current(SERVICE, 0, None)),
    # stop_first: the kept one stopped before the new one started; nothing to drain or stop
    ("pc2", "stop", lambda: cmd.switch_to_current(SERVICE, 0, None)),
])
def test_the_switch_stops_removes_or_keeps_the_kept_container(fleet, host, then, expected):
    out = lines(run_op(tasks_rollout.proxy_switched, spooled=True,
                       host=FakeHost(fleet, RolloutFacts(), name=host),
                       services=[SERVICE], then=then))
    assert out == [str(expected())]


def test_only_a_running_new_container_the_proxy_sends_to_makes_the_restore_warm(fleet):
    from rig.rollout.strategy import strategy_for

    v1, v2 = release(fleet, "T1", "sha256:" + "a" * 64), release(fleet)
    switched = {SERVICE: {"a": "maint", "b": "live"}}
    start_first = strategy_for(fleet, "mainpc", SERVICE)

    def way(current_state="running", proxy_state=switched, strategy=start_first):
        containers = {PREVIOUS: container_in(PREVIOUS, "exited", v1, "a")}
        if current_state:
            containers[CURRENT] = container_in(CURRENT, current_state, v2, "b")
        return tasks_rollout.restore_way(RolloutFacts(containers=containers, proxy=proxy_state),
                                         SERVICE, strategy)
    assert way() == (True, None)
    assert way(current_state="exited") == (False, None)     # crashed: serves nothing
    assert way(current_state=None) == (False, None)         # removed by hand
    assert way(proxy_state=None) == (False, None)           # no proxy read
    off = fleet.model_copy(update={"proxy": fleet.proxy.model_copy(update={"enabled": False})})
    assert way(strategy=strategy_for(off, "mainpc", SERVICE)) == (False, None)


def test_a_hosts_services_switch_in_one_command(fleet):
    other = next(s for s in sorted(fleet.services_on("mainpc")) if s != SERVICE)
    out = lines(run_op(tasks_rollout.proxy_switched, spooled=True, host=FakeHost(fleet, RolloutFacts()),
                       services=[SERVICE, other], then="remove"))
    assert out == [str(cmd.switch_all([(SERVICE, 30.0, None, True), (other, 30.0, None, True)]))]


def test_with_the_proxy_off_the_switch_runs_nothing_and_says_so(fleet):
    off = fleet.model_copy(update={"proxy": fleet.proxy.model_copy(update={"enabled": False})})
    host = FakeHost(off, RolloutFacts())
    assert run_op(tasks_rollout.proxy_switched, spooled=True,
                  host=host, services=[SERVICE], then="stop") == []
    assert host.noops == [f"{SERVICE}: no proxy"]
