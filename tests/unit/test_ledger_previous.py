"""next_state after an interrupted rollout: a ledger entry for the version state.json already
records keeps the recorded previous, so `rig rollback` still has somewhere to go."""

from __future__ import annotations

from rig.ledger import next_state

CURRENT = {"tag": "T2", "digest": "sha256:2", "profile_hash": "p", "config_hash": "c",
           "since": "2026-11-23T00:00:00Z", "previous": {"tag": "T1", "digest": "sha256:1"}}


def ok(**version) -> dict:
    return {"time": "2026-11-24T00:00:00Z", "action": "rollout", "service": "svc",
            "result": "ok", **version}


def test_the_same_version_again_keeps_the_recorded_previous():
    same = ok(tag="T2", digest="sha256:2", profile_hash="p", config_hash="c")
    assert next_state({"svc": CURRENT}, [same]) == {"svc": {
        "tag": "T2", "digest": "sha256:2", "profile_hash": "p", "config_hash": "c",
        "since": "2026-11-24T00:00:00Z", "previous": {"tag": "T1", "digest": "sha256:1"}}}


def test_a_different_version_makes_the_recorded_one_previous():
    for change in ({"digest": "sha256:3", "tag": "T3"}, {"config_hash": "c2"}):
        new = ok(**{"tag": "T2", "digest": "sha256:2", "profile_hash": "p", "config_hash": "c",
                    **change})
        assert next_state({"svc": CURRENT}, [new])["svc"]["previous"] == \
            {"tag": "T2", "digest": "sha256:2"}
