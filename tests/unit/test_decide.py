"""What should run, as a table: every combination of what is wanted, what runs and what
state.json recorded, and the one answer every caller gets (rollout/decide.py)."""

from __future__ import annotations

import pytest

from rig.commands.container import Release
from rig.rollout.decide import KEEP, REGATE, REMOVE, REPLACE, START, Version, decide, runs, same
from tasks.rollout import Container

WANT = Release("svc", "T2", "reg/svc", "sha256:new", "P1", '{"memory":"4g"}')
CONFIG = WANT.config_hash


def box(digest="sha256:new", profile="P1", config=CONFIG, state="running"):
    return Container("rig-svc", state, "svc", "T?", digest, profile, config)


OK = {"tag": "T2", "digest": "sha256:new", "profile_hash": "P1", "config_hash": CONFIG}


@pytest.mark.parametrize("running,recorded,expected", [
    (None, None, START),                                   # missing
    (box(state="exited"), OK, START),                      # stopped
    (box(state="restarting"), OK, START),
    (box(digest="sha256:old"), OK, REPLACE),               # digest
    (box(profile="P0"), OK, REPLACE),                      # machine profile
    (box(config="c0"), OK, REPLACE),                       # settings, a rotated secret
    (box(), None, REGATE),                                 # never recorded healthy
    (box(), {**OK, "digest": "sha256:old"}, REGATE),       # recorded: the one before
    (box(), {**OK, "config_hash": "c0"}, REGATE),          # recorded: other settings
    (box(), {**OK, "profile_hash": "P0"}, REGATE),
    (box(), OK, KEEP),
    (box(), {"tag": "T2", "digest": "sha256:new"}, KEEP),  # an older rig's record: no hashes
    (box(profile="", config=""), OK, KEEP),                # an older rig's labels
])
def test_decide(running, recorded, expected):
    assert decide(WANT, running, recorded) == expected


@pytest.mark.parametrize("running,expected", [(None, KEEP), (box(), REMOVE),
                                              (box(state="exited"), REMOVE)])
def test_nothing_wanted_removes_what_is_there(running, expected):
    assert decide(None, running, None) == expected


def test_a_version_from_each_source_and_what_same_compares():
    assert Version.of(WANT) == Version("sha256:new", "T2", "P1", CONFIG)
    assert Version.of(box()) == Version("sha256:new", "T?", "P1", CONFIG)
    assert Version.of(OK) == Version("sha256:new", "T2", "P1", CONFIG)
    assert Version.of({"tag": "T1"}) is None and Version.of(None) is None
    assert same(None, None) and not same(Version("a"), None) and not same(None, Version("a"))
    assert same(Version("a", config_hash="x"), Version("a"))           # unknown: not compared
    assert not same(Version("a", config_hash="x"), Version("a", config_hash="y"))
    assert not same(Version("a", profile_hash="x"), Version("a", profile_hash="y"))
    assert not same(Version("a"), Version("b"))
    assert runs(box(), WANT) and not runs(box(state="exited"), WANT) and not runs(None, WANT)
