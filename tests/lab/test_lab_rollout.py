"""Rollouts on the real lab, each scenario judged by what the hosts serve afterwards, read from
the hosts themselves (docker inspect and a GET of each health endpoint over plain ssh).

Images: ro-t1 (the sources as they are), ro-t2 (one service changed), ro-bad (the real
model_ops_coordinator built with FAULT=degraded), ro-crash (real_time_audio_pipeline built with
FAULT=crash). Built once per session; unchanged images are tagged in the registry, not rebuilt."""

import json
import signal
import subprocess
import time

import pytest

from .conftest import RIG, copy_spec, rig, ssh

SERVICES = ["model_ops_coordinator", "real_time_audio_pipeline", "affective_processing_center"]
PORTS = {"model_ops_coordinator": 8212, "real_time_audio_pipeline": 6557,
         "affective_processing_center": 6560}


@pytest.fixture(scope="module")
def spec(bootstrapped, tmp_path_factory):
    spec = copy_spec(tmp_path_factory.mktemp("rollout"))

    def build(tag, *args):
        rig("-c", str(spec / "fleet.yml"), "build", "-i", "inventory/lab.py", "--push",
            "--tag", tag, *args, cwd=spec)

    build("ro-t1")
    build("ro-bad", "--build-arg", "model_ops_coordinator:FAULT=degraded")
    build("ro-crash", "--build-arg", "real_time_audio_pipeline:FAULT=crash")
    main = spec / "dockerfiles/services/affective_processing_center/app/main.py"
    main.write_text(main.read_text().replace('"calm": (0.6, -0.7)', '"calm": (0.65, -0.7)'))
    build("ro-t2")
    for host in ("mainpc", "pc2"):  # start from hosts that run nothing
        ssh(host, "docker rm -f $(docker ps -aq --filter label=rig.service) 2>/dev/null; "
                  "rm -rf /var/lib/rig", check=False)
    return spec


def rollout(spec, *args, check=False):
    return rig("-c", str(spec / "fleet.yml"), "rollout", "-i", "inventory/lab.py", *args,
               check=check, cwd=spec)


def serving(host: str) -> dict:
    """service -> {tag, image, id, health} as the host sees it."""
    out = ssh(host, "docker ps --filter label=rig.service --format "
                    "'{{.Label \"rig.service\"}} {{.Label \"rig.tag\"}} {{.ID}}'").stdout
    found = {}
    for line in out.splitlines():
        service, tag, cid = line.split()
        image = ssh(host, f"docker inspect -f '{{{{.Config.Image}}}}' {cid}").stdout.strip()
        body = ssh(host, f"curl -s -m 2 localhost:{PORTS[service]}/health", check=False).stdout
        found[service] = {"tag": tag, "image": image, "id": cid,
                          "status": json.loads(body).get("status") if body else None}
    return found


def registry_digests(spec, tag) -> dict:
    out = rig("-c", str(spec / "fleet.yml"), "images", "verify", "--tag", tag, "--json",
              cwd=spec).stdout
    return {row["image"]: row["digest"] for row in json.loads(out)["images"]}


def expected(host, tag):
    suffix = {"model_ops_coordinator": f"{tag}-{host}"}
    return {s: suffix.get(s, tag) for s in SERVICES}


def assert_serves(spec, host, tag):
    """The host runs, for every service, the digest the registry has at tag (its machine's
    variant), healthy. Deploys are by digest: a service whose image did not change between two
    tags keeps running (and keeps the tag label it was started with)."""
    now = serving(host)
    assert sorted(now) == sorted(SERVICES), now
    digests = registry_digests(spec, tag)
    for service, v in now.items():
        repo = f"10.77.0.1:5000/rig/{service}"
        pushed = digests[repo + ":" + expected(host, tag)[service]]
        assert v["image"] == f"{repo}@{pushed}", (host, service, v)
        assert v["status"] == "ok", (host, service, v)
    return now


def test_1_canary_then_batch_and_ledger_and_status_agree(spec):
    result = rollout(spec, "--tag", "ro-t1")
    print(result.stdout)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert out.index("wave 1/2 (canary) mainpc") < out.index("wave 2/2 (batch) pc2")
    assert "66 passed, 4 skipped" in out  # rig verify --suite services ran after the rollout
    for host in ("mainpc", "pc2"):
        now = assert_serves(spec, host, "ro-t1")
        assert {s: v["tag"] for s, v in now.items()} == expected(host, "ro-t1")
        ledger = [json.loads(line) for line in
                  ssh(host, "cat /var/lib/rig/ledger.jsonl").stdout.splitlines()]
        assert sorted(e["service"] for e in ledger) == sorted(SERVICES)
        assert all(e["result"] == "ok" and e["action"] == "rollout" for e in ledger)
        assert "secret" not in json.dumps(ledger).lower() and "token" not in json.dumps(ledger)
    status = json.loads(rig("status", "--json").stdout)
    assert {(r["host"], r["service"]): r["tag"] for r in status} == {
        (h, s): t for h in ("mainpc", "pc2") for s, t in expected(h, "ro-t1").items()}
    assert all(r["health"] == "ok" for r in status)


