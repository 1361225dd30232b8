"""logs, exec, lock status/release, prune and hooks on the real lab, judged from the hosts."""

import json
import os
import time

import pytest

from .conftest import copy_spec, rig, ssh

HOSTS = ("mainpc", "pc2")
SERVICE = "affective_processing_center"
REPO = f"10.77.0.1:5000/rig/{SERVICE}"


@pytest.fixture(scope="module")
def spec(bootstrapped, tmp_path_factory):
    spec = copy_spec(tmp_path_factory.mktemp("day2"))

    def build(tag, *args):
        rig("-c", str(spec / "fleet.yml"), "build", "--push", "--tag", tag, *args, cwd=spec)

    build("dz-1")
    build("dz-2", "--build-arg", f"{SERVICE}:FAULT=none")
    build("dz-3", "--build-arg", f"{SERVICE}:FAULT=none-3")
    for host in HOSTS:
        ssh(host, "docker rm -f $(docker ps -aq --filter label=rig.service) 2>/dev/null; "
                  "rm -rf /var/lib/rig", check=False)
    run(spec, "rollout", "--tag", "dz-1", "--no-verify", check=True)
    return spec


def run(spec, *args, check=False, env=None):
    return rig("-c", str(spec / "fleet.yml"), *args, cwd=spec, check=check, env=env)


def digest_of(spec, tag: str) -> str:
    rows = json.loads(run(spec, "images", "verify", "--tag", tag, "--json", check=True).stdout)
    return next(r["digest"] for r in rows["images"] if r["image"] == f"{REPO}:{tag}")


def test_logs_from_both_hosts_in_time_order(spec):
    result = run(spec, "logs", SERVICE, "--tail", "20", check=True)
    lines = [line.split(None, 2) for line in result.stdout.splitlines()]
    assert {host for host, _, _ in lines} == set(HOSTS)
    stamps = [stamp for _, stamp, _ in lines]
    assert stamps == sorted(stamps) and all(s.startswith("20") for s in stamps)
    assert any("health ok" in text for _, _, text in lines)
    bad = run(spec, "logs", SERVICE, "--since", "ten minutes")
    assert bad.returncode == 1 and "--since 'ten minutes'" in bad.stderr


def test_exec_runs_as_10001_and_passes_the_exit_code_back(spec):
    who = run(spec, "exec", "model_ops_coordinator", "--host", "pc2", "--", "id", "-u")
    assert who.returncode == 0 and who.stdout.strip() == "10001"
    both = run(spec, "exec", SERVICE, "--", "sh", "-c", "hostname; exit 7")
    assert both.returncode == 7
    assert {line.split()[0] for line in both.stdout.splitlines()} == set(HOSTS)
    assert "mainpc: exit code 7" in both.stderr and "pc2: exit code 7" in both.stderr


def test_lock_status_and_release(spec):
    rows = json.loads(run(spec, "lock", "status", "--json", check=True).stdout)
    assert {r["host"]: r["state"] for r in rows} == {"mainpc": "free", "pc2": "free"}
    planted = {"operator": "gone@elsewhere", "since": time.time() - 7200, "heartbeat": 1,
               "action": "rollout", "tag": "old", "pid": 4242, "machine": "elsewhere", "id": "x"}
    ssh("pc2", f"mkdir -p /var/lib/rig && echo {json.dumps(json.dumps(planted))} "
               "> /var/lib/rig/rollout.lock")
    text = run(spec, "lock", "status", check=True).stdout
    assert "pc2        held     locked by gone@elsewhere" in text and "stale" in text
    assert "mainpc     free" in text
    released = run(spec, "lock", "release", "--host", "pc2", check=True).stdout
    assert "pc2: released" in released
    assert ssh("pc2", "test -e /var/lib/rig/rollout.lock", check=False).returncode == 1


