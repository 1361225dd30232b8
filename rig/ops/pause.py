"""rig promote and rig abort: what follows a rollout paused after its canary (rollout.pause:
manual). The paused rollout's locks say what it was (tag, canary, remaining waves, services);
promote and abort take those locks over, and only those.

    promote   the same rollout again, without the pause: the canary has nothing left to
              change, the remaining waves go through their gates
    abort     the canary hosts roll back to what they ran before (state.json's previous, through
              the gates), then every other host's paused lock is released"""

from __future__ import annotations

from ..commands import container as cmd
from ..errors import RigError
from ..rollout.engine import Rollout
from .job import Job, select_hosts
from .rollout import Options, RolloutReport, rollback, rollout


def paused_rollout(job: Job, say) -> dict:
    """The lock of the one paused rollout on the fleet's hosts."""
    hosts = select_hosts(job.fleet)
    with job.session(hosts) as session:
        facts = Rollout(session, job.fleet, say, "status", "").facts()
    paused = {lock["id"]: lock for f in facts.values() if f and isinstance(f.lock, dict)
              for lock in [f.lock] if lock.get("paused") and lock.get("id")}
    if not paused:
        raise RigError("no paused rollout: nothing to promote or abort (`rig status` shows "
                       "what runs, `rig lock status` who holds what)")
    if len(paused) > 1:
        raise RigError(f"{len(paused)} paused rollouts hold locks: "
                       + ", ".join(f"{p.get('tag')} ({i})" for i, p in paused.items()))
    return next(iter(paused.values()))


def _hosts(lock: dict) -> list[str]:
    return [h for wave in [lock.get("canary") or [], *(lock.get("remaining") or [])] for h in wave]


def promote(job: Job, say, on_plan=None) -> RolloutReport:
    lock = paused_rollout(job, say)
    say(f"promoting {lock['tag']}: canary {', '.join(lock['canary'])} passed; next "
        + "; ".join(", ".join(w) for w in lock.get("remaining") or []))
    opts = Options(services=lock.get("services"), limit=_hosts(lock), canary=lock["canary"],
                   batch=lock.get("batch"), pause="none", adopt=lock["id"])
    return rollout(job, lock["tag"], opts, say, on_plan)


def abort(job: Job, say, on_plan=None) -> RolloutReport:
    lock = paused_rollout(job, say)
    say(f"aborting {lock['tag']}: rolling the canary {', '.join(lock['canary'])} back")
    opts = Options(services=lock.get("services"), limit=lock["canary"], canary=lock["canary"],
                   adopt=lock["id"])
    report = rollback(job, None, opts, say, on_plan)
    others = [h for h in _hosts(lock) if h not in lock["canary"]]
    if others:
        with job.session(others) as session:
            answers = session.shell_all({h: cmd.lock_release(lock["id"]) for h in others},
                                        timeout=30)
        report.unreleased_locks += [h for h, a in answers.items() if not a.ok]
    return report
