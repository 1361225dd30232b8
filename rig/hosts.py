"""Pre-flight checks on connected hosts, before any operation runs (all or nothing)."""

from __future__ import annotations

from .errors import RigError

SUPPORTED = {"debian": 12, "ubuntu": 22}


def release_problem(facts) -> str | None:
    """Why this host cannot be bootstrapped (not apt-based, release too old), or None."""
    if not facts.apt_based:
        name = facts.os_id or "unknown"
        return f"not an apt-based system (ID={name}); rig bootstraps Debian and Ubuntu"
    family = "ubuntu" if facts.os_id == "ubuntu" else "debian"
    try:
        major = int(facts.os_version.split(".")[0])
    except ValueError:
        major = 99 if family == "debian" and not facts.os_version else 0  # testing/sid: newest
    if major < SUPPORTED[family]:
        return (f"{facts.os_id} {facts.os_version} is not supported "
                f"(need {family} {SUPPORTED[family]} or newer)")
    return None


def check_releases(facts_by_host: dict) -> None:
    problems = [f"{name}: {problem}" for name, facts in facts_by_host.items()
                if (problem := release_problem(facts))]
    if problems:
        raise RigError(*problems, "nothing was changed")
