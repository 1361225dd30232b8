"""The rollout core on the real lab, each case judged from the hosts (containers and their
StartedAt, labels, state.json, ledger, locks): an abort that undoes exactly what the paused
canary changed, a gate and a timed pause each longer than host_timeout, two promotes racing,
--break-lock against a live rollout, and a secret rotated then rolled back with its container.
host_timeout is 15 s and lock_stale_after 20 s (a heartbeat every 5 s) in this module's spec."""

import contextlib
import hashlib
import json
import os
import subprocess
import time

import pytest

from .conftest import RIG, copy_spec, rig, ssh

HOSTS = ("mainpc", "pc2")
SERVICE = "affective_processing_center"
MOC = "model_ops_coordinator"


@pytest.fixture(scope="module")
def spec(bootstrapped, tmp_path_factory):
    spec = copy_spec(tmp_path_factory.mktemp("core"))
    fleet = spec / "fleet.yml"
    fleet.write_text(fleet.read_text().replace(
        "\nrollout:\n", "\nrollout:\n  host_timeout: 15s\n  lock_stale_after: 20s\n", 1))

    def build(tag, *args):
        rig("-c", str(fleet), "build", "--push", "--tag", tag, *args, cwd=spec)

    build("core-1")
    build("core-crash", "--build-arg", f"{MOC}:FAULT=crash")
    for host in HOSTS:
        ssh(host, "docker rm -f $(docker ps -aq --filter label=rig.service) 2>/dev/null; "
                  "rm -rf /var/lib/rig /etc/rig/secrets", check=False)
    result = run(spec, "rollout", "--tag", "core-1", "--no-verify")
    assert result.returncode == 0, result.stdout + result.stderr
    return spec


def run(spec, *args, env=None):
    return rig("-c", str(spec / "fleet.yml"), *args, cwd=spec, check=False, env=env)


def start(spec, *args, env=None) -> subprocess.Popen:
    return subprocess.Popen([*RIG, "-c", str(spec / "fleet.yml"), *args], cwd=spec,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **(env or {})})


def wait_for_line(process: subprocess.Popen, text: str) -> list[str]:
    seen = []
    for line in process.stdout:
        seen.append(line)
        if text in line:
            return seen
    raise AssertionError(f"never saw {text!r}: {''.join(seen)}")


@contextlib.contextmanager
def service_settings(spec, env: dict, start_period: str | None = None):
    """SERVICE's env (and its health start period) changed in the spec for the block."""
    fleet = spec / "fleet.yml"
    original = fleet.read_text()
    text = original.replace(
        "    runtime: {memory: 2g, cpus: 2}\n",
        f"    runtime: {{memory: 2g, cpus: 2}}\n    env: {json.dumps(env)}\n", 1)
    if start_period:
        at = text.index("port: 6560")
        end = text.index("start_period: 20s", at)
        text = text[:end] + f"start_period: {start_period}" + text[end + len("start_period: 20s"):]
    assert text != original
    fleet.write_text(text)
    try:
        yield
    finally:
        fleet.write_text(original)


def containers(host: str) -> dict[str, tuple[str, str]]:
    """name -> (StartedAt, config-hash label) of every rig container on the host."""
    out = ssh(host, "docker ps -a --filter label=rig.service --format '{{.Names}}' | xargs -r "
                    "docker inspect -f '{{.Name}} {{.State.StartedAt}} "
                    "{{index .Config.Labels \"rig.config-hash\"}}'").stdout
    return {name.lstrip("/"): (started, config) for name, started, config in
            (line.split() for line in out.splitlines())}


def lock(host: str) -> dict | None:
    out = ssh(host, "cat /var/lib/rig/rollout.lock", check=False)
    return json.loads(out.stdout) if out.returncode == 0 else None


def last_ledger(host: str) -> dict:
    return json.loads(ssh(host, "tail -n 1 /var/lib/rig/ledger.jsonl").stdout)


