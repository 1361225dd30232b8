"""rig deploy, stop, start and restart on the real lab, judged from the hosts.

The spec copy is made a git repository, as an operator's checkout is: deploy tags images
YYYYMMDD-<sha> and refuses a work tree with uncommitted changes."""

import json

import pytest

from .conftest import copy_spec, git, git_checkout, rig, ssh

HOSTS = ("mainpc", "pc2")
SERVICES = ["model_ops_coordinator", "real_time_audio_pipeline", "affective_processing_center"]


@pytest.fixture(scope="module")
def spec(bootstrapped, tmp_path_factory):
    spec = git_checkout(copy_spec(tmp_path_factory.mktemp("service")))
    for host in HOSTS:
        ssh(host, "docker rm -f $(docker ps -aq --filter label=rig.service) 2>/dev/null; "
                  "rm -rf /var/lib/rig", check=False)
    return spec


def run(spec, *args, check=False):
    return rig("-c", str(spec / "fleet.yml"), *args, cwd=spec, check=check)


def started(host: str) -> dict:
    names = " ".join(f"rig-{s}" for s in SERVICES)
    out = ssh(host, f"docker inspect -f '{{{{.Name}}}} {{{{.State.Status}}}} "
                    f"{{{{.State.StartedAt}}}}' {names}").stdout
    return {n.lstrip("/").removeprefix("rig-"): (state, at)
            for n, state, at in (line.split() for line in out.splitlines())}


def status(spec) -> dict:
    rows = json.loads(run(spec, "status", "--json", check=True).stdout)
    return {(r["host"], r["service"]): r["health"] for r in rows}


def test_1_deploy_builds_pushes_and_rolls_out_canary_first(spec):
    tag = run(spec, "tag", check=True).stdout.strip()
    assert tag.endswith(git(spec, "rev-parse", "--short=8", "HEAD"))
    result = run(spec, "deploy")
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert out.startswith(f"deploy {tag}:")
    assert out.index("build (") < out.index("registry: all 5 images at") \
        < out.index("wave 1/2 (canary) mainpc") < out.index("wave 2/2 (batch) pc2")
    assert f"deploy {tag} done in" in out and "services suite passed" in out
    assert set(status(spec).values()) == {"ok"}


def test_2_a_dirty_tree_is_refused_before_anything_is_built(spec):
    before = {h: started(h) for h in HOSTS}
    main = spec / "dockerfiles/services/affective_processing_center/app/main.py"
    main.write_text(main.read_text().replace('"calm": (0.6, -0.7)', '"calm": (0.7, -0.7)'))
    result = run(spec, "deploy")
    assert result.returncode == 1
    assert "the work tree has uncommitted changes" in result.stderr
    assert "wave" not in result.stdout and "build (" not in result.stdout
    assert {h: started(h) for h in HOSTS} == before


def test_3_one_changed_service_is_the_only_image_built_and_rolled_out(spec):
    git(spec, "commit", "-qam", "calmer")
    before = {h: started(h) for h in HOSTS}
    result = run(spec, "deploy")
    assert result.returncode == 0, result.stdout + result.stderr
    built = [line.split()[0] for line in result.stdout.splitlines() if line.endswith(" build")]
    assert built == ["affective_processing_center"], result.stdout
    assert "built 1, reused 4, present 0" in result.stdout
    out = result.stdout
    assert out.index("wave 1/2 (canary) mainpc: 1 service(s)") < out.index("wave 2/2 (batch) pc2")
    for host in HOSTS:
        now = started(host)
        assert now["affective_processing_center"] != before[host]["affective_processing_center"]
        assert {s: now[s] for s in SERVICES[:2]} == {s: before[host][s] for s in SERVICES[:2]}


def test_4_stop_shows_stopped_a_rollout_skips_it_and_start_brings_it_back(spec):
    tag = run(spec, "tag", check=True).stdout.strip()
    result = run(spec, "stop", "model_ops_coordinator", "--host", "pc2")
    assert result.returncode == 0, result.stderr
    assert "pc2: model_ops_coordinator: stopped" in result.stdout
    assert started("pc2")["model_ops_coordinator"][0] == "exited"
    assert started("mainpc")["model_ops_coordinator"][0] == "running"
    assert status(spec)[("pc2", "model_ops_coordinator")] == "stopped"

    again = run(spec, "rollout", "--tag", tag, "--no-verify")
    assert again.returncode == 0, again.stderr
    assert "pc2 model_ops_coordinator: stopped by an operator since" in again.stdout
    assert "left stopped (--start-stopped starts it)" in again.stdout
    assert started("pc2")["model_ops_coordinator"][0] == "exited"

    start = run(spec, "start", "model_ops_coordinator", "--host", "pc2")
    assert start.returncode == 0, start.stderr
    assert "pc2: model_ops_coordinator: started, healthy for" in start.stdout
    assert status(spec)[("pc2", "model_ops_coordinator")] == "ok"
    ledger = [json.loads(line) for line in
              ssh("pc2", "tail -n 2 /var/lib/rig/ledger.jsonl").stdout.splitlines()]
    assert [(e["action"], e["service"], e["result"]) for e in ledger] == [
        ("stop", "model_ops_coordinator", "ok"), ("start", "model_ops_coordinator", "ok")]


def test_5_restart_is_gated_and_changes_only_that_container(spec):
    before = started("mainpc")
    result = run(spec, "restart", "real_time_audio_pipeline", "--host", "mainpc")
    assert result.returncode == 0, result.stderr
    assert "mainpc: real_time_audio_pipeline: restarted, healthy for" in result.stdout
    now = started("mainpc")
    assert now["real_time_audio_pipeline"][1] != before["real_time_audio_pipeline"][1]
    assert {s: now[s] for s in SERVICES if s != "real_time_audio_pipeline"} == \
        {s: before[s] for s in SERVICES if s != "real_time_audio_pipeline"}


def test_6_a_start_that_does_not_come_back_healthy_fails_with_the_gate_report(spec):
    """Another program holds the port the container is published on (its proxy slot): the
    start fails, the command says so and fails, the ledger says failed."""
    image = ssh("pc2", "docker inspect -f '{{.Config.Image}}' rig-affective_processing_center").stdout
    port = ssh("pc2", "docker inspect -f '{{index .Config.Labels \"rig.port\"}}' "
                      "rig-affective_processing_center").stdout.strip()
    assert port in ("16560", "26560"), port
    ssh("pc2", "docker stop rig-affective_processing_center")
    ssh("pc2", f"docker run -d --name squatter --network host --entrypoint python3 {image.strip()} "
               f"-m http.server {port} --bind 127.0.0.1")
    ssh("pc2", f"for i in $(seq 50); do curl -s -o /dev/null 127.0.0.1:{port} && exit 0; "
               "sleep 0.1; done; exit 1")
    try:
        result = run(spec, "start", "affective_processing_center", "--host", "pc2")
    finally:
        ssh("pc2", "docker rm -f squatter", check=False)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "pc2: affective_processing_center: start FAILED: Control a service | " \
        "affective_processing_center: start" in result.stderr
    assert "start affective_processing_center failed" in result.stderr
    last = json.loads(ssh("pc2", "tail -n 1 /var/lib/rig/ledger.jsonl").stdout)
    assert (last["action"], last["result"]) == ("start", "failed") and "FAILED" in last["reason"]
    again = run(spec, "restart", "affective_processing_center", "--host", "pc2")
    assert again.returncode == 0, again.stdout + again.stderr
    assert status(spec)[("pc2", "affective_processing_center")] == "ok"
