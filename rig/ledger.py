"""What runs where: ledger lines and the per-host current-state document (pure).

/var/lib/rig/ledger.jsonl is append-only, one JSON object per service change:
    time, operator, action, host, service, tag, digest, previous_tag, previous_digest,
    profile_hash, config_hash, result
/var/lib/rig/state.json is the current state: service -> tag, digest, profile_hash, config_hash, since,
stopped (an operator ran `rig stop`), health (the gate timings the version passed under),
previous {tag, digest} (what `rig rollback` returns to). Neither holds a secret."""

from __future__ import annotations

import getpass
import os
import socket

from .commands.container import Release
from .rollout.decide import Version, same


def operator() -> str:
    """Who is rolling out: RIG_OPERATOR, else user@machine; on one line, printable (a name is
    shown in lock descriptions and ledger lines), at most 120 characters."""
    name = os.environ.get("RIG_OPERATOR") or f"{getpass.getuser()}@{socket.gethostname()}"
    return "".join(c if c.isprintable() else "?" for c in name)[:120]


RESULTS = ("ok", "failed", "rolled_back", "rollback_failed", "interrupted")
CONTROL = ("stop", "start", "restart")  # actions that keep the version and flip `stopped`
MAINTENANCE = ("maintenance-on", "maintenance-off")   # keep the version, flip `maintenance`


def entry(now: str, who: str, action: str, host: str, release: Release, before: dict | None,
          result: str, reason: str | None = None, config_hash: str | None = None,
          health: dict | None = None) -> dict:
    """One ledger line: one attempt on one host and service, written once its outcome is known.
    A release with no digest means "back to running nothing" (a reverted first install).
    config_hash: the version's own, where the release carries no config (a restored one).
    health: the gate timings this version passed under (start_period, interval, timeout,
    retries); state.json keeps them, so that a later restore of it is judged by them."""
    assert result in RESULTS, result
    before = before or {}
    line = {
        "time": now, "operator": who, "action": action, "host": host,
        "service": release.service, "tag": release.tag or None, "digest": release.digest or None,
        "previous_tag": before.get("tag"), "previous_digest": before.get("digest"),
        "profile_hash": release.profile_hash,
        "config_hash": release.config_hash or config_hash or None,
        "result": result,
    }
    if reason:
        line["reason"] = reason
    if health:
        line["health"] = health
    return line


HEALTH_KEYS = ("start_period", "interval", "timeout", "retries")


def health_record(spec) -> dict:
    """A service's gate timings (its HealthSpec), as state.json keeps them."""
    return {key: getattr(spec, key) for key in HEALTH_KEYS}


def recorded_health(record: dict | None) -> dict | None:
    """The gate timings state.json recorded for a version, if they are sane numbers (the file
    lives on the host); None otherwise: the spec's then apply."""
    health = (record or {}).get("health")
    if not isinstance(health, dict):
        return None
    limits = {"start_period": 86400, "interval": 3600, "timeout": 3600, "retries": 1000}
    clean = {}
    for key, most in limits.items():
        value = health.get(key)
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= most:
            return None
        clean[key] = value
    if clean["interval"] <= 0 or clean["timeout"] <= 0 or clean["retries"] < 1:
        return None
    clean["retries"] = int(clean["retries"])
    return clean


def next_state(state: dict, entries: list[dict]) -> dict:
    """The state document after entries: a service moves only on result "ok"."""
    new = {service: dict(value) for service, value in state.items()}
    for e in entries:
        if e["result"] != "ok":
            continue
        if e["action"] in CONTROL:  # an operator's stop/start: same version, stopped or not
            if e["service"] in new:
                new[e["service"]]["stopped"] = e["action"] == "stop"
                new[e["service"]]["stopped_since" if e["action"] == "stop" else "since"] = e["time"]
            continue
        if e["action"] in MAINTENANCE:   # the proxy's 503 answer on, or off again
            if e["service"] in new:
                on = e["action"] == "maintenance-on"
                new[e["service"]]["maintenance"] = on
                new[e["service"]]["maintenance_since"] = e["time"] if on else None
            continue
        if not e["digest"]:  # back to running nothing
            new.pop(e["service"], None)
            continue
        old = new.get(e["service"], {})
        previous = {"tag": old.get("tag"), "digest": old.get("digest")} if old else None
        if old and same(Version.of(old), Version.of(e)):
            # the version already recorded (a rollout interrupted after it was switched, run
            # again): its own previous stays what `rig rollback` returns to, never itself
            previous = old.get("previous")
        new[e["service"]] = {
            "tag": e["tag"], "digest": e["digest"], "profile_hash": e["profile_hash"],
            "config_hash": e.get("config_hash"),
            "since": e["time"],
            "previous": previous,
        }
        if e.get("health"):
            new[e["service"]]["health"] = e["health"]
        if old.get("maintenance"):   # a new version does not end an operator's maintenance
            new[e["service"]].update(maintenance=True,
                                     maintenance_since=old.get("maintenance_since"))
    return new
