"""Faults on the real lab, each judged from the hosts afterwards (containers, health, ledger,
state.json, locks): a rollout killed with SIGKILL mid-gate and re-run, SIGTERM mid-wave, a host
frozen mid-wave, a corrupt state.json, an operator name with non-ASCII and regex characters.
Every scenario must end with every host serving a known-good, healthy version."""

import json
import signal
import subprocess
import time

import pytest

from .conftest import RIG, copy_spec, rig, ssh
from .test_lab_rollout import SERVICES, assert_serves, serving

HOSTS = ("mainpc", "pc2")


@pytest.fixture(scope="module")
def spec(bootstrapped, tmp_path_factory):
    """Images ro-t1, ro-t2 (one service changed) and ro-bad (degraded model_ops_coordinator);
    sources already pushed are only tagged. Hosts start on ro-t1; host_timeout is 15 s."""
    spec = copy_spec(tmp_path_factory.mktemp("faults"))
    _set_host_timeout(spec, "15s")

    def build(tag, *args):
        rig("-c", str(spec / "fleet.yml"), "build", "--push", "--tag", tag, *args, cwd=spec)

    build("ro-t1")
    build("ro-bad", "--build-arg", "model_ops_coordinator:FAULT=degraded")
    main = spec / "dockerfiles/services/affective_processing_center/app/main.py"
    main.write_text(main.read_text().replace('"calm": (0.6, -0.7)', '"calm": (0.65, -0.7)'))
    build("ro-t2")
    result = rollout(spec, "--tag", "ro-t1", "--break-lock")
    assert result.returncode == 0, result.stdout + result.stderr
    return spec


def _set_host_timeout(spec, value):
    fleet = spec / "fleet.yml"
    text = fleet.read_text()
    assert "\nrollout:\n" in text
    fleet.write_text(text.replace("\nrollout:\n", f"\nrollout:\n  host_timeout: {value}\n", 1))


def rollout(spec, *args, env=None):
    return rig("-c", str(spec / "fleet.yml"), "rollout", "--no-verify", *args, check=False,
               cwd=spec, env=env)


def start(spec, *args, env=None) -> subprocess.Popen:
    import os

    return subprocess.Popen([*RIG, "-c", str(spec / "fleet.yml"), "rollout", "--no-verify", *args],
                            cwd=spec, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **(env or {})})


def wait_for_line(process: subprocess.Popen, text: str) -> list[str]:
    seen = []
    for line in process.stdout:
        seen.append(line)
        if text in line:
            return seen
    raise AssertionError(f"never saw {text!r}: {''.join(seen)}")


def clean(host):
    """No lock left, no kept -prev container, state.json agreeing with what runs."""
    assert ssh(host, "test -e /var/lib/rig/rollout.lock", check=False).returncode == 1, host
    names = ssh(host, "docker ps -a --filter label=rig.service --format '{{.Names}}'").stdout.split()
    assert sorted(names) == sorted(f"rig-{s}" for s in SERVICES), names
    state = json.loads(ssh(host, "cat /var/lib/rig/state.json").stdout)
    labels = ssh(host, "docker ps --filter label=rig.service --format "
                       "'{{.Label \"rig.service\"}} {{.Label \"rig.digest\"}}'").stdout
    assert {s: v["digest"] for s, v in state.items()} == dict(line.split() for line in labels.splitlines())


def ledger(host) -> list[dict]:
    return [json.loads(line) for line in ssh(host, "cat /var/lib/rig/ledger.jsonl").stdout.splitlines()]


def test_sigkill_mid_gate_then_the_same_command_never_calls_a_degraded_canary_done(spec):
    run = start(spec, "--tag", "ro-bad")
    wait_for_line(run, "wave 1/2 (canary) mainpc")
    for _ in range(200):  # the degraded container is up and being gated
        tags = ssh("mainpc", "docker ps --filter 'name=^/?rig-model_ops_coordinator$' "
                             "--format '{{.Label \"rig.tag\"}}'").stdout.split()
        if tags == ["ro-bad-mainpc"]:
            break
        time.sleep(0.05)
    run.kill()
    run.communicate(timeout=60)
    again = rollout(spec, "--tag", "ro-bad", "--break-lock")
    assert again.returncode == 1, again.stdout + again.stderr
    assert "wave 1 (canary) failed on mainpc" in again.stderr
    for host in HOSTS:
        assert_serves(spec, host, "ro-t1")
        clean(host)
    last = [e for e in ledger("mainpc") if e["service"] == "model_ops_coordinator"][-1]
    assert (last["tag"], last["result"]) == ("ro-bad-mainpc", "failed") and last["reason"]


