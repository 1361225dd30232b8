"""Zero downtime on the real lab: clients on the control machine talk to a lab host's public
port (its HAProxy) while rig rolls a service out, and every answer they get is judged.

Each new version here is a change of the service's env in a spec copy (the container is
replaced with the same image), so no build is needed beyond one tag. Clients are bounded: at
most MAX_REQUESTS requests, for at most MAX_SECONDS, to the lab host's address only."""

import base64
import http.client
import json
import os
import socket
import struct
import threading
import time

import pytest

from .conftest import copy_spec, lab_address, rig, rig_at, ssh

MAX_REQUESTS, MAX_SECONDS = 3000, 240
TAG = "zd-1"
TEXT, AUDIO, MODELS = "affective_processing_center", "real_time_audio_pipeline", "model_ops_coordinator"
PORTS = {MODELS: 8212, AUDIO: 6557, TEXT: 6560}


@pytest.fixture(scope="module")
def spec(bootstrapped, tmp_path_factory):
    spec = copy_spec(tmp_path_factory.mktemp("proxy"))
    rig_at(spec, "build", "-i", "inventory/lab.py", "--push", "--tag", TAG)
    for host in ("mainpc", "pc2"):  # from hosts that run nothing
        ssh(host, "docker rm -f $(docker ps -aq --filter label=rig.service) 2>/dev/null; "
                  "rm -rf /var/lib/rig", check=False)
    rollout(spec, check=True)
    return spec


def rollout(spec, *args, check=False):
    return rig_at(spec, "rollout", "-i", "inventory/lab.py", "--tag", TAG, "--no-verify", *args,
                  check=check)


ROUND = {"n": 0}


def new_version(spec, service: str, **env) -> None:
    """The service's next version: its env in the spec copy changes (ZD_ROUND and `env`)."""
    ROUND["n"] += 1
    fleet = spec / "fleet.yml"
    text = fleet.read_text()
    head = f"\n  {service}:\n"            # the service's block under services:
    start = text.index(head) + len(head)
    rest = text[start:]
    if rest.startswith("    env:"):        # this test's line from the round before
        rest = rest[rest.index("\n") + 1:]
    values = {"ZD_ROUND": str(ROUND["n"]), **env}
    line = "    env: {" + ", ".join(f"{k}: {json.dumps(v)}" for k, v in values.items()) + "}\n"
    fleet.write_text(text[:start] + line + rest)


class Client(threading.Thread):
    """GETs of /health on a host's public port, a new connection each, until stopped (or the
    bounds): each answer as (status, JSON body), each failure as ("error", what happened)."""

    def __init__(self, host: str, port: int):
        super().__init__(daemon=True)
        self.address, self.port = lab_address(host), port
        self.answers: list[tuple] = []
        self.done = threading.Event()

    def run(self):
        began = time.monotonic()
        while not self.done.is_set() and len(self.answers) < MAX_REQUESTS \
                and time.monotonic() - began < MAX_SECONDS:
            conn = http.client.HTTPConnection(self.address, self.port, timeout=10)
            try:
                conn.request("GET", "/health")
                answer = conn.getresponse()
                self.answers.append((answer.status, json.loads(answer.read() or b"null")))
            except (OSError, http.client.HTTPException, ValueError) as e:
                self.answers.append(("error", repr(e)))
            finally:
                conn.close()
            time.sleep(0.02)

    def stop(self) -> list[tuple]:
        self.done.set()
        self.join(timeout=30)
        return self.answers


def during(spec, host, port, *args):
    """A rollout with a client streaming requests to host:port all along."""
    client = Client(host, port)
    client.start()
    time.sleep(0.5)                       # answers from before the rollout too
    result = rollout(spec, *args)
    time.sleep(0.5)
    return result, client.stop()


def proxy_stat(host: str, service: str) -> dict:
    """slot -> HAProxy's status for the service's backend (as root: the socket is root's)."""
    out = ssh(host, "printf 'show stat\\n' | socat stdio UNIX-CONNECT:/run/haproxy-rig-admin.sock").stdout
    return {row.split(",")[1]: row.split(",")[17] for row in out.splitlines()
            if row.startswith(f"{service},") and row.split(",")[1] in ("a", "b")}