def test_abort_after_a_settings_only_change_restores_that_service_and_nothing_else(spec):
    before = {h: containers(h) for h in HOSTS}
    with service_settings(spec, {"RIG_CORE_NOTE": "one"}):
        paused = run(spec, "rollout", "--tag", "core-1", "--pause", "manual", "--no-verify")
        assert paused.returncode == 0, paused.stdout + paused.stderr
        assert "mainpc: 1 service(s) to start" in paused.stdout
        during = containers("mainpc")
        assert during[f"rig-{SERVICE}"][1] != before["mainpc"][f"rig-{SERVICE}"][1]
        aborted = run(spec, "abort")
    assert aborted.returncode == 0, aborted.stdout + aborted.stderr
    after = {h: containers(h) for h in HOSTS}
    assert after["pc2"] == before["pc2"]                                 # never touched
    for name, (started, config) in before["mainpc"].items():
        if name == f"rig-{SERVICE}":   # the kept container itself, started again
            assert after["mainpc"][name][1] == config and after["mainpc"][name][0] != started
        else:                          # the other services: the very same containers
            assert after["mainpc"][name] == (started, config), name
    assert set(after["mainpc"]) == set(before["mainpc"])                 # no -prev left
    assert lock("mainpc") is None and lock("pc2") is None
    line = last_ledger("mainpc")
    assert (line["action"], line["service"], line["tag"], line["result"]) == (
        "abort", SERVICE, "core-1", "ok")
    state = json.loads(ssh("mainpc", "cat /var/lib/rig/state.json").stdout)
    assert state[SERVICE]["config_hash"] == before["mainpc"][f"rig-{SERVICE}"][1]


def test_a_gate_longer_than_host_timeout_passes(spec):
    """The service loads its model for 25 s (503 loading) on hosts whose host_timeout is 15 s."""
    with service_settings(spec, {"RIG_LOAD_SECONDS": "25"}, start_period="90s"):
        started = time.monotonic()
        result = run(spec, "rollout", "--tag", "core-1", "--services", SERVICE, "--no-verify")
        elapsed = time.monotonic() - started
    print(result.stdout)
    assert result.returncode == 0, result.stdout + result.stderr
    assert elapsed > 2 * 25, elapsed      # each host's gate waited out the load
    gates = [line for line in result.stdout.splitlines() if f"{SERVICE}: healthy for" in line]
    assert len(gates) == 2 and all(float(g.rsplit("(", 1)[1].split()[0]) >= 25 for g in gates)
    back = run(spec, "rollout", "--tag", "core-1", "--services", SERVICE, "--no-verify")
    assert back.returncode == 0, back.stdout + back.stderr


def test_rigs_ssh_connection_killed_mid_gate_is_opened_again_and_the_rollout_finishes(spec):
    """sshd keeps listening, but the session process carrying rig's one connection to mainpc is
    killed while the gate waits for a 20 s model load: rig connects again, the gate goes on to
    its verdict, and the record and the lock's release reach the host."""
    from rig.lab.layout import LabPaths
    from rig.lab.state import LabState

    from .conftest import REPO

    engine = ["docker", "-H", LabState.load(LabPaths.for_repo(REPO)).docker_host]
    with service_settings(spec, {"RIG_LOAD_SECONDS": "20"}, start_period="90s"):
        run_ = start(spec, "rollout", "--tag", "core-1", "--services", SERVICE, "--limit",
                     "mainpc", "--no-verify")
        wait_for_line(run_, "wave 1/1")
        time.sleep(6)     # the new container is loading; the gate is probing
        killed = subprocess.run([*engine, "exec", "rig-lab-mainpc", "pkill", "-KILL", "-f",
                                 r"ops@notty|ops \[priv\]"], capture_output=True, text=True)
        out, err = run_.communicate(timeout=180)
    print(out, err)
    assert killed.returncode == 0, killed.stderr      # a session process was there to kill
    assert run_.returncode == 0, out + err
    assert "mainpc     the SSH connection dropped; connected again" in out
    assert f"{SERVICE}: healthy for" in out
    assert lock("mainpc") is None
    line = last_ledger("mainpc")
    assert (line["service"], line["result"]) == (SERVICE, "ok")
    back = run(spec, "rollout", "--tag", "core-1", "--services", SERVICE, "--no-verify")
    assert back.returncode == 0, back.stdout + back.stderr


def test_a_timed_pause_longer_than_host_timeout_passes_and_break_lock_cannot_take_it(spec):
    """A 30 s pause on 15 s host_timeout; meanwhile the lock's heartbeat moves and --break-lock
    from another rollout is refused, naming the holder."""
    with service_settings(spec, {"RIG_CORE_NOTE": "two"}):
        paused = start(spec, "rollout", "--tag", "core-1", "--pause", "30s", "--no-verify",
                       env={"RIG_OPERATOR": "ana@pause"})
        wait_for_line(paused, "pause 30 s: watching the canary")
        first = lock("pc2")["heartbeat"]
        intruder = run(spec, "rollout", "--tag", "core-1", "--break-lock", "--no-verify",
                       env={"RIG_OPERATOR": "bo@intruder"})
        time.sleep(12)
        second = lock("pc2")["heartbeat"]
        out, err = paused.communicate(timeout=120)
    assert intruder.returncode == 1, intruder.stdout + intruder.stderr
    assert "its heartbeat is fresh, so --break-lock refuses" in intruder.stderr
    assert "ana@pause" in intruder.stderr
    assert second > first                                   # a heartbeat during the pause
    assert paused.returncode == 0, out + err
    assert "pause over: the canary stayed healthy for 30 s" in out
    assert lock("mainpc") is None and lock("pc2") is None
    back = run(spec, "rollout", "--tag", "core-1", "--no-verify")
    assert back.returncode == 0, back.stdout + back.stderr


