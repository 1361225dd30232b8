"""The host side of a rollout (tasks/rollout.py) as data: the RolloutState fact parsed from what a
host prints, and what each operation and deploy yields or calls for a given state of the host."""

from __future__ import annotations

import base64
import json
import logging

import pytest
from pyinfra.context import ctx_host

import tasks.rollout as ops
from rig.commands import container as cmd
from rig.commands.base import all_of, fail
from rig.secrets import Secret
from tasks.rollout import (
    Container,
    RolloutFacts,
    RolloutState,
    parse_rollout_facts,
)
from tasks.util import Shell

from .fakes import FakeHost, run_op

PH = "f" * 64


def box(service, state="running", tag="T1", digest="sha256:1", name=None, config="", slot="a"):
    return Container(name or cmd.current(service), state, service, tag, digest, PH,
                     cmd.Release(service, tag, "r", digest, PH, config).config_hash, config, slot)


def release(service="svc", tag="T2", digest="sha256:2", config=""):
    return cmd.Release(service, tag, "reg/" + service, digest, PH, config)


# -- the fact -----------------------------------------------------------------------------------------
GPU_LINE = ("0, GPU-00000000-0000-0000-0000-000000004090, NVIDIA GeForce RTX 4090, 8.9, 24564, "
            "3000, 535.129.03")
APP_LINE = "GPU-00000000-0000-0000-0000-000000004090, 4242, /opt/venv/bin/python, 3000"


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def host_output(**sections) -> list[str]:
    base = {"time": ["1700000123"], "gpu": [GPU_LINE], "gpu-apps": [APP_LINE],
            "gpu-pids": ["4242 /rig-svc", "77", "x9 /rig-other"], "docker": ["active"],
            "profile": [PH],
            "containers": ["rig-svc\trunning\tsvc\tT1\tsha256:1\tph\tch\t{\"m\": 1}",
                           "rig-svc-prev\texited\tsvc\tT0\tsha256:0\tph",
                           "rig-other\trunning\tother\tT5\tsha256:5\tph\tch5",
                           "rig-new\trunning\tnew\tT6\tsha256:6\tph\tch6\t{}\tb",
                           "", "five\tfields\tonly\there\tnow",
                           "ten\ta\tb\tc\td\te\tf\tg\th\ti"],
            "proxy": ["proxy answers", "new a MAINT 0", "new b no_check 3", "svc a DRAIN 1",
                      "svc b MAINT 0", "svc c UP 0", "junk"],
            "state": ['{"svc": {"tag": "T1", "digest": "sha256:1"}}'],
            "lock": ["@present " + "a" * 64, b64('{"id": "ops-1", "operator": "ops"}')]}
    base.update(sections)
    return [line for title, body in base.items() for line in (f"--- {title}", *body)]


def test_the_fact_reads_every_section_a_host_prints():
    facts = parse_rollout_facts(host_output())
    assert facts.host_time == 1700000123.0
    assert facts.docker_active is True and facts.profile_hash == PH
    assert sorted(facts.containers) == ["rig-new", "rig-other", "rig-svc", "rig-svc-prev"]
    assert facts.containers["rig-new"].slot == "b" and facts.containers["rig-svc"].slot == ""
    assert facts.proxy == {"new": {"a": "maint", "b": "live"}, "svc": {"a": "drain", "b": "maint"}}
    assert facts.proxy_missing is False
    assert facts.containers["rig-svc"] == Container("rig-svc", "running", "svc", "T1", "sha256:1",
                                                    "ph", "ch", '{"m": 1}')
    assert facts.containers["rig-svc-prev"].config_hash == ""
    assert facts.state == {"svc": {"tag": "T1", "digest": "sha256:1"}} and facts.warnings == []
    assert facts.lock == {"id": "ops-1", "operator": "ops"} and facts.lock_sha == "a" * 64
    assert [(g.index, g.name) for g in facts.gpus] == [(0, "NVIDIA GeForce RTX 4090")]
    assert [a.pid for a in facts.gpu_apps] == [4242]
    assert facts.gpu_containers == {4242: "rig-svc"} and facts.gpu_error is None
    assert RolloutState().process(host_output()) == facts


