"""What should run, decided once (pure): every place that asks "is the right container running?"
asks `runs()` or `decide()` here: the plan, the rollout's waves, the swap operation on the host,
the restore of a rollback or an abort, promote's replay.

A version is what a container is: image digest, machine-profile hash and config hash (the
config hash covers resources, env, volumes and the secret versions). A field a record does not
know (None: written by an older rig) is not compared.

    decide(wanted, running, recorded)
      start     nothing runs (no container, or it is stopped)
      replace   something else runs (digest, profile or config differs)
      regate    the right container runs, but no passed gate was recorded for it (a rollout
                killed mid-gate): gate it again
      keep      the right container runs and its gate passed
      remove    nothing is wanted (a first install reverted) and a container is there
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

START, REPLACE, REGATE, KEEP, REMOVE = "start", "replace", "regate", "keep", "remove"


@dataclass(frozen=True)
class Version:
    digest: str
    tag: str | None = None
    profile_hash: str | None = None
    config_hash: str | None = None

    @classmethod
    def of(cls, thing) -> Version | None:
        """From a Release, a Container, or a state.json / ledger record (a dict)."""
        if thing is None:
            return None
        if isinstance(thing, dict):
            if not thing.get("digest"):
                return None
            return cls(thing["digest"], thing.get("tag"), thing.get("profile_hash"),
                       thing.get("config_hash"))
        return cls(thing.digest, thing.tag or None, thing.profile_hash or None,
                   thing.config_hash or None)

    def to_dict(self) -> dict:
        return asdict(self)


def same(a: Version | None, b: Version | None) -> bool:
    """The same container version: digests equal, and profile and config hashes equal where
    both sides know them."""
    if a is None or b is None:
        return a is None and b is None
    return a.digest == b.digest and all(
        x is None or y is None or x == y
        for x, y in ((a.profile_hash, b.profile_hash), (a.config_hash, b.config_hash)))


def runs(container, wanted) -> bool:
    """The container is running and is exactly `wanted` (a Release, Version or record)."""
    return container is not None and container.running and same(Version.of(container),
                                                                  Version.of(wanted))


def decide(wanted, running, recorded: dict | None = None) -> str:
    """wanted: a Release/Version/record or None (run nothing); running: the service's
    container as the host lists it (None when there is none); recorded: state.json's entry."""
    if Version.of(wanted) is None:
        return REMOVE if running is not None else KEEP
    if running is None or not running.running:
        return START
    if not runs(running, wanted):
        return REPLACE
    if recorded is None or not same(Version.of(recorded), Version.of(running)):
        return REGATE
    return KEEP
