"""Hardened services on the real lab: limits per profile, a read-only root, a secret set from an
environment variable on this machine that reaches /run/secrets in the container and nowhere
else, rotation that restarts exactly the services that use it, and a one-field change on one
host that replaces exactly that container. Judged from the hosts (docker inspect over ssh)."""

import json
import secrets
import subprocess
import threading
from pathlib import Path

import pytest

from .conftest import REPO, copy_spec, rig, ssh

HOSTS = ("mainpc", "pc2")
SERVICES = ["model_ops_coordinator", "real_time_audio_pipeline", "affective_processing_center"]
USER = "model_ops_coordinator"  # the one service with a secret (HF_TOKEN)


@pytest.fixture(scope="module")
def spec(bootstrapped, tmp_path_factory):
    spec = copy_spec(tmp_path_factory.mktemp("runtime"))
    rig("-c", str(spec / "fleet.yml"), "build", "--push", "--tag", "rt-1", cwd=spec)
    for host in HOSTS:  # start from hosts that run nothing
        ssh(host, "docker rm -f $(docker ps -aq --filter label=rig.service) 2>/dev/null; "
                  "rm -rf /var/lib/rig /etc/rig/secrets", check=False)
    return spec


def run(spec, *args, token: str, check=False):
    return rig("-c", str(spec / "fleet.yml"), *args, env={"HF_TOKEN": token}, cwd=spec,
               check=check)


def started(host: str) -> dict:
    """service -> (container id, StartedAt) of rig-<service>."""
    names = " ".join(f"rig-{s}" for s in SERVICES)
    out = ssh(host, f"docker inspect -f '{{{{.Name}}}} {{{{.Id}}}} {{{{.State.StartedAt}}}}' {names}")
    return {name.lstrip("/").removeprefix("rig-"): (cid, at)
            for name, cid, at in (line.split() for line in out.stdout.splitlines())}


def inspect(host: str, service: str) -> dict:
    return json.loads(ssh(host, f"docker inspect rig-{service}").stdout)[0]


class PsWatch:
    """Samples every process's argv on this machine and on both hosts while a command runs."""

    def __init__(self):
        self.samples: list[str] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self):
        while not self.stop.is_set():
            self.samples.append(subprocess.run(["ps", "-eo", "args"], capture_output=True,
                                               text=True).stdout)
            for host in HOSTS:
                self.samples.append(ssh(host, "ps -eo args", check=False).stdout)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(timeout=30)


def files_holding(folder: Path, value: str) -> list[str]:
    """Files under folder that contain value (the lab's engine data is the hosts' own disks,
    where /etc/rig/secrets legitimately holds it: left out)."""
    result = subprocess.run(["grep", "-rlF", "--exclude-dir=engine", "--exclude-dir=.venv",
                             "--", value, str(folder)], capture_output=True, text=True)
    return result.stdout.splitlines()


def test_1_secret_reaches_the_file_and_nowhere_else(spec):
    token = "hf_" + secrets.token_hex(20)
    with PsWatch() as watch:
        result = run(spec, "rollout", "--tag", "rt-1", token=token)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "66 passed, 4 skipped" in result.stdout  # services suite + proxy checks
    assert len(watch.samples) >= 6, "ps was sampled too rarely to mean anything"
    assert not [s for s in watch.samples if token in s], "the secret showed in a process's argv"
    assert token not in result.stdout + result.stderr
    for host in HOSTS:
        assert ssh(host, f"docker exec rig-{USER} cat /run/secrets/HF_TOKEN").stdout == token
        # one file per version (HF_TOKEN@<hash>), the one this container mounts, and no other
        files = ssh(host, f"ls /etc/rig/secrets/{USER}").stdout.split()
        assert len(files) == 1 and files[0].startswith("HF_TOKEN@"), files
        mounted = ssh(host, f"docker inspect -f '{{{{range .Mounts}}}}{{{{.Source}}}} "
                            f"{{{{end}}}}' rig-{USER}").stdout.split()
        assert f"/etc/rig/secrets/{USER}/{files[0]}" in mounted
        mode = ssh(host, f"stat -c '%a %u %U' /etc/rig/secrets/{USER}/{files[0]} "
                         f"/etc/rig/secrets/{USER}").stdout.split("\n")
        assert mode[0].split()[:2] == ["400", "10001"] and mode[1].split()[:2] == ["700", "0"]
        body = json.loads(ssh(host, "curl -s localhost:8212/health").stdout)
        assert body["model_hub"] == "token" and body["secrets"] == ["HF_TOKEN"]
        for where in ("/var/lib/rig/ledger.jsonl", "/var/lib/rig/state.json"):
            assert token not in ssh(host, f"cat {where}").stdout, where
        for service in SERVICES:
            assert token not in json.dumps(inspect(host, service)), (host, service)
            env = ssh(host, f"docker exec rig-{service} env").stdout
            assert token not in env and "HF_TOKEN" not in env, (host, service)
    assert files_holding(REPO, token) == [] and files_holding(spec, token) == []