def test_2_degraded_canary_is_rolled_back_and_pc2_untouched(spec):
    pc2_before = serving("pc2")
    result = rollout(spec, "--tag", "ro-bad")
    assert result.returncode == 1
    assert "wave 1 (canary) failed on mainpc" in result.stderr
    assert "mainpc model_ops_coordinator ro-bad-mainpc: unhealthy 3 times in a row; " \
           'answered: 200 {"status": "degraded"' in result.stderr
    assert "health degraded" in result.stderr  # the container's own log lines are shown
    assert "later waves not touched: pc2" in result.stderr
    assert_serves(spec, "mainpc", "ro-t1")
    assert serving("pc2") == pc2_before  # same containers, not restarted
    ledger = ssh("mainpc", "tail -n 1 /var/lib/rig/ledger.jsonl").stdout
    assert json.loads(ledger)["result"] == "failed"


def test_3_container_exiting_at_start_is_rolled_back(spec):
    pc2_before = serving("pc2")
    result = rollout(spec, "--tag", "ro-crash")
    assert result.returncode == 1
    assert "real_time_audio_pipeline ro-crash: container exited" in result.stderr
    assert "RIG_FAULT=crash" in result.stderr
    assert_serves(spec, "mainpc", "ro-t1")
    assert serving("pc2") == pc2_before


def test_4_missing_tag_is_refused_before_any_host_is_touched(spec):
    before = {h: serving(h) for h in ("mainpc", "pc2")}
    result = rollout(spec, "--tag", "ro-never-built")
    assert result.returncode == 1
    assert "10.77.0.1:5000/rig/model_ops_coordinator:ro-never-built-mainpc: not in the registry" \
        in result.stderr
    assert "pre-flight failed: no host was changed" in result.stderr
    assert "wave" not in result.stdout
    assert {h: serving(h) for h in ("mainpc", "pc2")} == before


def test_5_a_second_rollout_is_refused_by_the_lock(spec):
    first = subprocess.Popen([*RIG, "-c", str(spec / "fleet.yml"), "rollout", "--tag", "ro-t2",
                              "--no-verify"], cwd=spec, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(200):
            if ssh("pc2", "test -e /var/lib/rig/rollout.lock", check=False).returncode == 0:
                break
            time.sleep(0.05)
        second = rollout(spec, "--tag", "ro-t2", "--no-verify")
        assert second.returncode == 1
        assert "locked by" in second.stderr and "(rollout ro-t2, pid" in second.stderr
        assert "pre-flight failed: no host was changed" in second.stderr
    finally:
        out, err = first.communicate(timeout=300)
    assert first.returncode == 0, out + err
    for host in ("mainpc", "pc2"):
        assert_serves(spec, host, "ro-t2")
        assert ssh(host, "test -e /var/lib/rig/rollout.lock", check=False).returncode == 1


def test_6_rollback_returns_to_t1_everywhere(spec):
    result = rig("-c", str(spec / "fleet.yml"), "rollback", cwd=spec, check=False)
    print(result.stdout)
    assert result.returncode == 0, result.stderr
    for host in ("mainpc", "pc2"):
        assert_serves(spec, host, "ro-t1")
        last = json.loads(ssh(host, "tail -n 1 /var/lib/rig/ledger.jsonl").stdout)
        assert (last["action"], last["service"], last["tag"], last["result"]) == \
            ("rollback", "affective_processing_center", "ro-t1", "ok")


def test_7_rerun_of_a_completed_rollout_changes_nothing(spec):
    before = {h: serving(h) for h in ("mainpc", "pc2")}
    lines = int(ssh("mainpc", "wc -l < /var/lib/rig/ledger.jsonl").stdout)
    result = rollout(spec, "--tag", "ro-t1")
    assert result.returncode == 0, result.stderr
    assert "wave 1/2 (canary) mainpc: nothing to change" in result.stdout
    assert "wave 2/2 (batch) pc2: nothing to change" in result.stdout
    assert "changed" not in result.stdout
    assert {h: serving(h) for h in ("mainpc", "pc2")} == before
    assert int(ssh("mainpc", "wc -l < /var/lib/rig/ledger.jsonl").stdout) == lines


def test_8_ctrl_c_stops_after_the_wave_and_a_rerun_finishes(spec):
    run = subprocess.Popen([*RIG, "-c", str(spec / "fleet.yml"), "rollout", "--tag", "ro-t2",
                            "--no-verify"], cwd=spec, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
    for line in run.stdout:
        if "wave 1/2 (canary) mainpc" in line:
            run.send_signal(signal.SIGINT)
            break
    out, err = run.communicate(timeout=300)
    assert run.returncode == 130, out + err
    assert "interrupted before wave 2: pc2 not touched" in err
    assert_serves(spec, "mainpc", "ro-t2")
    assert_serves(spec, "pc2", "ro-t1")
    again = rollout(spec, "--tag", "ro-t2", "--no-verify")
    assert again.returncode == 0, again.stderr
    assert "wave 1/2 (canary) mainpc: nothing to change" in again.stdout
    assert_serves(spec, "pc2", "ro-t2")