def test_sigterm_mid_wave_finishes_the_wave_and_stops_then_the_same_command_finishes(spec):
    run = start(spec, "--tag", "ro-t2")
    wait_for_line(run, "wave 1/2 (canary) mainpc")
    run.send_signal(signal.SIGTERM)
    out, err = run.communicate(timeout=120)
    assert run.returncode == 143, out + err
    assert "interrupted before wave 2: pc2 not touched" in err
    assert_serves(spec, "mainpc", "ro-t2")
    assert_serves(spec, "pc2", "ro-t1")
    for host in HOSTS:
        clean(host)
    again = rollout(spec, "--tag", "ro-t2")
    assert again.returncode == 0, again.stderr
    for host in HOSTS:
        assert_serves(spec, host, "ro-t2")
        clean(host)


def test_a_host_frozen_mid_wave_is_failed_within_its_deadline(spec):
    from rig.lab.layout import LabPaths
    from rig.lab.state import LabState

    from .conftest import REPO

    docker_host = {"DOCKER_HOST": LabState.load(LabPaths.for_repo(REPO)).docker_host}
    engine = ["docker", "-H", docker_host["DOCKER_HOST"]]
    run = start(spec, "--tag", "ro-t1")
    started = time.monotonic()
    wait_for_line(run, "wave 2/2 (batch) pc2")
    subprocess.run([*engine, "pause", "rig-lab-pc2"], check=True, capture_output=True)
    try:
        out, err = run.communicate(timeout=15 + 30 + 30)
        elapsed = time.monotonic() - started
    finally:
        subprocess.run([*engine, "unpause", "rig-lab-pc2"], check=True, capture_output=True)
    print(f"frozen host: rig exited {run.returncode} after {elapsed:.1f} s\n{out}\n{err}")
    assert run.returncode == 1, out + err
    assert elapsed < 15 + 30, elapsed
    assert "pc2: LOST, not rolled back" in err and "--break-lock` finishes the job" in err
    assert_serves(spec, "mainpc", "ro-t1")   # wave 1 passed; auto_rollback: wave
    clean("mainpc")
    again = rollout(spec, "--tag", "ro-t1", "--break-lock")
    assert again.returncode == 0, again.stdout + again.stderr
    for host in HOSTS:
        assert_serves(spec, host, "ro-t1")
        clean(host)


def test_verify_of_a_frozen_host_fails_it_within_seconds_instead_of_waiting_for_ever(spec):
    """testinfra's ssh gives up on a host that stopped answering (ConnectTimeout, ServerAlive:
    rig/verify.py ssh_config), and the suite's later tests on it fail at once."""
    from rig.lab.layout import LabPaths
    from rig.lab.state import LabState

    from .conftest import REPO

    engine = ["docker", "-H", LabState.load(LabPaths.for_repo(REPO)).docker_host]
    subprocess.run([*engine, "pause", "rig-lab-pc2"], check=True, capture_output=True)
    started = time.monotonic()
    try:
        run = rig("-c", str(spec / "fleet.yml"), "verify", "--suite", "services", "--limit",
                  "pc2", check=False, cwd=spec)
        elapsed = time.monotonic() - started
    finally:
        subprocess.run([*engine, "unpause", "rig-lab-pc2"], check=True, capture_output=True)
    print(f"verify of a frozen host: exit {run.returncode} after {elapsed:.1f} s")
    assert run.returncode != 0, run.stdout + run.stderr
    assert elapsed < 60, elapsed
    assert "pc2 stopped answering earlier in this suite (ssh: " in run.stdout, run.stdout[-3000:]
    assert run.stdout.count("stopped answering earlier") >= 2      # later tests at once