def test_two_promotes_started_together_one_wins_and_the_other_is_told_who(spec):
    with service_settings(spec, {"RIG_CORE_NOTE": "three"}):
        paused = run(spec, "rollout", "--tag", "core-1", "--pause", "manual", "--no-verify")
        assert paused.returncode == 0, paused.stdout + paused.stderr
        racers = {who: start(spec, "promote", env={"RIG_OPERATOR": who})
                  for who in ("alice@race", "bob@race")}
        done = {who: p.communicate(timeout=300) + (p.returncode,) for who, p in racers.items()}
    winners = [who for who, (_, _, rc) in done.items() if rc == 0]
    assert len(winners) == 1, done
    [loser] = [who for who in done if who not in winners]
    out, err, rc = done[loser]
    assert rc == 1 and winners[0] in err, (out, err)
    assert "wave 2/2" not in out                            # the loser touched nothing
    for host in HOSTS:
        assert lock(host) is None
        assert f"rig-{SERVICE}-prev" not in containers(host)
    assert last_ledger("pc2")["operator"] == winners[0]
    back = run(spec, "rollout", "--tag", "core-1", "--no-verify")
    assert back.returncode == 0, back.stdout + back.stderr


def test_a_secret_rotated_then_rolled_back_returns_with_its_old_value(spec):
    def seen(host):
        return ssh(host, f"docker exec rig-{MOC} sha256sum /run/secrets/HF_TOKEN"
                   ).stdout.split()[0]

    secret = spec / ".lab" / "secrets" / "HF_TOKEN"
    old = secret.read_text()
    old_hash = hashlib.sha256(old.removesuffix("\n").encode()).hexdigest()  # as rig reads it
    assert seen("mainpc") == old_hash
    rotated = "rotated-" + os.urandom(8).hex()
    secret.write_text(rotated)
    try:
        result = run(spec, "rollout", "--tag", "core-crash", "--services", MOC, "--no-verify")
    finally:
        secret.write_text(old)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "wave 1 (canary) failed on mainpc" in result.stderr
    assert "mainpc: serving its previous version" in result.stderr
    assert seen("mainpc") == old_hash                    # the old value, not the rotated one
    mounted = ssh("mainpc", f"docker inspect -f '{{{{range .Mounts}}}}{{{{.Source}}}} "
                            f"{{{{end}}}}' rig-{MOC}").stdout
    assert "/etc/rig/secrets/model_ops_coordinator/HF_TOKEN@" in mounted
    assert "secret HF_TOKEN rotated" in result.stdout          # what the plan said
    assert rotated not in result.stdout + result.stderr        # never the value


def logins(host: str, since: float, until: float) -> int:
    """SSH logins on host between two instants, from sshd's own log (lab hosts share this
    machine's clock); the reading ssh comes a second after `until` and is not counted."""
    out = ssh(host, f"journalctl -u ssh --since @{int(since)} --until @{int(until) + 1} -o cat "
                    "--no-pager | grep -c 'Accepted publickey'; true").stdout
    return int(out.split()[0])


def test_a_command_opens_one_ssh_connection_per_host(spec):
    """Pre-flight, the canary wave, its gate, the next wave and the record step share each
    host's one connection (rig/connector.py); so do status and a no-change converge."""
    counts = {}

    def count(what, *argv):
        time.sleep(1.1)
        since = time.time()
        result = run(spec, *argv)
        until = time.time()
        time.sleep(1.1)
        assert result.returncode == 0, result.stdout + result.stderr
        counts[what] = {h: logins(h, since, until) for h in HOSTS}

    rollout = ("rollout", "--tag", "core-1", "--services", SERVICE, "--no-verify")
    with service_settings(spec, {"RIG_CORE_NOTE": "connections"}):
        count("rollout", *rollout)
        count("status", "status")
        count("bootstrap", "bootstrap")
    with service_settings(spec, {"RIG_CORE_NOTE": "connections, paused"}):
        count("paused", *rollout, "--pause", "manual")
        # reads the paused lock, then rolls out: one pool for the command's Sessions
        count("promote", "promote", "--no-verify")
    assert counts == {what: {"mainpc": 1, "pc2": 1} for what in (
        "rollout", "status", "bootstrap", "paused", "promote")}, counts
    back = run(spec, "rollout", "--tag", "core-1", "--services", SERVICE, "--no-verify")
    assert back.returncode == 0, back.stdout + back.stderr
