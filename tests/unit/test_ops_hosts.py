"""Host keys (a real SSH handshake with a local paramiko server), bootstrap's lock on every path,
verify's argv and environment, and `rig hosts trust` on a known_hosts file."""

from __future__ import annotations

import base64
import hashlib
import socket
import sys
import threading
from pathlib import Path
from types import SimpleNamespace

import paramiko
import pytest

from rig.errors import RigError
from rig.inventory import Target
from rig.ops import hostkeys
from rig.ops import hosts as ops_hosts
from rig.ops.job import Job

REPO = Path(__file__).resolve().parents[2]


class _Server(paramiko.ServerInterface):
    pass


@pytest.fixture(scope="module")
def ssh_server():
    """A local SSH server that completes the key exchange and nothing else; (port, its key)."""
    key = paramiko.Ed25519Key.from_private_key_file(str(_ed25519_file()))
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    port = listener.getsockname()[1]

    def serve():
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            transport = paramiko.Transport(conn)
            transport.add_server_key(key)
            try:
                transport.start_server(server=_Server())
            except (paramiko.SSHException, EOFError, OSError):
                transport.close()
    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield port, key
    listener.close()


_KEY_CACHE: dict = {}


def _ed25519_file() -> Path:
    """An OpenSSH ed25519 key made by ssh-keygen once per session (paramiko cannot generate one)."""
    import subprocess
    import tempfile

    if "path" not in _KEY_CACHE:
        folder = Path(tempfile.mkdtemp())
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(folder / "k")],
                       check=True)
        _KEY_CACHE["path"] = folder / "k"
    return _KEY_CACHE["path"]


def offered(monkeypatch, port, key):
    """scan() answering with the local server's key without a new handshake (the tests of
    trust and describe_connect_error; a real scan is tested on its own)."""
    monkeypatch.setattr(hostkeys, "scan", lambda t, timeout=10: hostkeys.HostKey(
        t.name, "127.0.0.1", port, "ssh-ed25519", key.get_base64()))


def fingerprint_of(key) -> str:
    return "SHA256:" + base64.b64encode(hashlib.sha256(key.asbytes()).digest()).decode().rstrip("=")


def target(port, known_hosts=None, name="mainpc") -> Target:
    data = {"ssh_hostname": "127.0.0.1", "ssh_port": port}
    if known_hosts:
        data["ssh_known_hosts_file"] = str(known_hosts)
    return Target(name, data)


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


# -- hostkeys -----------------------------------------------------------------------------------
def test_scan_reads_the_key_the_server_offers(ssh_server):
    port, key = ssh_server
    found = hostkeys.scan(target(port))
    assert (found.host, found.address, found.port) == ("mainpc", "127.0.0.1", port)
    assert (found.key_type, found.key_b64) == ("ssh-ed25519", key.get_base64())
    assert found.fingerprint == fingerprint_of(key)
    assert found.known_hosts_name == f"[127.0.0.1]:{port}"
    assert found.known_hosts_line() == f"[127.0.0.1]:{port} ssh-ed25519 {key.get_base64()}\n"


def test_port_22_is_written_without_brackets():
    key = hostkeys.HostKey("pc2", "10.0.0.2", 22, "ssh-ed25519", "AAAA")
    assert key.known_hosts_name == "10.0.0.2"
    assert key.known_hosts_line() == "10.0.0.2 ssh-ed25519 AAAA\n"


def test_scan_of_a_closed_port_says_it_cannot_reach_it():
    port = free_port()
    with pytest.raises(RigError, match=rf"^mainpc: cannot reach 127.0.0.1:{port}: "
                                       "Connection refused$"):
        hostkeys.scan(target(port))


def test_scan_of_something_that_is_not_ssh_says_the_handshake_failed():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]

    def answer():
        conn, _ = listener.accept()
        conn.sendall(b"HTTP/1.0 400 Bad Request\r\n\r\n")
        conn.close()
    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    try:
        with pytest.raises(RigError, match=rf"^mainpc: SSH handshake with 127.0.0.1:{port} "
                                           "failed: "):
            hostkeys.scan(target(port), timeout=5)
    finally:
        listener.close()


def test_an_unknown_host_key_is_shown_with_its_fingerprint_and_the_command(ssh_server,
                                                                            monkeypatch):
    port, key = ssh_server
    offered(monkeypatch, port, key)
    lines = hostkeys.describe_connect_error(target(port), "Host key for server not found in "
                                                          "known_hosts")
    assert lines == [f"mainpc: unknown host key (it offers ssh-ed25519 {fingerprint_of(key)}); "
                     "nothing was changed",
                     "  check it out of band, then: rig hosts trust mainpc "
                     "--fingerprint <SHA256:...>"]