def test_status_with_a_frozen_host_shows_the_others_and_says_which_did_not_answer(spec):
    """In an incident the operator needs the rest of the fleet: the frozen host's rows say
    `unreachable` (not `not running`: rig does not know), the exit code says it is partial."""
    from rig.lab.layout import LabPaths
    from rig.lab.state import LabState

    from .conftest import REPO

    engine = ["docker", "-H", LabState.load(LabPaths.for_repo(REPO)).docker_host]
    subprocess.run([*engine, "pause", "rig-lab-pc2"], check=True, capture_output=True)
    started = time.monotonic()
    try:
        run = rig("-c", str(spec / "fleet.yml"), "status", check=False, cwd=spec)
        elapsed = time.monotonic() - started
        locks = rig("-c", str(spec / "fleet.yml"), "lock", "status", check=False, cwd=spec)
    finally:
        subprocess.run([*engine, "unpause", "rig-lab-pc2"], check=True, capture_output=True)
    print(f"lock status with pc2 frozen: exit {locks.returncode}\n{locks.stdout}")
    assert locks.returncode == 1, locks.stdout + locks.stderr
    assert [line.split()[:2] for line in locks.stdout.splitlines()] == [
        ["mainpc", "free"], ["pc2", "unknown"]], locks.stdout
    assert "no answer" in locks.stdout.splitlines()[1], locks.stdout
    print(f"status with pc2 frozen: exit {run.returncode} after {elapsed:.1f} s\n{run.stdout}")
    assert run.returncode == 1, run.stdout + run.stderr
    assert elapsed < 60, elapsed
    rows = [line.split() for line in run.stdout.splitlines()[1:] if line.split()[:1] in
            (["mainpc"], ["pc2"])]
    assert [sorted(r[1] for r in rows if r[0] == h) for h in HOSTS] == [sorted(SERVICES)] * 2
    assert all(r[2:5] == ["-", "-", "unreachable"] for r in rows if r[0] == "pc2"), rows
    assert all(r[4] == "ok" for r in rows if r[0] == "mainpc"), rows
    assert "rig: 1 host(s) did not answer: pc2" in run.stderr


def test_a_corrupt_state_json_and_an_odd_operator_name(spec):
    ssh("mainpc", "printf '{\"half\": ' > /var/lib/rig/state.json")
    result = rollout(spec, "--tag", "ro-t2", env={"RIG_OPERATOR": "Zoë [ci] .*"})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "mainpc: warning: state.json was unreadable" in result.stdout
    for host in HOSTS:
        assert_serves(spec, host, "ro-t2")
        clean(host)  # the lock of `Zoë [ci] .*` was released, state.json agrees again
        assert ledger(host)[-1]["operator"] == "Zoë [ci] .*"


def test_a_taken_port_under_fleet_rollback_from_an_empty_fleet_leaves_nothing_running(spec):
    """pc2's slot port for affective_processing_center (127.0.0.1:16560, slot a: nothing ran
    there) is taken: its new container cannot be published and does not start. With
    auto_rollback: fleet every touched host goes back to what it ran before (nothing), and
    state.json names nothing that does not run."""
    fleet = spec / "fleet.yml"
    original = fleet.read_text()
    fleet.write_text(original.replace("auto_rollback: wave", "auto_rollback: fleet", 1))
    for host in HOSTS:
        ssh(host, "docker rm -f $(docker ps -aq --filter label=rig.service) 2>/dev/null; "
                  "rm -rf /var/lib/rig", check=False)
    image = ssh("pc2", "docker images --format '{{.Repository}} {{.ID}}' "
                       "| grep affective_processing_center | head -n 1 | cut -d' ' -f2").stdout.strip()
    assert image, "pc2 has no affective_processing_center image to squat with"
    ssh("pc2", f"docker run -d --name squatter --network host --entrypoint python3 {image} "
               "-m http.server 16560 --bind 127.0.0.1")  # any program on the slot's port
    ssh("pc2", "for i in $(seq 50); do curl -s -o /dev/null 127.0.0.1:16560 && exit 0; "
               "sleep 0.1; done; exit 1")
    try:
        result = rollout(spec, "--tag", "ro-t2", "--services", "affective_processing_center")
    finally:
        ssh("pc2", "docker rm -f squatter", check=False)
        fleet.write_text(original)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "wave 2 (batch) failed on pc2" in result.stderr
    assert "pc2 affective_processing_center: not started (Roll out | affective_processing_center: " \
        "run ro-t2)" in result.stderr
    for host in HOSTS:
        assert ssh(host, "docker ps -aq --filter label=rig.service").stdout.strip() == ""
        assert json.loads(ssh(host, "cat /var/lib/rig/state.json").stdout) == {}
        assert ssh(host, "test -e /var/lib/rig/rollout.lock", check=False).returncode == 1
    assert [(e["action"], e["result"]) for e in ledger("mainpc")] == [
        ("rollout", "ok"), ("auto-rollback", "ok")]
    assert [e["result"] for e in ledger("pc2")] == ["failed"]
    again = rollout(spec, "--tag", "ro-t2")   # with the port free, the same command finishes
    assert again.returncode == 0, again.stdout + again.stderr
    for host in HOSTS:
        assert_serves(spec, host, "ro-t2")
        clean(host)


