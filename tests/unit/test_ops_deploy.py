"""`rig deploy`: validate -> build and push -> registry check -> rollout, with the pre-deploy
hook first and the post-deploy hook last with the result; each phase is the verb's own function
(monkeypatched here at rig.ops.deploy)."""

from __future__ import annotations

import pytest

from rig.errors import RigError
from rig.ops import deploy as ops_deploy
from rig.ops.images import BuildReport
from rig.ops.rollout import Options, Plan, RolloutReport

ALL = ["affective_processing_center", "model_ops_coordinator", "real_time_audio_pipeline"]


class Job:
    """The fleet, and every hook run recorded (name and variables)."""

    def __init__(self, fleet, log, fail_hook=None):
        self.fleet, self.log, self.fail_hook = fleet, log, fail_hook

    def hook(self, name, say, **variables):
        self.log.append(("hook", name, variables))
        if name == self.fail_hook:
            raise RigError(f"hook {name} exited 1: stopped before any host was touched")
        return 0


def built(rows, tag="T2") -> BuildReport:
    return BuildReport(tag, "ghcr.io", [], 0, 0, len(rows), True, "mainpc", rows)


def report(ok=True, paused=None) -> RolloutReport:
    return RolloutReport("rollout", "T2", Plan("T2", ["mainpc"], [["mainpc"]], []), ok, False, [],
                         1.0, {}, paused=paused)


@pytest.fixture
def chain(fleet, monkeypatch):
    log: list = []
    said: list[str] = []
    state = {"rows": [{"image": "a", "digest": "sha256:1"}, {"image": "b", "digest": "sha256:2"}],
             "rollout": report()}

    def build(job, tag, push, rebuild, allow_dirty, build_args, say, on_plan=None):
        log.append(("build", tag, push, rebuild, allow_dirty, build_args, on_plan))
        return built(state["rows"], tag)

    def rollout(job, tag, opts, say, on_plan=None):
        log.append(("rollout", tag, opts, on_plan))
        if isinstance(state["rollout"], Exception):
            raise state["rollout"]
        return state["rollout"]
    monkeypatch.setattr(ops_deploy, "build", build)
    monkeypatch.setattr(ops_deploy, "rollout", rollout)
    return Job(fleet, log), log, said, state


def test_deploy_builds_pushes_checks_then_rolls_out_between_its_hooks(chain):
    job, log, said, state = chain
    opts = Options(limit=["pc2"])
    on_build, on_plan = object(), object()
    result = ops_deploy.deploy(job, "T2", opts, said.append, on_build, on_plan)
    hook = {"tag": "T2", "hosts": ["pc2"], "services": ALL}
    assert log == [("hook", "pre-deploy", hook),
                   ("build", "T2", True, False, False, (), on_build),
                   ("rollout", "T2", opts, on_plan),
                   ("hook", "post-deploy", {"result": "ok", **hook})]
    assert said == ["registry: all 2 images at T2 present"]
    assert result.tag == "T2" and result.rollout is state["rollout"]
    assert list(result.phases) == ["validate", "build and push", "rollout and verify"]
    assert result.seconds == pytest.approx(sum(result.phases.values()))


def test_the_hook_names_only_the_chosen_services_and_their_hosts(chain):
    job, log, said, _ = chain
    ops_deploy.deploy(job, "T2", Options(services=["model_ops_coordinator"]), said.append)
    assert log[0] == ("hook", "pre-deploy", {"tag": "T2", "hosts": ["mainpc", "pc2"],
                                             "services": ["model_ops_coordinator"]})


def test_an_image_missing_after_the_push_stops_before_the_rollout(chain):
    job, log, said, state = chain
    state["rows"] = [{"image": "ghcr.io/x/a:T2", "digest": "sha256:1"},
                     {"image": "ghcr.io/x/b:T2", "digest": None},
                     {"image": "ghcr.io/x/c:T2", "digest": ""}]
    with pytest.raises(RigError) as caught:
        ops_deploy.deploy(job, "T2", Options(), said.append)
    assert caught.value.lines == ["ghcr.io/x/b:T2: not in the registry after the push",
                                  "ghcr.io/x/c:T2: not in the registry after the push",
                                  "deploy stopped before the rollout: no host was changed"]
    assert [entry[0:2] for entry in log] == [("hook", "pre-deploy"), ("build", "T2"),
                                            ("hook", "post-deploy")]
    assert log[-1][2]["result"] == "failed" and said == []


def test_a_failing_pre_deploy_hook_stops_before_anything_is_built(fleet, chain):
    _, log, said, _ = chain
    job = Job(fleet, log, fail_hook="pre-deploy")
    with pytest.raises(RigError, match="hook pre-deploy exited 1"):
        ops_deploy.deploy(job, "T2", Options(), said.append)
    assert [entry[:2] for entry in log] == [("hook", "pre-deploy")]


def test_a_broken_selection_stops_before_any_hook(chain):
    job, log, said, _ = chain
    with pytest.raises(RigError, match="--limit: unknown host or group nope"):
        ops_deploy.deploy(job, "T2", Options(limit=["nope"]), said.append)
    assert log == []


@pytest.mark.parametrize(("rolled", "result"), [
    (report(ok=False), "failed"),
    (report(ok=False, paused=[["pc2"]]), "paused"),
    (report(ok=True, paused=[["pc2"]]), "paused"),
    (RigError("pre-flight failed: no host was changed"), "failed"),
])
def test_the_post_deploy_hook_gets_the_rollouts_result(chain, rolled, result):
    job, log, said, state = chain
    state["rollout"] = rolled
    if isinstance(rolled, Exception):
        with pytest.raises(RigError):
            ops_deploy.deploy(job, "T2", Options(), said.append)
    else:
        assert ops_deploy.deploy(job, "T2", Options(), said.append).rollout is rolled
    assert log[-1][:2] == ("hook", "post-deploy") and log[-1][2]["result"] == result
