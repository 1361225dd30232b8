"""NVIDIA container toolkit on hosts whose profile has a GPU, and the GPU-matches-profile check.

Not reachable in the lab (no GPU, no NVIDIA repository): tested with recorded nvidia-smi
outputs and exact commands in tests/unit/test_tasks.py."""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import deploy, operation

from rig.commands import host as cmd

from .facts import Gpu, NvidiaGpus
from .state import changes_host, state_of
from .util import fleet_of, host_name


def gpu_problem(gpus: list[Gpu], profile) -> str | None:
    """Why the GPUs found do not match the profile, or None when they do."""
    expected = profile.gpu
    if not gpus:
        return f"no GPU found by nvidia-smi; profile {profile.name} expects {expected.model}"
    for gpu in gpus:
        if gpu.name == expected.model and gpu.compute_cap == expected.compute_cap:
            return None
    found = ", ".join(f"{g.name} (compute {g.compute_cap})" for g in gpus)
    return (f"GPU mismatch: profile {profile.name} expects {expected.model} "
            f"(compute {expected.compute_cap}), found {found}")


@operation()
@changes_host
def toolkit(repo_url: str):
    """nvidia-container-toolkit installed from NVIDIA's apt repository.

    + repo_url: NVIDIA's repository (or a mirror)
    """
    facts = state_of(fleet_of(host))
    if "nvidia-container-toolkit" in facts.packages:
        host.noop("nvidia-container-toolkit installed")
        return
    yield from cmd.nvidia_repo(repo_url)
    yield from cmd.apt_install({"nvidia-container-toolkit": None})


@operation(is_idempotent=False)
def gpu_matches_profile():
    """Stop this host when its GPU is not the one its profile describes (a 3060 on MainPC)."""
    fleet = fleet_of(host)
    problem = gpu_problem(host.get_fact(NvidiaGpus), fleet.profile_of(host_name(host)))
    if problem:
        yield cmd.fail(problem)
    else:
        host.noop("GPU matches the machine profile")


@operation(is_idempotent=False)
def smoke_test(image: str):
    """`docker run --rm --gpus all <image> nvidia-smi` succeeds.

    + image: an image with nvidia-smi (a CUDA base image)
    """
    yield cmd.gpu_smoke(image)


@deploy("NVIDIA container toolkit")
def install_nvidia():
    fleet = fleet_of(host)
    if not fleet.gpu_present(host_name(host)):
        return
    if fleet.gpu_enabled(host_name(host)):
        toolkit(name="nvidia toolkit", repo_url=fleet.bootstrap.nvidia.repo_url)
    gpu_matches_profile(name="gpu matches profile")
    if fleet.gpu_enabled(host_name(host)) and fleet.bootstrap.nvidia.smoke_image:
        smoke_test(name="gpu smoke test", image=fleet.bootstrap.nvidia.smoke_image)