def test_a_second_ctrl_c_stops_the_gates_and_rolls_the_canary_back(spec):
    """Hosts serve ro-t2; the canary starts ro-t1 and is interrupted twice while it is gated."""
    run = start(spec, "--tag", "ro-t1")
    wait_for_line(run, "wave 1/2 (canary) mainpc")
    for _ in range(200):  # the new container is up: its gate is running
        tags = ssh("mainpc", "docker ps --filter 'name=^/?rig-affective_processing_center$' "
                             "--format '{{.Label \"rig.tag\"}}'").stdout.split()
        if tags == ["ro-t1"]:
            break
        time.sleep(0.05)
    run.send_signal(signal.SIGINT)
    time.sleep(0.2)
    run.send_signal(signal.SIGINT)
    out, err = run.communicate(timeout=120)
    assert run.returncode == 130, out + err
    assert "SIGINT again: stopping the gates, rolling the wave back (a wave whose gates all " \
        "passed already finishes)" in out
    for host in HOSTS:
        assert_serves(spec, host, "ro-t2")
        clean(host)
    last = [e for e in ledger("mainpc") if e["service"] == "affective_processing_center"][-1]
    assert (last["tag"], last["result"]) == ("ro-t1", "interrupted")


def test_sshd_killed_mid_wave_fails_the_host_at_once_and_the_others_follow_the_policy(spec):
    """Hosts serve ro-t2; pc2's sshd dies (every session with it) while its wave runs."""
    from rig.lab.layout import LabPaths
    from rig.lab.state import LabState

    from .conftest import REPO

    engine = ["docker", "-H", LabState.load(LabPaths.for_repo(REPO)).docker_host]
    run = start(spec, "--tag", "ro-t1")
    started = time.monotonic()
    wait_for_line(run, "wave 2/2 (batch) pc2")
    subprocess.run([*engine, "exec", "rig-lab-pc2", "sh", "-c",
                    "systemctl stop ssh.socket ssh.service; pkill -KILL sshd"], capture_output=True)
    try:
        out, err = run.communicate(timeout=15 + 30 + 30)
        elapsed = time.monotonic() - started
    finally:
        subprocess.run([*engine, "exec", "rig-lab-pc2", "systemctl", "start", "ssh.service"],
                       check=True, capture_output=True)
    print(f"sshd killed: rig exited {run.returncode} after {elapsed:.1f} s\n{out}\n{err}")
    assert run.returncode == 1, out + err
    assert elapsed < 15 + 30, elapsed
    assert "Traceback" not in err
    assert "pc2: LOST, not rolled back" in err
    assert_serves(spec, "mainpc", "ro-t1")
    clean("mainpc")
    again = rollout(spec, "--tag", "ro-t1", "--break-lock")
    assert again.returncode == 0, again.stdout + again.stderr
    for host in HOSTS:
        assert_serves(spec, host, "ro-t1")
        clean(host)


