"""Shared fixtures: the real spec, as production and as the lab sees it."""

from pathlib import Path

import pytest

from rig.config import load_fleet

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def fleet():
    return load_fleet(REPO / "fleet.yml")


@pytest.fixture(scope="session")
def lab_fleet():
    return load_fleet(REPO / "fleet.yml", REPO / "lab.yml")
