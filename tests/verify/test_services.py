"""Services after a rollout: each runs the digest rig recorded, as 10001, under tini, healthy.

The expected digest is the one in /var/lib/rig/state.json (written by `rig rollout`); the
checks read the container itself, so a container changed by hand fails them."""

import hashlib
import json
import shlex

import pytest

from rig.commands import container as cmd
from rig.rollout.gate import body_matches

_STATES: dict = {}


def _state_doc(host, target) -> dict | None:
    """The host's state.json, read once per host; None when no rollout has run there."""
    if target.name not in _STATES:
        state = host.file(cmd.STATE_FILE)
        _STATES[target.name] = json.loads(state.content_string) if state.exists else None
    return _STATES[target.name]


@pytest.fixture(autouse=True)
def recorded(host, target, service):
    """What rig recorded for this service here. A host (or service) with no recorded rollout
    is skipped with that reason: `rig verify` right after bootstrap checks only the hosts."""
    doc = _state_doc(host, target)
    if doc is None:
        pytest.skip(f"{target.name}: no rollout recorded ({cmd.STATE_FILE} absent)")
    if service not in doc:
        pytest.skip(f"{target.name}: {service} was never rolled out here")
    return doc[service]


@pytest.fixture
def inspect(host, service):
    result = host.run(f"docker inspect {cmd.current(service)}")
    assert result.rc == 0, f"no container {cmd.current(service)}"
    return json.loads(result.stdout)[0]


def test_service_container_running(inspect):
    assert inspect["State"]["Status"] == "running"


def test_service_runs_the_recorded_digest(inspect, recorded):
    assert inspect["Config"]["Image"].endswith("@" + recorded["digest"])
    assert inspect["Config"]["Labels"]["rig.digest"] == recorded["digest"]
    assert inspect["Config"]["Labels"]["rig.tag"] == recorded["tag"]


def test_service_runs_as_10001(host, service, inspect):
    assert inspect["Config"]["User"] == "10001:10001"
    uid = host.run(f"docker exec {cmd.current(service)} stat -c %u:%g /proc/1").stdout.strip()
    assert uid == "10001:10001"


def test_service_pid_1_is_tini(host, service):
    comm = host.run(f"docker exec {cmd.current(service)} cat /proc/1/comm").stdout.strip()
    assert comm == "tini"


def test_service_health_body_ok(host, fleet, service):
    spec = fleet.services[service]
    url = f"http://127.0.0.1:{spec.port}{spec.health.path}"
    result = host.run(f"curl -s -m 3 {shlex.quote(url)}")
    assert result.rc == 0, f"no answer on port {spec.port}"
    assert body_matches(result.stdout, spec.health.expect), result.stdout


def test_service_is_behind_the_proxy_on_its_slot_and_not_on_the_host_network(inspect, fleet,
                                                                            service):
    """CIS Docker Benchmark 5.10: not the host's network namespace; published on loopback
    only, on the port of the slot its label names."""
    if not fleet.proxy.enabled:
        pytest.skip("proxy.enabled is false: the host network")
    labels, config = inspect["Config"]["Labels"], inspect["HostConfig"]
    assert config["NetworkMode"] == fleet.proxy.network
    port = fleet.services[service].port
    assert labels["rig.slot"] in ("a", "b")
    assert labels["rig.port"] == str(fleet.proxy.slot_port(port, labels["rig.slot"]))
    assert config["PortBindings"] == {f"{port}/tcp": [{"HostIp": "127.0.0.1",
                                                       "HostPort": labels["rig.port"]}]}


# -- hardening and limits, as the spec says for this host's profile ------------------------------
def test_service_runs_hardened(inspect):
    config = inspect["HostConfig"]
    assert config["ReadonlyRootfs"] is True
    assert "ALL" in (config["CapDrop"] or [])
    assert any(opt.startswith("no-new-privileges") for opt in config["SecurityOpt"] or [])
    assert inspect["Config"]["User"] == "10001:10001"


def test_service_limits_match_the_profile(inspect, fleet, target, service):
    runtime, config = fleet.runtime(service, target.name), inspect["HostConfig"]
    assert config["Memory"] == (runtime.memory or 0)
    assert config["MemoryReservation"] == (runtime.memory_reservation or 0)
    assert config["NanoCpus"] == round((runtime.cpus or 0) * 1e9)
    assert config["PidsLimit"] == runtime.pids
    if runtime.shm_size:
        assert config["ShmSize"] == runtime.shm_size
    ulimits = {u["Name"]: (u["Soft"], u["Hard"]) for u in config["Ulimits"] or []}
    assert ulimits == {n: (u.soft, u.hard) for n, u in runtime.ulimits.items()}


def test_root_filesystem_is_read_only(host, service):
    result = host.run(f"docker exec {cmd.current(service)} touch /rig-write-test")
    assert result.rc != 0 and "Read-only file system" in result.stderr, result.stderr
    tmp = host.run(f"docker exec {cmd.current(service)} sh -c 'echo x > /tmp/rig-write-test'")
    assert tmp.rc == 0, f"/tmp (tmpfs) should be writable: {tmp.stderr}"


def test_secrets_are_files_not_environment(host, fleet, service, inspect):
    """Each secret is /run/secrets/<name> (same sha256 as on this machine), readable by the
    service's user; its value is in neither the container's env nor anything docker inspect
    shows."""
    from rig.secrets import service_secrets

    secrets = service_secrets(fleet, service)
    if not secrets:
        pytest.skip(f"{service} has no secrets")
    shown = json.dumps(inspect)
    for name, secret in secrets.items():
        digest = host.run(f"docker exec {cmd.current(service)} sha256sum /run/secrets/{name}")
        assert digest.rc == 0, f"/run/secrets/{name} not readable as 10001: {digest.stderr}"
        assert digest.stdout.split()[0] == hashlib.sha256(secret.value.encode()).hexdigest()
        assert secret.value not in shown, f"secret {name} shows in docker inspect"


def test_service_check(host, fleet, service, check):
    """One request of the service's `checks:` beyond /health, sent inside the container."""
    from rig.commands.checks import check_command, parse_results

    port = fleet.services[service].port
    for _ in range(2):  # once more only if the program printed no result at all (never ran)
        result = host.run(check_command(cmd.current(service), port, [check]))
        results = parse_results(result.stdout)
        if results:
            break
    assert results, (f"the check program printed no result (exit {result.rc}): "
                     f"{result.stdout[-300:]!r} {result.stderr[-300:]!r}")
    assert results[0]["ok"], f"{check.name}: {results[0]['error']}; answered {results[0]['body']}"
