"""GPU pre-flight (rig/ops/gpu.py) on read facts: an image's CUDA against the host's driver,
what would start against the card's free memory; one line per problem with the numbers."""

from __future__ import annotations

import pytest

from rig.commands import container as cmd
from rig.gpu.smi import App, Gpu
from rig.ops.gpu import gpu_problems
from rig.rollout.engine import Change
from tasks.rollout import Container, RolloutFacts

MOC = "model_ops_coordinator"          # gpu: true, per machine
APC = "affective_processing_center"    # no GPU
REQUIRE = {"NVIDIA_REQUIRE_CUDA": "cuda>=12.1 brand=tesla,driver>=470,driver<471",
           "CUDA_VERSION": "12.1.1"}


def facts(driver="535.129.03", total=12288, used=0, apps=(), running=None) -> RolloutFacts:
    f = RolloutFacts(docker_active=True)
    f.gpus = [Gpu(0, "GPU-1", "NVIDIA GeForce RTX 3060", "8.6", total, used, driver)]
    f.gpu_apps = list(apps)
    if running:
        f.containers = {cmd.current(MOC): running}
    return f


def change(fleet, host, service=MOC, running=None) -> Change:
    release = cmd.Release(service, "T2", f"reg/{service}", "sha256:" + "b" * 64,
                          fleet.profile_of(host).content_hash())
    return Change(host, release, running)


def with_gpu_memory(fleet, size):
    services = dict(fleet.services)
    spec = services[MOC]
    services[MOC] = spec.model_copy(update={"runtime": spec.runtime.model_copy(
        update={"gpu_memory": size})})
    return fleet.model_copy(update={"services": services})


def test_an_image_needing_a_newer_driver_is_refused_with_both_versions(fleet):
    asked = []
    problems = gpu_problems(fleet, {"pc2": [change(fleet, "pc2")]},
                            {"pc2": facts(driver="470.256.02")},
                            lambda repo, digest: asked.append(repo) or REQUIRE)
    assert problems == [
        f"pc2: reg/{MOC}@sha256:{'b' * 64} needs CUDA 12.1 (driver >= 530.30.02), pc2 has driver "
        "470.256.02 (GeForce cards have no forward compatibility: update the driver, or build on "
        "an older CUDA base)"]
    assert asked == [f"reg/{MOC}"]


def test_a_new_enough_driver_a_non_gpu_service_and_an_unchanged_one_pass(fleet):
    asked = []
    ok = gpu_problems(fleet, {"pc2": [change(fleet, "pc2")]}, {"pc2": facts()},
                      lambda repo, digest: asked.append(repo) or REQUIRE)
    assert ok == [] and asked == [f"reg/{MOC}"]
    none = gpu_problems(fleet, {"pc2": [change(fleet, "pc2", APC)]},
                        {"pc2": facts(driver="470.256.02")},
                        lambda repo, digest: (_ for _ in ()).throw(AssertionError("asked")))
    assert none == []                      # a service without a GPU: the registry is not asked


def test_the_images_are_read_side_by_side_each_once(fleet):
    """Each read waits until every image's read has begun: one after another, the first
    would wait for ever (here: 5 s, then the check fails)."""
    import dataclasses

    import gevent.event

    def other(host, digest):
        c = change(fleet, host)
        return Change(host, dataclasses.replace(c.release, digest=digest), None)
    begun, all_begun, waited = [], gevent.event.Event(), []

    def image_env(repo, digest):
        begun.append(digest)
        if len(begun) == 2:
            all_begun.set()
        waited.append(all_begun.wait(timeout=5))
        return REQUIRE
    changes = {"pc2": [other("pc2", "sha256:" + "1" * 64)],
               "mainpc": [other("mainpc", "sha256:" + "2" * 64),
                          other("mainpc", "sha256:" + "1" * 64)]}
    big = facts(total=24564)
    big.gpus = [dataclasses.replace(big.gpus[0], name="NVIDIA GeForce RTX 4090", compute_cap="8.9")]
    assert gpu_problems(fleet, changes, {"pc2": facts(), "mainpc": big}, image_env) == []
    assert sorted(begun) == ["sha256:" + "1" * 64, "sha256:" + "2" * 64] and waited == [True, True]


def test_a_host_whose_nvidia_smi_fails_says_why(fleet):
    broken = facts()
    broken.gpus, broken.gpu_error = [], "nvidia-smi failed: NVIDIA-SMI has failed because ..."
    [line] = gpu_problems(fleet, {"mainpc": [change(fleet, "mainpc")]}, {"mainpc": broken},
                          lambda repo, digest: REQUIRE)
    assert line.endswith("mainpc has no working NVIDIA driver (nvidia-smi cannot reach one) "
                         "(nvidia-smi failed: NVIDIA-SMI has failed because ...)")


def test_a_busy_card_refuses_a_start_that_cannot_fit_naming_the_other_users(fleet):
    fleet = with_gpu_memory(fleet, 8 * 2**30)
    busy = facts(used=7000, apps=[App("GPU-1", 4242, "other-job", 7000)])
    [line] = gpu_problems(fleet, {"pc2": [change(fleet, "pc2")]}, {"pc2": busy},
                          lambda repo, digest: {})
    assert line == (f"pc2: {MOC} 8192 MiB = 8192 MiB of GPU memory needed; NVIDIA GeForce RTX "
                    "3060 has 12288 MiB, 7000 MiB in use (pid 4242 other-job 7000 MiB): 5288 MiB "
                    "free; free the card or lower gpu_memory")
    # the same card, where the 7000 MiB are the container it replaces: they count as free
    old = Container(cmd.current(MOC), "running", MOC, "T1", "sha256:old", "p")
    mine = facts(used=7000, apps=[App("GPU-1", 4242, "python", 7000)], running=old)
    mine.gpu_containers = {4242: cmd.current(MOC)}
    ok = gpu_problems(fleet, {"pc2": [change(fleet, "pc2", running=old)]}, {"pc2": mine},
                      lambda repo, digest: {})
    assert ok == []
    mine.gpu_containers = {4242: "someone-else"}           # another container's: it stays
    [line] = gpu_problems(fleet, {"pc2": [change(fleet, "pc2", running=old)]}, {"pc2": mine},
                          lambda repo, digest: {})
    assert "(pid 4242 python (someone-else) 7000 MiB): 5288 MiB free;" in line


@pytest.mark.parametrize("name,cap,fine", [
    ("NVIDIA GeForce RTX 3060", "8.6", True), ("NVIDIA GeForce RTX 3070", "8.6", False),
    ("NVIDIA GeForce RTX 3060", "8.9", False), ("NVIDIA GeForce RTX 3060", None, False)])
def test_a_card_other_than_the_profiles_is_refused_naming_both(fleet, name, cap, fine):
    found = facts()
    found.gpus = [Gpu(0, "GPU-1", name, cap, 12288, 0, "535.129.03")]
    problems = gpu_problems(fleet, {"pc2": [change(fleet, "pc2")]}, {"pc2": found},
                            lambda repo, digest: REQUIRE)
    if fine:
        assert problems == []
        return
    assert problems == [
        f"pc2: the GPU is {name} (compute {cap or '?'}), but the profile pc2 says NVIDIA GeForce "
        "RTX 3060 (compute 8.6): images are built for the profile's card; fix the profile or the "
        "host"]
