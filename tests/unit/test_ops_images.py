"""`rig build` and `rig images verify` through the ops layer: the registry decides per image
(present, reuse by source hash, build); a dirty tree is refused for a push; builds go to the
build host (or this machine); the registry check after a push names what is missing."""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import pytest

from rig import registry as rig_registry
from rig.build import LocalExecutor, SshExecutor
from rig.errors import RigError
from rig.images import expected_images, source_hashes, source_tag
from rig.ops import images as ops_images
from rig.tags import GitState

REPO = Path(__file__).resolve().parents[2]
SHA = "1234567890abcdef1234567890abcdef12345678"


class Registry:
    """Digests per (path, tag); manifest copies and pings recorded."""

    def __init__(self, digests=None):
        self.digests = dict(digests or {})
        self.log: list = []

    def ping(self):
        self.log.append("ping")

    def manifest_digest(self, path, tag):
        self.log.append(("head", path, tag))
        return self.digests.get((path, tag))

    def copy_manifest(self, path, src, tag):
        self.log.append(("copy", path, src, tag))
        self.digests[(path, tag)] = self.digests[(path, src)]


@pytest.fixture
def setup(fleet, monkeypatch):
    registry = Registry()
    builds, opened = [], []
    state = {"git": GitState(SHA, False)}

    def run_build(fleet_, plan, options, executor, say):
        builds.append((list(plan.build), options, executor))
        for target in plan.build if options.push else ():  # pushed: in the registry
            image = plan.image(target)
            registry.digests[(image.path, image.tag)] = "sha256:built"
        return {"bake": 1.0}
    monkeypatch.setattr(rig_registry, "client_for", lambda f: registry)
    monkeypatch.setattr(ops_images, "git_state", lambda repo: state["git"])
    monkeypatch.setattr(ops_images, "run_build", run_build)

    @contextmanager
    def session(hosts, say=None):
        opened.append(list(hosts))
        yield "session"
    job = SimpleNamespace(fleet=fleet, repo=REPO, session=session)
    return job, registry, builds, opened, state


def test_build_decides_per_image_reuses_tags_and_checks_the_registry(fleet, setup):
    job, registry, builds, opened, _ = setup
    images = expected_images(fleet, "T2", {})
    hashes = source_hashes(fleet, images)
    present, reused = images[0], images[1]
    registry.digests[(present.path, "T2" if present.machine is None else present.tag)] = "sha256:p"
    registry.digests[(reused.path, source_tag(hashes[reused.target]))] = "sha256:r"
    said, planned = [], []
    report = ops_images.build(job, "T2", True, False, False, (), said.append, planned.append)
    rest = [i.target for i in images[2:]]
    assert planned == [[(present.target, "present"),
                        (reused.target, f"reuse    {source_tag(hashes[reused.target])}"),
                        *((t, "build") for t in rest)]]
    assert (report.built, report.reused, report.present) == (len(rest), 1, 1)
    assert report.where == "mainpc" and opened == [["mainpc"]]
    targets, options, executor = builds[0]
    assert targets == rest and isinstance(executor, SshExecutor) and executor.name == "mainpc"
    assert (options.push, options.rebuild, options.revision) == (True, False, SHA)
    assert [e for e in registry.log if e[0] != "head"] == [
        "ping", ("copy", reused.path, source_tag(hashes[reused.target]), reused.tag)]
    # after the push the registry is asked again for every image but the one it just said is
    # present (the plan's digest is reused)
    after = registry.log[registry.log.index(("copy", reused.path,
                                             source_tag(hashes[reused.target]), reused.tag)):]
    assert [e[1] for e in after if e[0] == "head"] == [i.path for i in images[1:]]
    assert report.rows[0]["digest"] == "sha256:p"
    assert said == [f"tagged {reused.ref} (same sources as {source_tag(hashes[reused.target])})"]
    assert [r["image"] for r in report.rows] == [i.ref for i in images]
    assert report.missing == 0 and report.timings == {"bake": 1.0}