def test_an_unknown_host_that_cannot_be_scanned_says_why():
    port = free_port()
    lines = hostkeys.describe_connect_error(target(port), "No host key for 127.0.0.1")
    assert lines[0] == (f"mainpc: unknown host key (mainpc: cannot reach 127.0.0.1:{port}: "
                        "Connection refused); nothing was changed")


def test_a_changed_host_key_is_refused_loudly_naming_the_file(tmp_path):
    lines = hostkeys.describe_connect_error(target(22, tmp_path / "kh"),
                                            "Host key for server 'x' does not match")
    assert lines == ["mainpc: HOST KEY CHANGED: Host key for server 'x' does not match; "
                     "refusing to connect",
                     "  if the host was reinstalled, remove the old key from "
                     f"{tmp_path / 'kh'} and trust the new one"]
    assert hostkeys.describe_connect_error(Target("pc2", {}), "BadHostKeyException: host key "
                                                              "error")[1].endswith(
        "remove the old key from known_hosts and trust the new one")


def test_any_other_connect_error_is_unreachable():
    assert hostkeys.describe_connect_error(Target("pc2", {}), "timed out") == \
        ["pc2: unreachable: timed out"]


def test_trust_end_to_end_adds_the_key_the_server_offers(ssh_server, tmp_path):
    port, key = ssh_server
    known = tmp_path / "known_hosts"
    found, said = hostkeys.trust(target(port, known), fingerprint_of(key), lambda k: 1 / 0)
    assert said == f"added to {known}" and found.fingerprint == fingerprint_of(key)
    assert known.read_text() == f"[127.0.0.1]:{port} ssh-ed25519 {key.get_base64()}\n"


def test_trust_with_the_right_fingerprint_appends_one_line_then_says_already(ssh_server, tmp_path,
                                                                             monkeypatch):
    port, key = ssh_server
    offered(monkeypatch, port, key)
    known = tmp_path / "ssh" / "known_hosts"
    found, said = hostkeys.trust(target(port, known), fingerprint_of(key), lambda k: 1 / 0)
    assert said == f"added to {known}" and found.key_b64 == key.get_base64()
    assert known.read_text() == f"[127.0.0.1]:{port} ssh-ed25519 {key.get_base64()}\n"
    assert oct(known.parent.stat().st_mode & 0o777) == "0o700"
    again = hostkeys.trust(target(port, known), fingerprint_of(key), lambda k: 1 / 0)
    assert again[1] == f"already trusted in {known}"
    assert known.read_text().count("\n") == 1


def test_trust_with_a_wrong_fingerprint_trusts_nothing(ssh_server, tmp_path, monkeypatch):
    port, key = ssh_server
    offered(monkeypatch, port, key)
    known = tmp_path / "known_hosts"
    with pytest.raises(RigError) as caught:
        hostkeys.trust(target(port, known), "SHA256:wrong", lambda k: True)
    assert str(caught.value) == (f"mainpc: the host offers {fingerprint_of(key)}, not "
                                 "SHA256:wrong; nothing was trusted")
    assert not known.exists()


def test_trust_asks_when_no_fingerprint_is_given(ssh_server, tmp_path, monkeypatch):
    port, key = ssh_server
    offered(monkeypatch, port, key)
    known = tmp_path / "known_hosts"
    asked = []
    with pytest.raises(RigError, match="^mainpc: not trusted$"):
        hostkeys.trust(target(port, known), None, lambda k: asked.append(k) or False)
    assert [k.fingerprint for k in asked] == [fingerprint_of(key)] and not known.exists()
    assert hostkeys.trust(target(port, known), None, lambda k: True)[1] == f"added to {known}"


def test_trust_refuses_to_add_a_second_key_of_the_same_type(ssh_server, tmp_path, monkeypatch):
    port, key = ssh_server
    offered(monkeypatch, port, key)
    other = paramiko.Ed25519Key.from_private_key_file(str(_other_key()))
    known = tmp_path / "known_hosts"
    known.write_text(f"[127.0.0.1]:{port} ssh-ed25519 {other.get_base64()}\n")
    with pytest.raises(RigError, match=rf"^mainpc: {known} holds another ssh-ed25519 key for "
                                       rf"\[127.0.0.1\]:{port}: remove it first \(ssh-keygen -R\)$"):
        hostkeys.trust(target(port, known), fingerprint_of(key), lambda k: True)
    assert known.read_text().count("\n") == 1