def test_a_host_that_printed_nothing_has_no_engine_profile_lock_or_state():
    facts = parse_rollout_facts(host_output(time=["soon"], docker=["inactive"], profile=[""],
                                            containers=[], state=[], lock=[], gpu=[], proxy=[], **{
                                                "gpu-apps": [], "gpu-pids": []}))
    assert facts == RolloutFacts()
    assert parse_rollout_facts([]).docker_active is False
    no_proxy = parse_rollout_facts(host_output(proxy=["no proxy"]))
    assert no_proxy.proxy is None and no_proxy.proxy_missing is True
    assert RolloutFacts().docker_active is False


def test_the_one_round_trip_command_prints_every_section():
    command = str(RolloutState().command())
    assert all(f"--- {title}" in command for title in
               ("time", "gpu", "gpu-apps", "gpu-pids", "docker", "profile", "containers",
                "state", "lock"))


@pytest.mark.parametrize("gpu,error", [
    (["no nvidia-smi"], "nvidia-smi is not installed"),
    (["NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.",
      "second line"],
     "nvidia-smi failed: NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA "
     "driver."),
    (["x" * 300], "nvidia-smi failed: " + "x" * 160),
    ([], None),
    ([GPU_LINE], None),
])
def test_why_a_host_lists_no_gpu(gpu, error):
    assert parse_rollout_facts(host_output(gpu=gpu)).gpu_error == error


def test_a_lock_section_without_the_present_marker_is_no_lock():
    facts = parse_rollout_facts(host_output(lock=[b64('{"id": "ops-1"}')]))
    assert facts.lock is None and facts.lock_sha is None
    facts = parse_rollout_facts(host_output(lock=["@present ", b64('{"id": "ops-1"}')]))
    assert facts.lock == {"id": "ops-1"} and facts.lock_sha is None
    facts = parse_rollout_facts(host_output(lock=["@present " + "b" * 64]))
    assert facts.lock == {"malformed": "empty"} and facts.lock_sha == "b" * 64


def test_running_names_only_a_running_current_container():
    facts = parse_rollout_facts(host_output())
    assert facts.running("svc").digest == "sha256:1"
    assert facts.running("nothing") is None
    facts.containers["rig-svc"] = box("svc", state="exited")
    assert facts.running("svc") is None
    assert box("svc", state="restarting").running is False and box("svc").running is True


@pytest.mark.parametrize("state", ['{"half": ', '[1, 2]', '{"svc": {"tag": "T1"}}',
                                   '{"svc": {"tag": "T1", "digest": 7}}', '"text"'])
def test_a_state_json_not_of_the_right_shape_is_rebuilt_from_running_current_containers(state):
    lines = host_output(state=[state], containers=[
        "rig-svc\trunning\tsvc\tT1\tsha256:1\tph\tch",
        "rig-old\texited\told\tT0\tsha256:0\tph",                    # not running
        "rig-svc2-prev\trunning\tsvc2\tT3\tsha256:3\tph",            # not the current one
        "rig-bare\trunning\tbare\tT4\tsha256:4\tph"])                # no config label
    facts = parse_rollout_facts(lines)
    assert facts.state == {
        "svc": {"tag": "T1", "digest": "sha256:1", "profile_hash": "ph", "config_hash": "ch",
                "since": None, "previous": None},
        "bare": {"tag": "T4", "digest": "sha256:4", "profile_hash": "ph", "config_hash": None,
                 "since": None, "previous": None}}
    assert facts.warnings == [f"state.json was unreadable ({state.strip()[:60]!r}...): rebuilt from the "
                              "running containers' labels"]


# -- operations ---------------------------------------------------------------------------------------
def test_a_release_is_swapped_in_the_slot_the_running_one_is_not_in(fleet):
    svc = "affective_processing_center"
    facts = RolloutFacts(containers={cmd.current(svc): box(svc),
                                     cmd.previous(svc): box(svc, "exited")})
    rel = release(svc)
    label = f"{svc}: run T2"
    # a service that uses no GPU: start_first, in the slot the running one is not in; undone
    # if the host ends it after rig gave up on it: the one it kept back, or nothing
    how = {"strategy": "start_first", "drain": 30.0}
    assert run_op(ops.releases_running, spooled=True, host=FakeHost(facts, fleet),
                  releases=[rel]) == [ops.swap_step([(label, cmd.swap_command(
                      fleet, "mainpc", rel, has_current=True, has_previous=True, slot="b", **how),
                      cmd.undo_swap(svc, kept=True, proxied=True))])]
    only_prev = RolloutFacts(containers={cmd.previous(svc): box(svc, "exited")})
    assert run_op(ops.releases_running, spooled=True, host=FakeHost(only_prev, fleet),
                  releases=[rel]) == [ops.swap_step([(label, cmd.swap_command(
                      fleet, "mainpc", rel, has_current=False, has_previous=True, slot="a", **how),
                      cmd.undo_swap(svc, kept=False, proxied=True))])]
    from rig.commands.base import FAILED_MARK
    assert FAILED_MARK not in run_op(ops.releases_running, spooled=True,    # one: its own
                                     host=FakeHost(facts, fleet), releases=[rel])[0].line  # name
    first = RolloutFacts()
    assert run_op(ops.releases_running, spooled=True, host=FakeHost(first, fleet),
                  releases=[rel]) == [ops.swap_step([(label, cmd.swap_command(
                      fleet, "mainpc", rel, has_current=False, has_previous=False, slot="a",
                      **how), cmd.undo_swap(svc, kept=False, proxied=True))])]