def test_prune_dry_run_changes_nothing_then_keeps_what_runs_and_what_rollback_needs(spec):
    for tag in ("dz-2", "dz-3"):
        run(spec, "rollout", "--tag", tag, "--services", SERVICE, "--no-verify", check=True)
    listing = "docker image ls --digests --no-trunc --format '{{.Repository}} {{.Digest}} {{.ID}}'"
    before = {h: sorted(ssh(h, listing).stdout.splitlines()) for h in HOSTS}
    dry = run(spec, "prune", "--dry-run", "--keep", "1", check=True)
    assert {h: sorted(ssh(h, listing).stdout.splitlines()) for h in HOSTS} == before
    assert "would remove" in dry.stdout and "would free" in dry.stdout
    result = run(spec, "prune", "--keep", "1", check=True)
    assert "freed" in result.stdout
    d1, d2, d3 = (digest_of(spec, t) for t in ("dz-1", "dz-2", "dz-3"))
    for host in HOSTS:
        now = ssh(host, listing).stdout
        assert d3 in now, f"{host}: the running image was removed"
        assert d2 in now, f"{host}: the rollback target was removed"
        assert d1 not in now, f"{host}: the oldest image was kept"
        family = [line for line in before[host] if "family-llm-cu121" in line]
        assert all(line in now for line in family)  # other repositories untouched
    rolled = run(spec, "rollback", "--services", SERVICE, "--no-verify")
    assert rolled.returncode == 0, rolled.stderr  # the kept previous image is enough


def test_an_orphan_container_is_listed_and_pruned(spec):
    image = ssh("pc2", f"docker inspect -f '{{{{.Image}}}}' rig-{SERVICE}").stdout.strip()
    ssh("pc2", f"docker run -d --name rig-ghost --label rig.service=ghost --entrypoint sleep "
               f"{image} 600")
    rows = json.loads(run(spec, "status", "--json", check=True).stdout)
    assert [(r["host"], r["health"]) for r in rows if r["service"] == "ghost"] == [("pc2", "orphan")]
    result = run(spec, "prune", check=True)
    assert "pc2        removed orphan container rig-ghost" in result.stdout
    assert ssh("pc2", "docker ps -aq --filter name=rig-ghost").stdout.strip() == ""
    assert ssh("pc2", f"docker inspect rig-{SERVICE}", check=False).returncode == 0


def test_hooks_run_with_their_variables_and_a_failing_pre_hook_changes_nothing(spec):
    hooks = spec / "hooks"
    hooks.mkdir(exist_ok=True)
    (hooks / "pre-rollout").write_text("#!/bin/sh\necho refusing $RIG_TAG; exit 1\n")
    os.chmod(hooks / "pre-rollout", 0o755)
    started = ssh("mainpc", f"docker inspect -f '{{{{.State.StartedAt}}}}' rig-{SERVICE}").stdout
    refused = run(spec, "rollout", "--tag", "dz-1", "--services", SERVICE, "--no-verify")
    assert refused.returncode == 1
    assert "hook pre-rollout: refusing dz-1" in refused.stdout
    assert "hook pre-rollout exited 1: stopped before any host was touched" in refused.stderr
    assert ssh("mainpc", f"docker inspect -f '{{{{.State.StartedAt}}}}' rig-{SERVICE}").stdout \
        == started
    (hooks / "pre-rollout").unlink()
    (hooks / "post-rollout").write_text(
        '#!/bin/sh\necho "$RIG_TAG|$RIG_HOSTS|$RIG_SERVICES|$RIG_RESULT|$RIG_OPERATOR" > hook.out\n')
    os.chmod(hooks / "post-rollout", 0o755)
    run(spec, "rollout", "--tag", "dz-1", "--services", SERVICE, "--no-verify", check=True,
        env={"RIG_OPERATOR": "zoe@ctl"})
    assert (spec / "hook.out").read_text().strip() == f"dz-1|mainpc,pc2|{SERVICE}|ok|zoe@ctl"


def test_logs_follow_streams_every_host_until_ctrl_c_and_stops_the_remote_followers(spec):
    import signal
    import subprocess

    from .conftest import RIG

    follow = subprocess.Popen([*RIG, "-c", str(spec / "fleet.yml"), "logs", SERVICE, "-f",
                               "--tail", "3"], cwd=spec, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    seen: set = set()
    try:
        deadline = time.monotonic() + 60
        while seen != set(HOSTS) and time.monotonic() < deadline:
            line = follow.stdout.readline()
            if line.split()[:1] and line.split()[0] in HOSTS:
                seen.add(line.split()[0])
        assert seen == set(HOSTS), "no lines from every host"
        for host in HOSTS:
            assert "--follow" in ssh(host, "ps -eo args | grep 'docker logs' | grep -v grep",
                                     check=False).stdout
    finally:
        follow.send_signal(signal.SIGINT)
        follow.communicate(timeout=60)
    assert follow.returncode in (0, 130)
    for host in HOSTS:
        left = ssh(host, "ps -eo args | grep 'docker logs --timestamps' | grep -v grep",
                   check=False).stdout
        assert left.strip() == "", f"{host}: a remote follower outlived rig: {left}"