def _other_key() -> Path:
    import subprocess
    import tempfile

    path = Path(tempfile.mkdtemp()) / "other"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return path


# -- rig hosts trust: the host must be in the inventory ---------------------------------------------
def production_job(monkeypatch, known=None) -> Job:
    monkeypatch.setenv("RIG_HOST_MAINPC", "ops@127.0.0.1:2222")
    monkeypatch.setenv("RIG_HOST_PC2", "ops@127.0.0.2")
    return Job(REPO / "fleet.yml", "production")


def test_trust_of_a_host_the_inventory_does_not_name_is_refused(monkeypatch):
    job = production_job(monkeypatch)
    with pytest.raises(RigError, match=r"^unknown host 'node9' \(hosts: mainpc, pc2\)$"):
        ops_hosts.trust(job, "node9", None, lambda k: True)


def test_trust_scans_the_inventorys_address_and_port(monkeypatch):
    job = production_job(monkeypatch)
    seen = []
    monkeypatch.setattr(hostkeys, "trust", lambda t, fp, confirm: seen.append((t.name, fp)) or
                        ("key", "added"))
    assert ops_hosts.trust(job, "mainpc", "SHA256:x", None) == ("key", "added")
    assert seen == [("mainpc", "SHA256:x")]
    mainpc = next(t for t in job.targets if t.name == "mainpc")
    assert (mainpc.data["ssh_hostname"], int(mainpc.data["ssh_port"])) == ("127.0.0.1", 2222)


# -- verify -----------------------------------------------------------------------------------------
def spec_copy(tmp_path) -> Path:
    (tmp_path / "tests" / "verify").mkdir(parents=True)
    return tmp_path / "fleet.yml"