def test_a_swap_beside_a_live_kept_one_alone_is_undone_back_to_it(fleet):
    """The kept container serves (live_previous) and no rig-<service> is beside it: the swap
    keeps it, so its undo puts it back as rig-<service> behind the proxy, not nothing."""
    svc = "affective_processing_center"
    facts = RolloutFacts(containers={cmd.previous(svc): box(svc, name=cmd.previous(svc))},
                         proxy={svc: {"a": "live", "b": "maint"}})
    assert facts.live_previous(svc)
    [step] = run_op(ops.releases_running, spooled=True, host=FakeHost(facts, fleet),
                    releases=[release(svc)])
    undo = step.line.split("stopped waiting for it: undone\" >&2; ", 1)[1]
    assert undo.startswith(cmd.undo_swap(svc, kept=True, proxied=True).line)


def test_a_release_that_runs_already_is_a_noop(fleet):
    rel = release()
    facts = RolloutFacts(containers={"rig-svc": box("svc", tag="T2", digest="sha256:2")})
    host = FakeHost(facts, fleet)
    assert run_op(ops.releases_running, spooled=True, host=host, releases=[rel]) == []
    assert host.noops == ["svc already runs T2"]


def test_a_secret_is_written_on_stdin_with_its_own_deadline_and_a_failure_is_logged(
        monkeypatch, caplog):
    calls = []

    def host_shell(host, command, stdin=None, timeout=None):
        calls.append((str(command), stdin, timeout))
        return Shell(False, "", ["disk", "full"])
    monkeypatch.setattr(ops, "host_shell", host_shell)
    host = FakeHost(RolloutFacts())
    with caplog.at_level(logging.ERROR):
        assert ops._write_secret(None, host, "svc", "TOKEN", Secret("s3cret", "env"), "v1") is False
    [(command, stdin, timeout)] = calls
    assert command == str(cmd.write_secret("svc", "TOKEN", "v1")) and "s3cret" not in command
    assert stdin == "czNjcmV0" and timeout == 30
    assert "[mainpc] could not write secret TOKEN of svc: full" in caplog.text
    monkeypatch.setattr(ops, "host_shell", lambda *a, **k: Shell(True, "", []))
    assert ops._write_secret(None, host, "svc", "TOKEN", Secret("s3cret", "env"), "v1") is True


def test_release_restored_starts_the_kept_container_or_fails_without_one(fleet):
    s = "model_ops_coordinator"
    before = {"tag": "T1", "digest": "sha256:1"}
    replaced = RolloutFacts(containers={cmd.current(s): box(s, tag="T2", digest="sha256:2"),
                                        cmd.previous(s): box(s, "exited")})
    assert run_op(ops.release_restored, spooled=True, host=FakeHost(replaced, fleet), service=s,
                  before=before) == [all_of(*cmd.restore_commands(s, True))]   # one step
    gone = RolloutFacts(containers={cmd.current(s): box(s, tag="T2", digest="sha256:2")})
    assert run_op(ops.release_restored, spooled=True,
                  host=FakeHost(gone, fleet), service=s, before=before) == [
        fail(f"{s}: no kept container to go back to T1")]
    first_install = RolloutFacts(containers={cmd.current(s): box(s, tag="T2", digest="sha256:2")})
    assert run_op(ops.release_restored, spooled=True, host=FakeHost(first_install, fleet), service=s,
                  before=None) == [all_of(*cmd.restore_commands(s, False))]
    back = RolloutFacts(containers={cmd.current(s): box(s)})
    host = FakeHost(back, fleet)
    assert run_op(ops.release_restored, spooled=True, host=host, service=s, before=before) == []
    assert host.noops == [f"{s} already runs its previous version"]


