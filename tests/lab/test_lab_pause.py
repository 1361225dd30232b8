"""The canary pause on the real lab: `manual` stops after the canary with the locks held and
status saying so, `rig promote` finishes the batches, `rig abort` restores the canary; a timed
pause whose canary degrades during the pause is rolled back. Judged from the hosts."""

import json

import pytest

from .conftest import copy_spec, rig, ssh

HOSTS = ("mainpc", "pc2")
SERVICE = "affective_processing_center"


@pytest.fixture(scope="module")
def spec(bootstrapped, tmp_path_factory):
    spec = copy_spec(tmp_path_factory.mktemp("pause"))

    def build(tag, *args):
        rig("-c", str(spec / "fleet.yml"), "build", "--push", "--tag", tag, *args, cwd=spec)

    build("pz-1")
    build("pz-late", "--build-arg", f"{SERVICE}:FAULT=degrade-after=6")
    main = spec / f"dockerfiles/services/{SERVICE}/app/main.py"
    main.write_text(main.read_text().replace('"calm": (0.6, -0.7)', '"calm": (0.61, -0.7)'))
    build("pz-2")
    for host in HOSTS:
        ssh(host, "docker rm -f $(docker ps -aq --filter label=rig.service) 2>/dev/null; "
                  "rm -rf /var/lib/rig", check=False)
    run(spec, "rollout", "--tag", "pz-1", "--no-verify", check=True)
    return spec


def run(spec, *args, check=False):
    return rig("-c", str(spec / "fleet.yml"), *args, cwd=spec, check=check)


def tag_of(host: str) -> str:
    return ssh(host, f"docker inspect -f '{{{{index .Config.Labels \"rig.tag\"}}}}' rig-{SERVICE}"
               ).stdout.strip()


def lock(host: str) -> dict | None:
    out = ssh(host, "cat /var/lib/rig/rollout.lock", check=False)
    return json.loads(out.stdout) if out.returncode == 0 else None


def test_1_manual_pause_stops_after_the_canary_and_promote_finishes(spec):
    result = run(spec, "rollout", "--tag", "pz-2", "--pause", "manual", "--services", SERVICE)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "rollout pz-2 paused after the canary" in result.stdout
    assert "Waves still to go: pc2" in result.stdout and "rig promote" in result.stdout
    assert "wave 2/2" not in result.stdout
    assert (tag_of("mainpc"), tag_of("pc2")) == ("pz-2", "pz-1")
    for host in HOSTS:  # every host of the rollout stays locked, marked paused
        held = lock(host)
        assert held and held["paused"] and held["tag"] == "pz-2" and held["remaining"] == [["pc2"]]
    status = run(spec, "status", check=True).stdout
    assert "mainpc: paused rollout pz-2 by" in status and "`rig promote` continues it" in status
    other = run(spec, "rollout", "--tag", "pz-1", "--no-verify")
    assert other.returncode == 1 and "paused rollout pz-2" in other.stderr  # refused, not broken

    promoted = run(spec, "promote")
    assert promoted.returncode == 0, promoted.stdout + promoted.stderr
    out = promoted.stdout
    assert "wave 1/2 (canary) mainpc: nothing to change" in out
    assert out.index("wave 1/2") < out.index("wave 2/2 (batch) pc2: 1 service(s) to start")
    assert (tag_of("mainpc"), tag_of("pc2")) == ("pz-2", "pz-2")
    for host in HOSTS:
        assert lock(host) is None
        kept = ssh(host, "docker ps -aq --filter name=-prev").stdout.strip()
        assert kept == "", f"{host}: kept containers left after promote"


def test_2_abort_restores_the_canary_and_releases_every_lock(spec):
    run(spec, "rollout", "--tag", "pz-1", "--services", SERVICE, "--no-verify", check=True)
    paused = run(spec, "rollout", "--tag", "pz-2", "--pause", "manual", "--services", SERVICE)
    assert paused.returncode == 0, paused.stderr
    assert (tag_of("mainpc"), tag_of("pc2")) == ("pz-2", "pz-1")
    aborted = run(spec, "abort")
    assert aborted.returncode == 0, aborted.stdout + aborted.stderr
    assert (tag_of("mainpc"), tag_of("pc2")) == ("pz-1", "pz-1")
    assert lock("mainpc") is None and lock("pc2") is None
    last = json.loads(ssh("mainpc", "tail -n 1 /var/lib/rig/ledger.jsonl").stdout)
    assert (last["action"], last["tag"], last["result"]) == ("abort", "pz-1", "ok")
    assert "no paused rollout" in run(spec, "promote").stderr


def test_3_a_canary_that_degrades_during_a_timed_pause_is_rolled_back(spec):
    result = run(spec, "rollout", "--tag", "pz-late", "--pause", "20s", "--services", SERVICE)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "pause 20 s: watching the canary's health" in result.stdout
    assert "wave 1 (canary) failed on mainpc" in result.stderr
    assert 'unhealthy 3 times in a row; answered: 200 {"status": "degraded"' in result.stderr
    assert "later waves not touched: pc2" in result.stderr
    assert (tag_of("mainpc"), tag_of("pc2")) == ("pz-1", "pz-1")
    last = json.loads(ssh("mainpc", "tail -n 1 /var/lib/rig/ledger.jsonl").stdout)
    assert (last["tag"], last["result"]) == ("pz-late", "failed")
    state = json.loads(ssh("mainpc", "cat /var/lib/rig/state.json").stdout)
    assert state[SERVICE]["tag"] == "pz-1"  # never recorded as running the degraded version


def test_4_a_promote_killed_in_its_wave_is_finished_by_the_next_promote(spec):
    """SIGKILL as the promote's batch wave begins: its locks keep the paused record
    (`promoting`), so `rig abort` is refused and `rig promote` again finishes the job."""
    import signal
    import subprocess

    from .conftest import RIG

    run(spec, "rollout", "--tag", "pz-1", "--services", SERVICE, "--no-verify", check=True)
    paused = run(spec, "rollout", "--tag", "pz-2", "--pause", "manual", "--services", SERVICE)
    assert paused.returncode == 0, paused.stdout + paused.stderr
    promote = subprocess.Popen([*RIG, "-c", str(spec / "fleet.yml"), "promote", "--no-verify"],
                               cwd=spec, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True)
    seen = []
    for line in promote.stdout:
        seen.append(line)
        if "wave 2/2 (batch) pc2" in line:
            promote.send_signal(signal.SIGKILL)
            break
    promote.communicate(timeout=60)
    assert promote.returncode == -signal.SIGKILL, "".join(seen)
    held = lock("pc2")
    assert held and held["promoting"] and held["record"] and not held.get("paused"), held

    aborted = run(spec, "abort")
    assert aborted.returncode == 1, aborted.stdout + aborted.stderr
    assert "a promote of the paused rollout pz-2 holds locks" in aborted.stderr
    again = run(spec, "promote", "--no-verify")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "finishing a promote that did not finish" in again.stdout
    assert (tag_of("mainpc"), tag_of("pc2")) == ("pz-2", "pz-2")
    for host in HOSTS:
        assert lock(host) is None
        kept = ssh(host, "docker ps -aq --filter name=-prev").stdout.strip()
        assert kept == "", f"{host}: kept containers left after the promote"