def test_verify_runs_the_suite_beside_the_spec_with_its_env(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr(ops_hosts.subprocess, "run",
                        lambda argv, env, cwd, timeout: calls.append((argv, env, cwd, timeout))
                        or SimpleNamespace(returncode=3))
    job = Job(REPO / "fleet.yml", "lab")
    folder = REPO / "tests" / "verify"
    assert ops_hosts.verify(job, "services", ("--no-header",)) == 3
    argv, env, cwd, timeout = calls[0]
    hosts = len(job.fleet.hosts)
    assert timeout == ops_hosts.VERIFY_BASE + ops_hosts.VERIFY_PER_HOST * hosts
    assert argv == [sys.executable, "-m", "pytest", str(folder / "test_services.py"), "-q", "-p",
                    "no:cacheprovider", "--import-mode=importlib", "--rootdir", str(folder),
                    "--no-header"]
    assert cwd == folder
    assert (env["RIG_CONFIG"], env["RIG_ENV"]) == (str(REPO / "fleet.yml"), "lab")
    assert "RIG_LIMIT" not in env


def test_verify_all_runs_the_folder_and_a_limit_names_the_hosts(monkeypatch):
    calls = []
    monkeypatch.setattr(ops_hosts.subprocess, "run",
                        lambda argv, env, cwd, timeout: calls.append((argv, env, timeout)) or
                        SimpleNamespace(returncode=0))
    job = Job(REPO / "fleet.yml", "lab")
    assert ops_hosts.verify(job, "all", (), ["canary"]) == 0
    argv, env, timeout = calls[0]
    assert argv[3] == str(REPO / "tests" / "verify") and env["RIG_LIMIT"] == "mainpc"
    assert timeout == ops_hosts.VERIFY_BASE + ops_hosts.VERIFY_PER_HOST     # one host

    def hangs(argv, env, cwd, timeout):
        raise ops_hosts.subprocess.TimeoutExpired(argv, timeout)
    monkeypatch.setattr(ops_hosts.subprocess, "run", hangs)
    with pytest.raises(RigError, match=r"verify: the suite did not end within 360 s and was "
                                       r"stopped \(a host that stopped answering"):
        ops_hosts.verify(job, "all", (), ["canary"])
    with pytest.raises(RigError, match="--limit: unknown host or group x"):
        ops_hosts.verify(job, "all", (), ["x"])


def test_verify_without_the_suite_says_where_it_should_be(tmp_path):
    (tmp_path / "fleet.yml").write_text("")
    job = Job(tmp_path / "fleet.yml", "lab")
    with pytest.raises(RigError, match=f"^{tmp_path}/tests/verify: the verify suite is not "
                                       r"there \(it lives beside the spec\)$"):
        ops_hosts.verify(job, "all")


# -- bootstrap: the lock taken and released on every path -------------------------------------------
class BootSession:
    def __init__(self, log, release_problem=None):
        self.log = log
        self.release_problem = release_problem

    def __enter__(self):
        self.log.append("connect")
        return self

    def __exit__(self, *exc):
        self.log.append("disconnect")
        return False

    def facts(self, fact, **kwargs):
        self.log.append("facts")
        return {"mainpc": "facts"}

    def names(self):
        return ["mainpc", "pc2"]

    def run(self, deploy, **kwargs):
        self.log.append(("run", deploy, kwargs))
        if kwargs.get("token") == "boom":
            raise RuntimeError("connection lost")
        return {"mainpc": SimpleNamespace(ok=True, changed=["a", "b"]),
                "pc2": SimpleNamespace(ok=False, changed=["c"])}


@pytest.fixture
def boot(fleet, monkeypatch):
    log: list = []
    state = {"problems": [], "releases": None, "token": "tok"}

    class Locks:
        def __init__(self, session, stale_after, action, tag):
            assert (stale_after, action, tag) == (fleet.rollout.lock_stale_after, "bootstrap", "")
            log.append("locks")

        def take(self, break_lock, force):
            log.append(("take", break_lock, force))
            return list(state["problems"])

        def start_beating(self):
            log.append("beat")

        def release(self):
            log.append("release")
            return []

    def check_releases(facts):
        log.append(("check", facts))
        if state["releases"]:
            raise RigError(state["releases"])
    monkeypatch.setattr(ops_hosts, "HostLocks", Locks)
    monkeypatch.setattr(ops_hosts, "check_releases", check_releases)
    monkeypatch.setattr(ops_hosts, "registry_token", lambda f: state["token"])
    job = SimpleNamespace(fleet=fleet, elapsed=lambda: 12.5,
                          session=lambda hosts, say=None: log.append(("session", hosts)) or
                          BootSession(log))
    return job, log, state


def test_bootstrap_takes_the_lock_beats_runs_and_releases(boot):
    job, log, _ = boot
    started = []
    result = ops_hosts.bootstrap(job, ["pc2"], print, on_start=started.append,
                                 break_lock=True, force=True)
    assert log == [("session", ["pc2"]), "connect", "facts", ("check", {"mainpc": "facts"}),
                   "locks", ("take", True, True), "beat",
                   ("run", ops_hosts.bootstrap_deploy, {"token": "tok"}), "release", "disconnect"]
    assert started == [["mainpc", "pc2"]]
    assert result.changes == 3 and result.failed == ["pc2"] and result.seconds == 12.5


def test_bootstrap_on_a_locked_host_changes_nothing_and_releases(boot):
    job, log, state = boot
    state["problems"] = ["pc2: locked by bo@x"]
    with pytest.raises(RigError) as caught:
        ops_hosts.bootstrap(job, None, print)
    assert caught.value.lines == ["pc2: locked by bo@x", "nothing was changed"]
    assert log[-3:] == [("take", False, False), "release", "disconnect"]
    assert not any(isinstance(e, tuple) and e[0] == "run" for e in log)


def test_bootstrap_releases_the_lock_when_the_run_fails(boot):
    job, log, state = boot
    state["token"] = "boom"
    with pytest.raises(RuntimeError, match="connection lost"):
        ops_hosts.bootstrap(job, None, print)
    assert log[-2:] == ["release", "disconnect"]


def test_an_unsupported_release_stops_bootstrap_before_the_lock(boot):
    job, log, state = boot
    state["releases"] = "pc2: Debian 11 is not supported"
    with pytest.raises(RigError, match="Debian 11"):
        ops_hosts.bootstrap(job, None, print)
    assert "locks" not in log and log[-1] == "disconnect"


# -- the job: sessions to the chosen hosts, host keys explained ----------------------------------
def test_a_jobs_session_reaches_the_chosen_hosts_and_explains_host_key_errors(monkeypatch):
    job = production_job(monkeypatch)
    session = job.session(["pc2"])
    assert [t.name for t in session.targets] == ["pc2"]
    assert session.targets[0].data["ssh_hostname"] == "127.0.0.2"
    assert session.describe is hostkeys.describe_connect_error
    assert job.secrets is job.secrets and job.elapsed() >= 0
    with pytest.raises(RigError, match="^no hosts selected$"):
        job.session(["node9"])