# -- deploys: which operations each host gets -----------------------------------------------------------
@pytest.fixture
def calls(monkeypatch):
    seen = []
    for name in ("releases_running", "release_restored", "recorded", "images_pulled",
                 "secrets_written", "proxy_switched", "previous_settled"):
        monkeypatch.setattr(ops, name, lambda _n=name, **kw: seen.append((_n, kw)))
    return seen


def test_roll_out_runs_each_release_of_this_host_with_its_services_secrets(calls):
    a, b = release("a"), release("b")
    secret = {"K": Secret("v", "env K")}
    seen = RolloutFacts(host_time=1.0)     # what pre-flight read: the operations use it
    with ctx_host.use(FakeHost(RolloutFacts())):
        ops.roll_out._inner({"mainpc": [a, b], "pc2": [release("c")]}, {"b": secret},
                            {"mainpc": seen, "pc2": RolloutFacts()})
        ops.roll_out._inner({"pc2": [a]})
        ops.roll_out._inner({"mainpc": [a]}, {"a": secret, "b": {}})
        ops.roll_out._inner({"mainpc": [b]})
    # the pulls, the secrets (only where a service has any), then the swap alone: its step is
    # the swap command and nothing else (a host lost in it may have begun it)
    assert calls == [("images_pulled", {"name": "pull images", "releases": [a, b], "known": seen}),
                     ("secrets_written", {"name": "secrets", "releases": [a, b],
                                          "secrets": {"b": secret}, "known": seen}),
                     ("releases_running", {"name": "a: run T2, b: run T2", "releases": [a, b],
                                           "known": seen}),
                     ("images_pulled", {"name": "a: pull T2", "releases": [a], "known": None}),
                     ("secrets_written", {"name": "secrets", "releases": [a],
                                          "secrets": {"a": secret, "b": {}}, "known": None}),
                     ("releases_running", {"name": "a: run T2", "releases": [a],
                                           "known": None}),
                     ("images_pulled", {"name": "b: pull T2", "releases": [b], "known": None}),
                     ("releases_running", {"name": "b: run T2", "releases": [b],
                                           "known": None})]


def test_the_secrets_step_writes_those_of_releases_not_running_yet_in_name_order(fleet):
    a, b = "affective_processing_center", "model_ops_coordinator"
    facts = RolloutFacts(containers={cmd.current(a): box(a, tag="T2", digest="sha256:2")})
    rels = [release(a, config=json.dumps({"secret K": "va"})),
            release(b, config=json.dumps({"secret K": "vk", "secret J": "vj"}))]
    k, j, other = Secret("k", "env K"), Secret("j", "env J"), Secret("a", "env K")
    commands = run_op(ops.secrets_written, host=FakeHost(RolloutFacts(), fleet), releases=rels,
                      secrets={a: {"K": other}, b: {"K": k, "J": j}}, known=facts)
    assert [(c.function, c.args) for c in commands] == [   # a runs T2 already: none of its
        (ops._write_secret, (b, "J", j, "vj")), (ops._write_secret, (b, "K", k, "vk"))]
    read_now = run_op(ops.secrets_written, host=FakeHost(facts, fleet), releases=rels,
                      secrets={a: {"K": other}})     # no pre-flight read given: the host's
    assert read_now == []
    assert run_op(ops.secrets_written, host=FakeHost(RolloutFacts(), fleet), releases=rels,
                  secrets=None, known=facts) == []