def test_a_dirty_tree_is_refused_for_a_push_unless_allowed(setup):
    job, registry, builds, _, state = setup
    state["git"] = GitState(SHA, True)
    with pytest.raises(RigError, match=r"^the work tree has uncommitted changes \(tag T2\): "
                                       "commit them, or pass --allow-dirty to push anyway$"):
        ops_images.build(job, "T2", True, False, False, (), print)
    assert registry.log == [] and builds == []
    ops_images.build(job, "T2", False, False, False, (), print)   # no push: fine
    ops_images.build(job, "T2", True, False, True, (), print)     # --allow-dirty
    assert len(builds) == 2


def test_without_push_nothing_is_tagged_or_checked_and_rebuild_builds_all(fleet, setup):
    job, registry, builds, _, state = setup
    state["git"] = None
    images = expected_images(fleet, "T2", {})
    for i in images:
        registry.digests[(i.path, i.tag)] = "sha256:p"
    report = ops_images.build(job, "T2", False, True, False, (), print)
    assert builds[0][0] == [i.target for i in images] and builds[0][1].revision == "unknown"
    assert report.rows == [] and report.pushed is False and registry.log == ["ping"]  # no asking


def test_everything_present_builds_nothing(fleet, setup):
    job, registry, builds, opened, _ = setup
    for i in expected_images(fleet, "T2", {}):
        registry.digests[(i.path, i.tag)] = "sha256:p"
    report = ops_images.build(job, "T2", True, False, False, (), print)
    assert builds == [] and opened == [] and report.built == 0 and report.missing == 0
    heads = [e for e in registry.log if e[0] == "head"]
    assert len(heads) == len(report.rows) == len(expected_images(fleet, "T2", {}))  # once each


def test_a_spec_without_a_build_host_builds_on_this_machine(fleet, setup):
    job, _, builds, opened, _ = setup
    job.fleet = fleet.model_copy(update={"build": fleet.build.model_copy(update={"host": None})})
    report = ops_images.build(job, "T2", True, False, False, (), print)
    assert isinstance(builds[0][2], LocalExecutor) and opened == []
    assert report.where == "this machine"


def test_missing_counts_images_without_a_digest():
    report = ops_images.BuildReport("T", "r", [], 0, 0, 0, True, "x",
                                    [{"digest": "sha256:1"}, {"digest": None}, {"digest": ""}])
    assert report.missing == 2


def test_verify_images_is_one_row_per_expected_image(fleet, setup):
    job, registry, _, _, _ = setup
    images = expected_images(fleet, "T2", {})
    registry.digests[(images[0].path, images[0].tag)] = "sha256:x"
    rows = ops_images.verify_images(job, "T2")
    assert rows[0] == {"image": images[0].ref, "kind": images[0].kind,
                       "machine": images[0].machine, "digest": "sha256:x"}
    assert [r["digest"] for r in rows[1:]] == [None] * (len(images) - 1)


def test_build_args_reach_one_service_and_bad_ones_are_refused(fleet):
    assert ops_images.parse_build_args(["model_ops_coordinator:FAULT=degraded",
                                        "model_ops_coordinator:X=a=b"], fleet) == \
        {"model_ops_coordinator": {"FAULT": "degraded", "X": "a=b"}}
    for bad in ("model_ops_coordinator:FAULT", "nope:A=1", "model_ops_coordinator:=1"):
        with pytest.raises(RigError) as caught:
            ops_images.parse_build_args([bad], fleet)
        assert str(caught.value) == (f"--build-arg {bad!r}: expected SERVICE:KEY=VALUE with a "
                                     f"service of the spec ({', '.join(fleet.services)})")


def test_bake_preview_is_the_bake_file_for_every_image(fleet, setup):
    job, registry, _, _, _ = setup
    doc = ops_images.bake_preview(job, "T2", ["model_ops_coordinator:FAULT=degraded"])
    text = json.dumps(doc)
    assert set(doc["target"]) == {i.target for i in expected_images(fleet, "T2", {})}
    assert SHA in text and "degraded" in text and registry.log == []
