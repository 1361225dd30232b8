"""Services after a rollout: each runs the digest rig recorded, as 10001, under tini, healthy.

The expected digest is the one in /var/lib/rig/state.json (written by `rig rollout`); the
checks read the container itself, so a container changed by hand fails them."""

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