def test_several_releases_swap_side_by_side_in_one_command(fleet):
    a, b, c = "affective_processing_center", "model_ops_coordinator", "real_time_audio_pipeline"
    facts = RolloutFacts(containers={cmd.current(a): box(a, tag="T2", digest="sha256:2"),
                                     cmd.current(c): box(c)})
    rels = [release(a), release(b), release(c)]
    host = FakeHost(RolloutFacts(), fleet)    # pre-flight's read is used, none made now
    commands = run_op(ops.releases_running, spooled=True, host=host, releases=rels, known=facts)
    how = {"strategy": "start_first", "drain": 30.0}
    assert commands == [ops.swap_step([
        (f"{b}: run T2", cmd.swap_command(fleet, "mainpc", rels[1], False, False, slot="a", **how),
         cmd.undo_swap(b, kept=False, proxied=True)),
        (f"{c}: run T2", cmd.swap_command(fleet, "mainpc", rels[2], True, False, slot="b", **how),
         cmd.undo_swap(c, kept=True, proxied=True))])]
    from rig.commands.base import FAILED_MARK
    assert all(f"{FAILED_MARK}{s}: run T2" in commands[0].line for s in (b, c))  # named
    assert commands[0].line.count("undone") == 1            # the undos: once, after both
    assert host.noops == [f"{a} already runs T2"] and host.reads == []
    done = FakeHost(RolloutFacts(containers={cmd.current(a): box(a, tag="T2",
                                                                 digest="sha256:2")}), fleet)
    assert run_op(ops.releases_running, spooled=True, host=done, releases=[rels[0]]) == []


def test_what_pre_flight_read_is_not_read_again_by_the_wave_nor_the_record_step(fleet):
    facts = RolloutFacts(containers={"rig-a": box("a", tag="T2", digest="sha256:2"),
                                     "rig-b-prev": box("b", "exited")})
    host = FakeHost(RolloutFacts(), fleet)     # a read now would see nothing running
    assert run_op(ops.releases_running, spooled=True, host=host, releases=[release("a")],
                  known=facts) == []
    assert run_op(ops.images_pulled, host, releases=[release("a")], known=facts) == []
    assert host.noops == ["a already runs T2", "every release already runs"]
    assert host.reads == []
    host = FakeHost(facts, fleet)     # the record step reads nothing: its one line finds them
    assert run_op(ops.recorded, spooled=True, host=host, finished=["b"], entries=[], state_doc=None) == [
        cmd.record_command(["b"], [], None)]
    assert host.reads == []


def test_several_releases_on_a_host_pull_together_only_what_does_not_run_yet(fleet):
    a, b, c = release("a"), release("b"), release("c", digest="sha256:3")
    facts = RolloutFacts(containers={"rig-a": box("a", tag="T2", digest="sha256:2")})
    assert run_op(ops.images_pulled, FakeHost(facts, fleet), releases=[a, b, c]) == [
        cmd.pull_all(["reg/b@sha256:2", "reg/c@sha256:3"])]
    done = FakeHost(RolloutFacts(containers={"rig-a": box("a", tag="T2", digest="sha256:2")}),
                    fleet)
    assert run_op(ops.images_pulled, done, releases=[a]) == []
    assert done.noops == ["every release already runs"]


def test_roll_back_restores_only_services_off_their_previous_version(calls, fleet):
    a, b = "model_ops_coordinator", "real_time_audio_pipeline"
    facts = RolloutFacts(containers={cmd.current(a): box(a, tag="T2", digest="sha256:2"),
                                     cmd.previous(a): box(a, "exited"),
                                     cmd.current(b): box(b)})
    before = {"tag": "T1", "digest": "sha256:1"}
    restored: dict = {}
    with ctx_host.use(FakeHost(facts, fleet)):
        ops.roll_back._inner({"mainpc": {a: before, b: before}}, restored)
        ops.roll_back._inner({"pc2": {a: before}}, restored)
    assert restored == {"mainpc": [a]}
    assert calls == [("release_restored", {"name": f"{a}: restore previous", "service": a,
                                           "before": before})]


def half_restored(s: str) -> RolloutFacts:
    """A warm restore killed during its gate: rig-<s> runs T1 again (slot a), beside T2, which
    still serves as -prev (slot b)."""
    return RolloutFacts(containers={cmd.current(s): box(s, slot="a"),
                                    cmd.previous(s): box(s, tag="T2", digest="sha256:2",
                                                         slot="b")},
                        proxy={s: {"a": "maint", "b": "live"}})


