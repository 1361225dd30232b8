"""Shared fixtures: the real spec, as production and as the lab sees it."""

# pyinfra's API runs hosts in gevent greenlets and needs the standard library patched first,
# as pyinfra's CLI and rig's do (the runner's contract tests drive real connectors).
from gevent import monkey

monkey.patch_all()

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from rig.config import load_fleet  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def fleet():
    return load_fleet(REPO / "fleet.yml")


@pytest.fixture(scope="session")
def lab_fleet():
    return load_fleet(REPO / "fleet.yml", REPO / "lab.yml")