def test_plan_says_which_strategy_each_service_gets_on_each_host_and_why(spec):
    new_version(spec, MODELS)
    out = rig_at(spec, "plan", "-i", "inventory/lab.py", "--tag", TAG).stdout
    assert ("start_first: auto: two copies fit: 2 x 8192 MiB + 2048 MiB of other services = "
            "18432 MiB against 23540 MiB (24564 MiB less gpu_reserve)") in out
    assert ("stop_first: auto: two copies do not fit: 2 x 8192 MiB + 2048 MiB of other services "
            "= 18432 MiB against 11264 MiB (12288 MiB less gpu_reserve)") in out
    mainpc, pc2 = out.index("mainpc     model_ops"), out.index("pc2        model_ops")
    assert "start_first" in out[mainpc:pc2] and "stop_first" in out[pc2:]


def test_start_first_drops_no_request(spec):
    """affective_processing_center uses no GPU: start_first on every host. A client that
    keeps asking mainpc during the rollout gets 200 {"status": "ok"} every time."""
    new_version(spec, TEXT)
    result, answers = during(spec, "mainpc", PORTS[TEXT], "--limit", "mainpc",
                             "--services", TEXT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "proxy: switching mainpc (affective_processing_center)" in result.stdout
    assert len(answers) > 20
    bad = [a for a in answers if a[0] != 200 or a[1].get("status") != "ok"]
    assert bad == [], bad[:5]
    assert list(proxy_stat("mainpc", TEXT).values()).count("MAINT") == 1


def test_a_websocket_stream_opened_before_the_switch_completes_its_exchange(spec):
    """real_time_audio_pipeline on MainPC: 2 x 2 GiB fit, start_first. A stream opened on
    the old container keeps it (the old slot drains) and every frame is answered in order;
    once the stream closes, the drain ends and the old container stops."""
    stream = WebSocket(lab_address("mainpc"), PORTS[AUDIO])
    replies = [stream.exchange() for _ in range(3)]
    new_version(spec, AUDIO)
    done: dict = {}
    job = threading.Thread(target=lambda: done.update(result=rollout(
        spec, "--limit", "mainpc", "--services", AUDIO)), daemon=True)
    began = time.monotonic()
    job.start()
    drained = False
    while job.is_alive() and time.monotonic() - began < 120:
        replies.append(stream.exchange())
        drained = drained or "DRAIN" in proxy_stat("mainpc", AUDIO).values()
        if drained and len(replies) > 6:
            break
        time.sleep(0.3)
    replies += [stream.exchange() for _ in range(3)]
    stream.close()
    job.join(timeout=120)
    assert drained, "the stream never saw the switch"
    assert [r["frame"] for r in replies] == list(range(1, len(replies) + 1))
    assert all(r["samples"] == 3 for r in replies)
    assert done["result"].returncode == 0, done["result"].stderr
    # the drain ended with the stream, well before the drain deadline (rollout.drain: 30 s)
    assert time.monotonic() - began < 30


def test_stop_first_answers_maintenance_while_the_model_loads_never_a_refused_connection(spec):
    """model_ops_coordinator on PC2: two 8 GiB copies do not fit on 12 GiB, stop_first. The
    new version takes 4 s to load its model: the client sees 200 ok, then the proxy's 503
    maintenance JSON, then 200 ok again; never a refused or reset connection."""
    new_version(spec, MODELS, RIG_LOAD_SECONDS="4")
    result, answers = during(spec, "pc2", PORTS[MODELS], "--limit", "pc2", "--services", MODELS)
    assert result.returncode == 0, result.stdout + result.stderr
    kinds = []
    for status, body in answers:
        kind = ("ok" if status == 200 and body.get("status") == "ok" else
                "maintenance" if status == 503 and body == {
                    "status": "maintenance", "service": MODELS, "retry_after": 10} else
                f"BAD {status} {body}")
        if not kinds or kinds[-1] != kind:
            kinds.append(kind)
    assert kinds == ["ok", "maintenance", "ok"], kinds


def test_a_canary_that_fails_its_gate_never_answers_a_client(spec):
    """The new version answers 200 {"status": "degraded"} (RIG_FAULT): its gate fails and it
    is rolled back. Started beside the old one, it never reached the proxy: the client only
    ever got the old version's "ok"."""
    new_version(spec, TEXT, RIG_FAULT="degraded")
    result, answers = during(spec, "mainpc", PORTS[TEXT], "--limit", "mainpc",
                             "--services", TEXT)
    assert result.returncode == 1 and "wave 1 (canary) failed on mainpc" in result.stderr
    assert len(answers) > 20
    assert {(a[0], a[1].get("status")) for a in answers} == {(200, "ok")}


def test_a_rollback_after_the_switch_drops_no_request_while_the_old_version_loads(spec):
    """A canary paused after its switch, then `rig abort`: the kept version (3 s to load its
    model) starts again beside the new one, which serves until the old one passed its restore
    gate; the proxy switches back and the new one goes. The client never gets a 503."""
    new_version(spec, TEXT, RIG_LOAD_SECONDS="3")
    assert rollout(spec, "--services", TEXT).returncode == 0
    new_version(spec, TEXT)           # the canary (mainpc) switches, and pc2 waits
    paused = rollout(spec, "--services", TEXT, "--pause", "manual")
    assert paused.returncode == 0, paused.stdout + paused.stderr
    assert "proxy: switching mainpc (affective_processing_center)" in paused.stdout
    client = Client("mainpc", PORTS[TEXT])
    client.start()
    time.sleep(0.5)
    began = time.monotonic()
    aborted = rig_at(spec, "abort", "-i", "inventory/lab.py")
    took = time.monotonic() - began
    answers = client.stop()
    assert aborted.returncode == 0, aborted.stdout + aborted.stderr
    assert "mainpc: serving its previous version" in aborted.stdout
    assert took > 3                       # the old version's load, hidden from the client
    bad = [a for a in answers if a[0] != 200 or a[1].get("status") != "ok"]
    print(f"warm rollback: abort took {took:.1f} s; {len(answers)} answers, {len(bad)} not 200 ok")
    assert len(answers) > 20 and bad == [], bad[:5]
    names = ssh("mainpc", f"docker ps -a --format '{{{{.Names}}}}' --filter label=rig.service={TEXT}"
                ).stdout.split()
    assert names == [f"rig-{TEXT}"]       # the version rolled back from is gone, nothing aside
    assert list(proxy_stat("mainpc", TEXT).values()).count("MAINT") == 1


def test_an_abort_killed_while_the_old_version_loads_is_finished_by_the_next_abort(spec):
    """`rig abort` SIGKILLed while the kept version (8 s to load) starts beside the new one:
    the new one keeps serving as -prev. The restored old one then stops (a crash). The abort's
    locks kept the paused record: `rig lock status` says so, `rig promote` is refused, and a
    second `rig abort` starts the old version again (never the new one under its name), gates
    it, switches back to it and removes the new one. The client gets 200 ok throughout."""
    import signal
    import subprocess

    from .conftest import RIG

    new_version(spec, TEXT, RIG_LOAD_SECONDS="8")
    assert rollout(spec, "--services", TEXT).returncode == 0
    old = json.loads(ssh("mainpc", "cat /var/lib/rig/state.json").stdout)[TEXT]["config_hash"]
    new_version(spec, TEXT)
    paused = rollout(spec, "--services", TEXT, "--pause", "manual")
    assert paused.returncode == 0, paused.stdout + paused.stderr
    client = Client("mainpc", PORTS[TEXT])
    client.start()
    time.sleep(0.5)
    first = subprocess.Popen([*RIG, "-c", str(spec / "fleet.yml"), "abort", "-i",
                              "inventory/lab.py"], cwd=spec, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    both = f"docker ps --format '{{{{.Names}}}}' --filter label=rig.service={TEXT}"
    try:
        deadline = time.monotonic() + 60
        while sorted(ssh("mainpc", both).stdout.split()) != [f"rig-{TEXT}", f"rig-{TEXT}-prev"]:
            assert time.monotonic() < deadline and first.poll() is None, "no warm restore seen"
            time.sleep(0.3)
        time.sleep(1)                       # the kept version is loading: its gate has begun
    finally:
        first.send_signal(signal.SIGKILL)
        first.communicate(timeout=30)
    try:      # a failure here must not leave the abort's locks to the tests after it
        ssh("mainpc", f"docker stop -t 1 rig-{TEXT}")     # the restored one crashes meanwhile
        locks = rig_at(spec, "lock", "status", "-i", "inventory/lab.py", check=False).stdout
        assert "did not finish (its holder is dead): `rig abort` finishes it" in locks, locks
        promoted = rig_at(spec, "promote", "-i", "inventory/lab.py", check=False)
        assert promoted.returncode != 0 and "`rig abort` finishes it" in promoted.stderr
        began = time.monotonic()
        second = rig_at(spec, "abort", "-i", "inventory/lab.py", check=False)
        took = time.monotonic() - began
        answers = client.stop()
        assert second.returncode == 0, second.stdout + second.stderr
        assert "finishing an abort that did not finish" in second.stdout
        assert "mainpc: serving its previous version" in second.stdout
        bad = [a for a in answers if a[0] != 200 or a[1].get("status") != "ok"]
        print(f"abort killed, then finished in {took:.1f} s; {len(answers)} answers, "
              f"{len(bad)} not 200 ok")
        assert len(answers) > 20 and bad == [], bad[:5]
        names = ssh("mainpc", f"docker ps -a --format '{{{{.Names}}}}' --filter label=rig.service={TEXT}"
                    ).stdout.split()
        assert names == [f"rig-{TEXT}"]
        assert list(proxy_stat("mainpc", TEXT).values()).count("MAINT") == 1
        state = json.loads(ssh("mainpc", "cat /var/lib/rig/state.json").stdout)[TEXT]
        assert state["config_hash"] == old, state    # (the versions differ only in env)
        locks = rig_at(spec, "lock", "status", "-i", "inventory/lab.py").stdout
        assert [line.split()[1] for line in locks.splitlines()] == ["free", "free"], locks
    except BaseException:
        rig_at(spec, "lock", "release", "--force", "-i", "inventory/lab.py", check=False)
        client.stop()
        raise


def get(host: str, port: int) -> tuple[int, dict]:
    conn = http.client.HTTPConnection(lab_address(host), port, timeout=10)
    try:
        conn.request("GET", "/health")
        answer = conn.getresponse()
        return answer.status, json.loads(answer.read())
    finally:
        conn.close()


def test_maintenance_on_demand_is_answered_recorded_shown_and_ended(spec):
    """rig maintenance on: clients get the 503 JSON with Retry-After; status and history say
    so; rig maintenance off gates the container and sends clients back to it."""
    on = rig_at(spec, "maintenance", "on", TEXT, "--host", "mainpc", "-i", "inventory/lab.py")
    assert f"mainpc: {TEXT}: in maintenance (the proxy answers 503 maintenance)" in on.stdout
    assert get("mainpc", PORTS[TEXT]) == (503, {"status": "maintenance", "service": TEXT,
                                                 "retry_after": 10})
    assert get("pc2", PORTS[TEXT])[0] == 200                    # only the host asked for
    status = rig_at(spec, "status", "-i", "inventory/lab.py", "--json").stdout
    row = next(r for r in json.loads(status) if (r["host"], r["service"]) == ("mainpc", TEXT))
    assert (row["health"], row["proxy"]) == ("maintenance", "maintenance")
    history = rig_at(spec, "history", "-i", "inventory/lab.py", "--host", "mainpc",
                     "--service", TEXT, "-n", "1").stdout
    assert "maintenance-on" in history and " ok " in history
    off = rig_at(spec, "maintenance", "off", TEXT, "--host", "mainpc", "-i", "inventory/lab.py")
    assert f"mainpc: {TEXT}: serving again, healthy" in off.stdout
    status, body = get("mainpc", PORTS[TEXT])
    assert (status, body["status"]) == (200, "ok")


def test_a_proxy_restarted_without_its_state_file_is_sent_back_by_the_next_rollout(spec):
    """HAProxy's server-state file is lost and HAProxy restarts: every slot comes up disabled
    (503). `rig status` says no live slot (nobody asked for maintenance); a rollout with
    nothing to change gates what runs and switches the proxy back to it."""
    ssh("pc2", "rm -f /var/lib/haproxy/rig-servers.state && systemctl restart haproxy")
    assert get("pc2", PORTS[TEXT])[0] == 503
    status = rig_at(spec, "status", "-i", "inventory/lab.py", "--json", check=False).stdout
    row = next(r for r in json.loads(status) if (r["host"], r["service"]) == ("pc2", TEXT))
    assert row["proxy"] == "no live slot"
    result = rollout(spec, "--limit", "pc2")
    assert result.returncode == 0, result.stdout + result.stderr
    # model_ops_coordinator has nothing to change there (the text service has: the spec's
    # version is the one the test before aborted, and its wave switches the proxy as always)
    assert f"pc2        {MODELS}: the proxy answers 503 though no one asked for maintenance" \
        in result.stdout, result.stdout
    for service in (TEXT, AUDIO, MODELS):
        status, body = get("pc2", PORTS[service])
        assert (status, body["status"]) == (200, "ok"), service


def test_bootstrap_brings_back_a_removed_admin_socket(spec):
    """A removed socket file: rollouts are refused (no proxy answers); `rig bootstrap` said it
    was all fine until it looked for the socket. Now it restarts HAProxy, which binds it."""
    ssh("mainpc", "rm -f /run/haproxy-rig-admin.sock")
    refused = rollout(spec, "--limit", "mainpc")
    assert refused.returncode != 0 and "no proxy answers on its admin socket" in refused.stderr
    boot = rig("bootstrap", "-i", "inventory/lab.py", "--limit", "mainpc", check=False)
    assert boot.returncode == 0, boot.stdout + boot.stderr
    assert ssh("mainpc", "test -S /run/haproxy-rig-admin.sock", check=False).returncode == 0
    assert rollout(spec, "--limit", "mainpc").returncode == 0
    assert get("mainpc", PORTS[TEXT])[0] == 200


def test_no_service_shares_the_hosts_network_and_the_proxy_runs_unprivileged(spec):
    """CIS Docker Benchmark 5.10: no container on the host's network namespace (docker-bench's
    own query). The proxy's workers run as haproxy; its admin socket is root's alone."""
    for host in ("mainpc", "pc2"):
        modes = ssh(host, "docker ps --quiet --all | xargs -r docker inspect --format "
                          "'{{ .Id }}: NetworkMode={{ .HostConfig.NetworkMode }}'").stdout
        assert modes.strip() and "NetworkMode=host" not in modes, modes
        assert ssh(host, "ps -o user= -C haproxy | sort -u").stdout.split() == ["haproxy", "root"]
        assert ssh(host, "stat -c '%U %a' /run/haproxy-rig-admin.sock").stdout.strip() == "root 600"
        refused = ssh(host, "printf 'show stat\\n' | socat stdio "
                            "UNIX-CONNECT:/run/haproxy-rig-admin.sock", sudo=False, check=False)
        assert refused.returncode != 0 and "Permission denied" in refused.stderr


class WebSocket:
    """A minimal client: one binary frame of 3 PCM samples out, one text frame back."""

    def __init__(self, address: str, port: int):
        self.sock = socket.create_connection((address, port), timeout=10)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET /stream HTTP/1.1\r\nHost: {address}:{port}\r\n"
                           "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                           f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(4096)
            assert chunk, "closed during the handshake"
            head += chunk
        assert head.split(b" ", 2)[1] == b"101", head

    def exchange(self) -> dict:
        payload, mask = bytes.fromhex("0000ff7f0080"), os.urandom(4)
        self.sock.sendall(bytes([0x82, 0x80 | len(payload)]) + mask
                          + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))
        _, second = self._read(2)
        length = second & 0x7F
        if length == 126:
            length = struct.unpack("!H", self._read(2))[0]
        return json.loads(self._read(length))

    def _read(self, size: int) -> bytes:
        data = b""
        while len(data) < size:
            chunk = self.sock.recv(size - len(data))
            assert chunk, "the stream was closed"
            data += chunk
        return data

    def close(self) -> None:
        self.sock.sendall(bytes([0x88, 0x80]) + os.urandom(4))
        self.sock.close()