def test_a_restore_that_did_not_reach_its_switch_back_is_finished_by_its_gate_and_switch(fleet):
    """An abort or rollback killed during its restore gate: rig-<service> runs the version
    restored to, and the proxy still sends to the one rolled back from (-prev), or answers
    503 (the cold restore's): no container is touched again, its gate and switch finish it."""
    s = "model_ops_coordinator"
    before = {"tag": "T1", "digest": "sha256:1"}
    half = half_restored(s)
    assert half.live_previous(s)
    assert ops.needs_restore(half, s, before, proxied=True)
    assert not ops.needs_restore(half, s, before, proxied=False)   # no proxy: nothing to switch
    host = FakeHost(half, fleet)
    assert run_op(ops.release_restored, spooled=True, host=host, service=s, before=before) == []
    assert host.noops == [f"{s} already runs its previous version; the proxy goes back to it "
                          "once its restore gate passes"]

    stopped_back = half_restored(s)      # ... and stopped since (by hand, a crash)
    stopped_back.containers[cmd.current(s)] = box(s, "exited", slot="a")
    assert run_op(ops.release_restored, spooled=True, host=FakeHost(stopped_back, fleet), service=s,
                  before=before) == [cmd.control_command("start", s, 0)]

    cold = RolloutFacts(containers={cmd.current(s): box(s, slot="a")},
                        proxy={s: {"a": "maint", "b": "maint"}})
    assert ops.needs_restore(cold, s, before, proxied=True)
    cold.state = {s: {"tag": "T1", "digest": "sha256:1", "maintenance": True}}
    assert not ops.needs_restore(cold, s, before, proxied=True)   # an operator's 503 is meant
    served = RolloutFacts(containers={cmd.current(s): box(s, slot="a")},
                          proxy={s: {"a": "live", "b": "maint"}})
    assert not ops.needs_restore(served, s, before, proxied=True)
    unread = RolloutFacts(containers={cmd.current(s): box(s, slot="a")})
    assert not ops.needs_restore(unread, s, before, proxied=True)  # proxy not read: no guess
    stopped = RolloutFacts(containers={cmd.current(s): box(s, "exited", slot="a")},
                           proxy={s: {"a": "maint", "b": "maint"}})
    assert ops.needs_restore(stopped, s, before, proxied=True)      # (decide: start it)
    assert not ops.switched_away(stopped, s)
    slotless = RolloutFacts(containers={cmd.current(s): box(s, slot="")},
                            proxy={s: {"a": "maint", "b": "maint"}})
    assert not ops.switched_away(slotless, s)                # on the host network: no proxy


def test_roll_back_restores_a_restore_that_did_not_reach_its_switch_back(calls, fleet):
    s, before = "model_ops_coordinator", {"tag": "T1", "digest": "sha256:1"}
    restored: dict = {}
    with ctx_host.use(FakeHost(half_restored(s), fleet)):
        ops.roll_back._inner({"mainpc": {s: before}}, restored)
    assert restored == {"mainpc": [s]}      # gated, then switched back by the engine
    assert calls == [("release_restored", {"name": f"{s}: restore previous", "service": s,
                                           "before": before})]


def test_switch_adds_one_operation_for_all_services_of_this_host_settle_one_per_service(calls):
    with ctx_host.use(FakeHost(RolloutFacts())):
        ops.switch._inner({"mainpc": ["a", "b"], "pc2": ["c"]}, then="remove")
        ops.switch._inner({"mainpc": ["a"]})
        ops.switch._inner({"pc2": ["c"]})
        ops.settle._inner({"mainpc": ["a"], "pc2": ["c"]})
    assert calls == [
        ("proxy_switched", {"name": "a, b: proxy back to the restored container",
                            "services": ["a", "b"], "then": "remove"}),
        ("proxy_switched", {"name": "a: proxy to the new container", "services": ["a"],
                            "then": "stop"}),
        ("previous_settled", {"name": "a: remove the container the proxy never sent to",
                              "service": "a"})]


def test_settling_removes_the_unswitched_one_and_renames_the_kept_one_that_serves():
    assert run_op(ops.previous_settled, spooled=True, host=FakeHost(RolloutFacts()), service="svc") == [
        cmd.settle_previous("svc")]
    assert str(cmd.settle_previous("svc")) == (
        "docker rm -f rig-svc && docker rename rig-svc-prev rig-svc")


def test_record_removes_kept_containers_of_finished_hosts_and_writes_their_ledger(calls):
    entries, states = {"mainpc": [{"result": "ok"}]}, {"mainpc": {"a": {}}}
    with ctx_host.use(FakeHost(RolloutFacts())):
        ops.record._inner(entries, states, {"mainpc": ["a"]})
        ops.record._inner({}, states, {"pc2": ["a"]})
    assert calls == [
        ("recorded", {"name": "ledger, state and clean-up", "finished": ["a"],
                      "entries": entries["mainpc"], "state_doc": states["mainpc"]}),
        ("recorded", {"name": "ledger, state and clean-up", "finished": [], "entries": [],
                      "state_doc": None})]
