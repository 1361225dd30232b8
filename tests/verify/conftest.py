"""testinfra suite for any inventory: `rig verify -i inventory/lab.py` (or production.py).

RIG_INVENTORY names the inventory; hosts and expectations both come from it, so one property
is checked per test, parametrised over hosts."""

import os
from pathlib import Path

import pytest
import testinfra

from rig.verify import load_targets, write_ssh_config

REPO = Path(__file__).resolve().parents[2]
INVENTORY = os.environ.get("RIG_INVENTORY", "inventory/lab.py")
FLEET, TARGETS = load_targets(REPO, INVENTORY)
_CONFIG = write_ssh_config(TARGETS)


def pytest_generate_tests(metafunc):
    if "service" in metafunc.fixturenames:  # every service on every host that runs it
        pairs = [(t, s) for t in TARGETS for s in FLEET.services_on(t.name)]
        metafunc.parametrize(("target", "service"), pairs, ids=[f"{t.name}-{s}" for t, s in pairs])
    elif "target" in metafunc.fixturenames:
        metafunc.parametrize("target", TARGETS, ids=[t.name for t in TARGETS])


@pytest.fixture(scope="session")
def fleet():
    return FLEET


@pytest.fixture
def host(target):
    return testinfra.get_host(f"ssh://{target.name}", ssh_config=_CONFIG,
                              sudo=target.sudo)


def pytest_sessionfinish(session, exitstatus):
    Path(_CONFIG).unlink(missing_ok=True)
