"""GPU model servers on the lab, through the nvidia-smi stand-in (rig lab gpu): a model that loads
for 90 s passes its gate with host_timeout 30 s; a gate check that never answers (the model never
listed) rolls the canary back; an image whose CUDA needs a newer driver than pc2's, and a card too
busy for what would start, are refused at pre-flight with nothing pulled or changed anywhere.
(Named to run after the images module, whose cold builds must come first.)"""

import json
import time

import pytest

from .conftest import copy_spec, rig, ssh

HOSTS = ("mainpc", "pc2")
MOC = "model_ops_coordinator"


@pytest.fixture(scope="module")
def spec(bootstrapped, tmp_path_factory):
    spec = copy_spec(tmp_path_factory.mktemp("gpu"))
    fleet = spec / "fleet.yml"
    fleet.write_text(fleet.read_text().replace("\nrollout:\n", "\nrollout:\n  host_timeout: 30s\n", 1))
    rig("-c", str(fleet), "build", "--push", "--tag", "gpu-1", cwd=spec)
    for host in HOSTS:
        rig("lab", "gpu", host, "--reset")
    result = run(spec, "rollout", "--tag", "gpu-1", "--no-verify")
    assert result.returncode == 0, result.stdout + result.stderr
    return spec


def run(spec, *args):
    return rig("-c", str(spec / "fleet.yml"), *args, cwd=spec, check=False)


def edited(spec, old: str, new: str):
    fleet = spec / "fleet.yml"
    original = fleet.read_text()
    assert original.count(old) == 1, old
    fleet.write_text(original.replace(old, new))
    return original


def snapshot() -> dict:
    """What each host holds: rig's containers (id, StartedAt) and its images."""
    seen = {}
    for host in HOSTS:
        containers = ssh(host, "docker ps -aq --filter label=rig.service | xargs -r docker inspect "
                               "-f '{{.Name}} {{.Id}} {{.State.StartedAt}}'").stdout
        images = ssh(host, "docker images -q --no-trunc | sort").stdout
        seen[host] = (containers, images)
    return seen


def test_rig_gpu_shows_each_card_through_the_stand_in(spec):
    rig("lab", "gpu", "pc2", "--used-mib", "1500")
    try:
        result = run(spec, "gpu")
    finally:
        rig("lab", "gpu", "pc2", "--reset")
    assert result.returncode == 0, result.stdout + result.stderr
    assert ("mainpc     NVIDIA GeForce RTX 4090, driver 535.129.03 (CUDA 12.2), 0 of 24564 MiB "
            "used") in result.stdout
    assert "pc2        NVIDIA GeForce RTX 3060, driver 535.129.03 (CUDA 12.2), 1500 of 12288 MiB" \
        in result.stdout
    assert result.stdout.count("Xid errors, last 24 h: none") == 2   # the real kernel log, read


def test_a_model_that_loads_for_90_s_passes_its_gate_on_a_30_s_host_timeout(spec):
    original = edited(spec, "    runtime: {memory: 12g, cpus: 8, shm_size: 2g, gpu_memory: 8g}\n",
                      "    runtime: {memory: 12g, cpus: 8, shm_size: 2g, gpu_memory: 8g}\n"
                      "    env: {RIG_LOAD_SECONDS: \"90\"}\n")
    fleet = spec / "fleet.yml"
    fleet.write_text(fleet.read_text().replace("start_period: 30s", "start_period: 150s", 1))
    plan = run(spec, "plan", "--tag", "gpu-1")
    assert "[gate: /health + lists the loaded models]" in plan.stdout, plan.stdout
    started = time.monotonic()
    result = run(spec, "rollout", "--tag", "gpu-1", "--services", MOC, "--no-verify")
    elapsed = time.monotonic() - started
    (spec / "fleet.yml").write_text(original)
    print(result.stdout)
    assert result.returncode == 0, result.stdout + result.stderr
    assert elapsed > 2 * 90
    for host in HOSTS:
        line = next(x.strip() for x in result.stdout.splitlines()
                    if x.strip().startswith(f"{host:<10} {MOC}: healthy"))
        assert "gate checks passed: lists the loaded models" in line
        assert float(line.rsplit("(", 1)[1].split()[0]) >= 90
    back = run(spec, "rollout", "--tag", "gpu-1", "--services", MOC, "--no-verify")
    assert back.returncode == 0, back.stdout + back.stderr


def test_a_gate_check_that_never_answers_rolls_the_canary_back(spec):
    before = snapshot()
    listed = "      - {name: lists the loaded models, path: /models, fields: [loaded, workers], gate: true}\n"
    original = edited(spec, listed,
                      "      - {name: lists the model, path: /models, expect: {loaded: [never]},\n"
                      "         gate: true}\n" + listed)
    edited(spec, "    runtime: {memory: 12g, cpus: 8, shm_size: 2g, gpu_memory: 8g}\n",   # a change to gate
           "    runtime: {memory: 12g, cpus: 8, shm_size: 2g, gpu_memory: 8g}\n    env: {RIG_NOTE: gate}\n")
    try:
        result = run(spec, "rollout", "--tag", "gpu-1", "--services", MOC, "--no-verify")
    finally:
        (spec / "fleet.yml").write_text(original)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "wave 1 (canary) failed on mainpc" in result.stderr
    assert "gate check 'lists the model' failed: answer lacks" in result.stderr
    assert "mainpc: serving its previous version" in result.stderr
    assert snapshot()["pc2"] == before["pc2"]                 # the batch never started
    label = ssh("mainpc", f"docker inspect -f '{{{{index .Config.Labels \"rig.config-hash\"}}}}' "
                          f"rig-{MOC}").stdout.strip()
    state = json.loads(ssh("mainpc", "cat /var/lib/rig/state.json").stdout)
    assert state[MOC]["config_hash"] == label                 # back on the recorded version


def test_an_image_whose_cuda_needs_a_newer_driver_is_refused_before_any_pull(spec):
    rig("-c", str(spec / "fleet.yml"), "build", "--push", "--tag", "gpu-2",
        "--build-arg", f"{MOC}:FAULT=degraded", cwd=spec)
    before = snapshot()
    rig("lab", "gpu", "pc2", "--driver", "470.256.02")
    try:
        result = run(spec, "rollout", "--tag", "gpu-2", "--no-verify")
    finally:
        rig("lab", "gpu", "pc2", "--reset")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "pc2: 10.77.0.1:5000/rig/model_ops_coordinator@sha256:" in result.stderr
    assert "needs CUDA 12.1 (driver >= 530.30.02), pc2 has driver 470.256.02" in result.stderr
    assert "pre-flight failed: no host was changed" in result.stderr
    assert snapshot() == before                               # nothing pulled, nothing started


def test_a_card_too_busy_for_what_would_start_is_refused_naming_its_users(spec):
    original = edited(spec, "      pc2: {memory: 6g, cpus: 4, shm_size: 1g}\n",
                      "      pc2: {memory: 6g, cpus: 4, shm_size: 1g, gpu_memory: 8g}\n")
    fleet = spec / "fleet.yml"
    before = snapshot()
    rig("lab", "gpu", "pc2", "--used-mib", "9000")
    try:
        result = run(spec, "rollout", "--tag", "gpu-2", "--no-verify")
    finally:
        rig("lab", "gpu", "pc2", "--reset")
        fleet.write_text(original)
    assert result.returncode == 1, result.stdout + result.stderr
    assert (f"pc2: {MOC} 8192 MiB = 8192 MiB of GPU memory needed; NVIDIA GeForce RTX 3060 has "
            "12288 MiB, 9000 MiB in use") in result.stderr
    assert snapshot() == before
