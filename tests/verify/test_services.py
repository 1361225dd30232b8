"""Services after a rollout: each runs the digest rig recorded, as 10001, under tini, healthy.

The expected digest is the one in /var/lib/rig/state.json (written by `rig rollout`); the
checks read the container itself, so a container changed by hand fails them."""

import json

import pytest

from rig.commands import container as cmd
from rig.rollout.gate import body_matches


@pytest.fixture
def recorded(host, service):
    state = host.file(cmd.STATE_FILE)
    assert state.exists, f"{cmd.STATE_FILE} missing: no rollout has run on this host"
    doc = json.loads(state.content_string)
    assert service in doc, f"{service} was never rolled out here"
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
    result = host.run(f"curl -s -m 3 http://127.0.0.1:{spec.port}{spec.health.path}")
    assert result.rc == 0, f"no answer on port {spec.port}"
    assert body_matches(result.stdout, spec.health.expect), result.stdout