def test_a_host_frozen_with_its_swap_in_flight_wakes_to_a_whole_version_of_each_service(spec):
    """pc2 frozen as its three services' swap goes out (side by side; pc2's GPU services are
    stop_first), and woken 17 s later, after rig gave the step up (15 s) and while rig still
    runs: pc2 is lost for the rest of the run, never rolled back under the swap it may still be
    running (an attack saw that race leave the failed release serving). Whatever it had begun
    runs to its end (spooled: the closed channel cannot cut a stop from its run) and, ended
    after rig gave up on it, undoes itself (an attack saw a swap finished that way leave two
    services behind the 503 maintenance answer); what it begins after rig stopped waiting does
    nothing (the start guard). So pc2 serves again what it served before, none is left created
    and never started, and the `--break-lock` run finishes the job."""
    from rig.lab.layout import LabPaths
    from rig.lab.state import LabState

    from .conftest import REPO

    engine = ["docker", "-H", LabState.load(LabPaths.for_repo(REPO)).docker_host]
    faults = [a for s in SERVICES for a in ("--build-arg", f"{s}:FAULT=none-frozen-swap")]
    rig("-c", str(spec / "fleet.yml"), "build", "--push", "--tag", "ro-t3", *faults, cwd=spec)
    before = {s: v["image"] for s, v in serving("pc2").items()}
    run = start(spec, "--tag", "ro-t3", "--break-lock")  # (a lock an earlier fault left)
    seen = []
    for line in run.stdout:      # pc2's pulls and secrets are done: its swap is the next step
        seen.append(line)
        if line.split()[:1] == ["pc2"] and "Roll out | secrets" in line:
            break
    else:
        raise AssertionError("never saw pc2's secrets: " + "".join(seen) + run.stderr.read())
    subprocess.run([*engine, "pause", "rig-lab-pc2"], check=True, capture_output=True)
    frozen = time.monotonic()
    try:   # past the step's 15 s, and back while rig still runs: it must not roll pc2 back
        time.sleep(17)       # (the swap may still be running there), nor wait for it again
    finally:
        subprocess.run([*engine, "unpause", "rig-lab-pc2"], check=True, capture_output=True)
    out, err = run.communicate(timeout=15 + 30 + 30)
    print(f"rig exited {run.returncode} {time.monotonic() - frozen:.1f} s after the freeze")
    print(f"{out}\n{err}")
    assert run.returncode == 1, out + err
    assert "pc2: LOST, not rolled back" in err
    assert not [line for line in (out + err).splitlines()       # no step of a rollback on pc2
                if line.split()[:1] == ["pc2"] and "Roll back" in line]
    assert err.count(": unknown whether started (") == len(SERVICES), err   # its swap was sent
    for _ in range(120):         # a step pc2 had begun runs to its end (its spool file goes)
        if ssh("pc2", "ls -A /var/lib/rig/ | grep -c '^[.]stderr' || true").stdout.strip() == "0":
            break
        time.sleep(1)
    states = ssh("pc2", "docker ps -a --filter label=rig.service "
                        "--format '{{.Names}} {{.State}}'").stdout.split("\n")
    print("pc2 after waking:", states)
    state = dict(line.split() for line in states if line.strip())
    assert "created" not in state.values(), state
    for service in SERVICES:
        assert "running" in (state.get(f"rig-{service}"), state.get(f"rig-{service}-prev")), \
            (service, state)
    for _ in range(90):          # what it served before, through the proxy (no 503 left)
        now = serving("pc2")
        if {s: v["image"] for s, v in now.items()} == before \
                and all(v["status"] == "ok" for v in now.values()):
            break
        time.sleep(1)
    else:
        raise AssertionError(f"pc2 does not serve what it served before: {now} vs {before}")
    assert_serves(spec, "mainpc", "ro-t3")     # wave 1 passed; auto_rollback: wave
    again = rollout(spec, "--tag", "ro-t3", "--break-lock")
    assert again.returncode == 0, again.stdout + again.stderr
    for host in HOSTS:
        assert_serves(spec, host, "ro-t3")
        clean(host)
    back = rollout(spec, "--tag", "ro-t1")
    assert back.returncode == 0, back.stdout + back.stderr
