"""testinfra suite for any environment: `rig verify` (lab) or `rig --env production verify`.

RIG_CONFIG and RIG_ENV (set by `rig verify`) name the spec and the hosts; hosts and
expectations both come from them, so one property is checked per test, parametrised over
hosts, through the same SSH user and sudo rig uses."""

import shutil
import subprocess
from pathlib import Path

import pytest
import testinfra

from rig.verify import close_masters_argv, load_targets, write_ssh_config

FLEET, TARGETS = load_targets()
_CONFIG = write_ssh_config(TARGETS)


def pytest_generate_tests(metafunc):
    if "check" in metafunc.fixturenames:  # every check of every service on every host
        triples = [(t, s, c) for t in TARGETS for s in FLEET.services_on(t.name)
                   for c in FLEET.services[s].checks]
        metafunc.parametrize(("target", "service", "check"), triples,
                             ids=[f"{t.name}-{s}-{c.name}" for t, s, c in triples])
    elif "service" in metafunc.fixturenames:  # every service on every host that runs it
        pairs = [(t, s) for t in TARGETS for s in FLEET.services_on(t.name)]
        metafunc.parametrize(("target", "service"), pairs, ids=[f"{t.name}-{s}" for t, s in pairs])
    elif "target" in metafunc.fixturenames:
        metafunc.parametrize("target", TARGETS, ids=[t.name for t in TARGETS])


@pytest.fixture(scope="session")
def fleet():
    return FLEET


# Hosts that stopped answering during the suite (ssh's own words when its ServerAlive or
# ConnectTimeout gives up): their later tests fail at once instead of waiting their turn again.
_SILENT = ("not responding", "timed out", "Connection refused", "Connection reset",
           "No route to host", "closed by remote host")
_GONE: dict[str, str] = {}


@pytest.fixture
def host(target):
    if target.name in _GONE:
        pytest.fail(f"{target.name} stopped answering earlier in this suite ({_GONE[target.name]})")
    return testinfra.get_host(f"ssh://{target.name}", ssh_config=_CONFIG, sudo=target.sudo)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    target = getattr(item, "callspec", None) and item.callspec.params.get("target")
    if report.failed and target is not None and target.name not in _GONE:
        text = str(report.longrepr)
        said = next((word for word in _SILENT if word in text), None)
        if said:
            _GONE[target.name] = f"ssh: {said}"


def pytest_sessionfinish(session, exitstatus):
    for argv in close_masters_argv(_CONFIG, TARGETS):   # no login left behind for a minute
        subprocess.run(argv, capture_output=True, timeout=15, check=False)
    shutil.rmtree(Path(_CONFIG).parent, ignore_errors=True)