def test_2_every_container_is_hardened_with_its_profiles_limits():
    limits = {}
    for host in HOSTS:
        for service in SERVICES:
            config = inspect(host, service)["HostConfig"]
            assert config["ReadonlyRootfs"] is True and "ALL" in config["CapDrop"]
            assert "no-new-privileges" in config["SecurityOpt"]
            limits[host, service] = (config["Memory"], config["NanoCpus"], config["PidsLimit"],
                                     config["ShmSize"])
            write = ssh(host, f"docker exec rig-{service} touch /x", check=False)
            assert write.returncode != 0 and "Read-only file system" in write.stderr
    gib = 2**30
    assert limits["mainpc", USER] == (12 * gib, 2 * 10**9, 512, 2 * gib)   # fleet.yml + lab.yml
    assert limits["pc2", USER] == (6 * gib, 15 * 10**8, 512, 1 * gib)      # by_profile: pc2
    assert limits["pc2", "affective_processing_center"] == (1 * gib, 5 * 10**8, 512, 256 * 2**20)
    logs = ssh("pc2", f"docker exec rig-{USER} cat /logs/{USER}.log").stdout
    assert "health ok" in logs  # the service writes its log file to the log volume


def test_3_unchanged_rerun_restarts_nothing_and_rotation_restarts_only_its_users(spec):
    token = ssh("mainpc", f"docker exec rig-{USER} cat /run/secrets/HF_TOKEN").stdout
    before = {h: started(h) for h in HOSTS}
    same = run(spec, "rollout", "--tag", "rt-1", "--no-verify", token=token)
    assert same.returncode == 0, same.stderr
    assert "mainpc: nothing to change" in same.stdout and "pc2: nothing to change" in same.stdout
    assert {h: started(h) for h in HOSTS} == before

    rotated = "hf_" + secrets.token_hex(20)
    plan = run(spec, "plan", "--tag", "rt-1", "--json", token=rotated, check=True)
    changes = [(r["host"], r["service"], r["why"]) for r in json.loads(plan.stdout)["rows"]
               if r["change"]]
    assert changes == [("mainpc", USER, ["secret HF_TOKEN rotated"]),
                       ("pc2", USER, ["secret HF_TOKEN rotated"])]
    assert rotated not in plan.stdout + plan.stderr
    result = run(spec, "rollout", "--tag", "rt-1", token=rotated)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"mainpc     {USER}: healthy" in result.stdout  # gated, canary first
    assert f"pc2        {USER}: healthy" in result.stdout
    assert result.stdout.index("mainpc     " + USER) < result.stdout.index("pc2        " + USER)
    for host in HOSTS:
        now = started(host)
        assert now[USER] != before[host][USER], f"{host}: {USER} was not restarted"
        for service in SERVICES:
            if service != USER:
                assert now[service] == before[host][service], f"{host}: {service} restarted"
        assert ssh(host, f"docker exec rig-{USER} cat /run/secrets/HF_TOKEN").stdout == rotated
        # the old version went with the kept container that used it: one file, the new one
        files = ssh(host, f"ls /etc/rig/secrets/{USER}").stdout.split()
        assert len(files) == 1 and rotated == ssh(
            host, f"cat /etc/rig/secrets/{USER}/{files[0]}").stdout, files


def test_4_memory_for_one_service_on_pc2_replaces_exactly_that_container(spec):
    token = ssh("mainpc", f"docker exec rig-{USER} cat /run/secrets/HF_TOKEN").stdout
    fleet = spec / "fleet.yml"
    text = fleet.read_text()
    old = "      pc2: {memory: 6g, cpus: 4, shm_size: 1g}"
    assert text.count(old) == 1
    fleet.write_text(text.replace(old, "      pc2: {memory: 5g, cpus: 4, shm_size: 1g}"))
    before = {h: started(h) for h in HOSTS}
    plan = run(spec, "plan", "--tag", "rt-1", token=token, check=True)
    changed = [line for line in plan.stdout.splitlines() if " change " in line]
    assert len(changed) == 1 and changed[0].split()[:2] == ["pc2", USER], plan.stdout
    assert changed[0].endswith("(memory 6g -> 5g) [gate: /health + lists the loaded models]"), \
        changed[0]
    assert "1 change(s)" in plan.stdout
    result = run(spec, "rollout", "--tag", "rt-1", token=token)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "wave 1/2 (canary) mainpc: nothing to change" in result.stdout
    assert f"pc2        {USER}: healthy" in result.stdout  # its gate's verdict line
    after = {h: started(h) for h in HOSTS}
    assert after["mainpc"] == before["mainpc"]
    assert {s: after["pc2"][s] == before["pc2"][s] for s in SERVICES} == {
        USER: False, "real_time_audio_pipeline": True, "affective_processing_center": True}
    assert inspect("pc2", USER)["HostConfig"]["Memory"] == 5 * 2**30
    last = json.loads(ssh("pc2", "tail -n 1 /var/lib/rig/ledger.jsonl").stdout)
    assert (last["service"], last["result"]) == (USER, "ok") and last["config_hash"]
