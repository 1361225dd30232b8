"""The lock every mutating command takes on every host it changes (rollout, rollback, promote,
abort, stop/start, bootstrap, prune): /var/lib/rig/rollout.lock, naming who holds it, from which
machine and process, since when, with a heartbeat the live holder refreshes while it works.

Rules (pure, in `may_take`):
- a free host is taken; a held one is refused, naming the holder;
- --break-lock takes a lock whose holder is dead (its pid gone on this machine), stale (no
  heartbeat for lock_stale_after) or malformed; a live holder (fresh heartbeat) or a paused
  rollout only with --force;
- promote and abort take over exactly the paused rollout they name (its id), nothing else;
  their own locks keep the paused rollout's record (`aborting` or `promoting`: its id), so an
  abort or a promote that did not finish (killed, a host frozen) is finished by the next
  `rig abort` or `rig promote`, which takes over those locks once their holder is dead or
  stale, and takes fresh a host the first released; the other verb is refused meanwhile.
Every take-over is a compare-and-swap on the file's sha256 (commands/lock.py), done host by
host in name order: of two racing commands exactly one wins the first host, and the other
stops there, told who won."""

from __future__ import annotations

import math
import os
import socket
import time
from datetime import UTC, datetime

import gevent

from ..commands import lock as cmd
from ..commands.lock import LOCK_FILE
from ..ledger import operator
from ..proc import pid_running


def holder(action: str, tag: str) -> dict:
    who, now = operator(), time.time()
    return {"operator": who, "since": now, "heartbeat": now, "action": action, "tag": tag,
            "pid": os.getpid(), "machine": socket.gethostname(), "id": f"{who}-{time.time_ns()}"}


def _when(stamp) -> str:
    return datetime.fromtimestamp(stamp, UTC).strftime("%Y-%m-%d %H:%M:%S UTC") \
        if isinstance(stamp, (int, float)) and not isinstance(stamp, bool) and stamp > 0 else "?"


def liveness(lock: dict, stale_after: float, now: float, machine: str | None = None,
             alive=pid_running) -> str:
    """malformed, paused, dead (its pid is gone on this machine), stale, or live."""
    if "malformed" in lock:
        return "malformed"
    if lock.get("paused"):
        return "paused"
    pid = lock.get("pid")
    if lock.get("machine") == (machine or socket.gethostname()) and isinstance(pid, int) \
            and not isinstance(pid, bool) and not alive(pid):
        return "dead"
    beat = lock.get("heartbeat", lock.get("since"))
    if not _finite(beat) or abs(now - beat) > stale_after:   # far in the future: a clock ahead
        return "stale"
    return "live"


def _finite(value) -> bool:
    """A time a heartbeat can be: a number, not a bool, NaN or infinity (JSON's 1e400)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


IN_FLIGHT = (("aborting", "abort"), ("promoting", "promote"))  # a lock's key, and its verb


def carried(lock: dict) -> tuple[str, str] | None:
    """(key, verb) of an abort's or a promote's lock: it keeps the record of the paused rollout
    it acts on (the key names that rollout's id)."""
    return next(((key, verb) for key, verb in IN_FLIGHT if isinstance(lock.get(key), str)), None)


def unfinished(lock: dict, stale_after: float, now: float, machine: str | None = None,
               alive=pid_running) -> str | None:
    """The verb (abort, promote) of a lock that keeps a paused rollout's record and whose
    holder is gone (dead or stale): `rig <verb>` finishes what it began. None otherwise."""
    found = carried(lock)
    if found and liveness(lock, stale_after, now, machine, alive) in ("dead", "stale"):
        return found[1]
    return None


def _a(verb: str) -> str:
    return f"an {verb}" if verb[0] in "aeiou" else f"a {verb}"


def _holder(lock: dict, kind: str) -> str:
    """Who holds it, in words, without advice."""
    if kind == "malformed":
        return f"malformed lock file {LOCK_FILE} ({lock['malformed']})"
    if kind == "paused":
        return (f"paused rollout {lock.get('tag', '?')} by {lock.get('operator', '?')} since "
                f"{_when(lock.get('paused_since'))}")
    what = " ".join(str(x) for x in (lock.get("action", "rollout"), lock.get("tag")) if x)
    return (f"locked by {lock.get('operator', '?')} since {_when(lock.get('since'))} "
            f"({what}, pid {lock.get('pid', '?')} on {lock.get('machine', '?')})")


def describe_lock(lock: dict, stale_after: float, now: float, machine: str | None = None,
                  alive=pid_running) -> str:
    """Who holds it and whether it is alive, and what --break-lock would do."""
    kind = liveness(lock, stale_after, now, machine, alive)
    text = _holder(lock, kind)
    if kind == "malformed":
        return text + ": --break-lock removes it"
    if kind == "paused":
        return text + ", after its canary: `rig promote` continues it, `rig abort` rolls the " \
            "canary back"
    verb = unfinished(lock, stale_after, now, machine, alive)
    if verb:
        return text + f"; {_a(verb)} of paused rollout {lock.get('tag', '?')} that did not " \
            f"finish (its holder is {kind}): `rig {verb}` finishes it (--break-lock --force " \
            "drops its record)"
    if kind == "dead":
        return text + f"; holder pid {lock.get('pid')} on this machine is not running: " \
            "--break-lock is safe"
    beat = lock.get("heartbeat", lock.get("since"))
    if kind == "stale":
        if not _finite(beat):
            why = "its heartbeat is not a time" if "heartbeat" in lock else "no heartbeat recorded"
        elif beat > now:
            why = f"its heartbeat is {(beat - now) / 3600:.1f} h in the future: a clock ahead?"
        else:
            why = f"no heartbeat for {(now - beat) / 3600:.1f} h"
        return text + f"; stale ({why}): --break-lock removes it"
    return text + f"; alive (heartbeat {max(0.0, now - beat):.0f} s ago): wait for it, or " \
        "--break-lock --force if you know it is dead"


def may_take(lock: dict | None, stale_after: float, now: float, break_lock: bool = False,
             force: bool = False, adopt: str | None = None, machine: str | None = None,
             alive=pid_running, resume: str | None = None) -> str | None:
    """None when this command may take the host's lock as it is now, else why not (one line).
    adopt: the id of the paused rollout to take over; resume ("abort" or "promote": one
    finishing one of the same verb that did not finish): that one's dead or stale holder's
    locks too, and a free host. An unfinished abort's or promote's lock, like a paused one,
    goes to --break-lock only with --force (it drops the record)."""
    if lock is None:
        return None if adopt is None or resume else "not locked: the paused rollout's lock is gone"
    kind = liveness(lock, stale_after, now, machine, alive)
    gone_verb = unfinished(lock, stale_after, now, machine, alive)
    if adopt is not None:       # promote and abort have no --break-lock: no advice of it here
        if lock.get("paused") and lock.get("id") == adopt:
            return None
        key, verb = carried(lock) or ("", "")
        if not key or lock[key] != adopt:
            return (f"locked by another rollout: {_holder(lock, kind)} ({kind}): `rig lock "
                    "status` says more; `rig lock release` removes a lock no one is using")
        if gone_verb and resume == verb:
            return None
        if gone_verb:
            return (f"{_a(verb)} of this paused rollout did not finish: {_holder(lock, kind)}; "
                    f"`rig {verb}` finishes it")
        return (f"{_a(verb)} of this paused rollout is at work: {_holder(lock, kind)}; wait "
                f"for it (if it does not finish, `rig {verb}` again finishes what it began)")
    if break_lock and (force or (kind in ("malformed", "dead", "stale") and not gone_verb)):
        return None
    text = describe_lock(lock, stale_after, now, machine, alive)
    if break_lock and kind == "paused":
        return text + "; --break-lock --force drops it (the canary keeps what it runs)"
    if break_lock and not gone_verb:   # (an unfinished one's text says what --force does)
        return text.split("; alive")[0] + "; its heartbeat is fresh, so --break-lock refuses: " \
            "wait for it, or --break-lock --force if you know it is dead"
    return text


class HostLocks:
    """Take, refresh (a heartbeat in the background) and release the lock on a session's hosts."""

    def __init__(self, session, stale_after: float, action: str, tag: str):
        self.session, self.stale_after = session, stale_after
        self.holder = holder(action, tag)
        self.locked: list[str] = []
        self.replaced: dict[str, tuple[bytes, str]] = {}  # host -> (what we took over, our sha)
        self.lost: dict[str, str] = {}       # host -> who holds it now (our lock was broken)
        self._beater = None

    @property
    def beat_every(self) -> float:
        """Often enough that no live holder is ever seen as stale."""
        return max(1.0, min(30.0, self.stale_after / 4))

    def take(self, break_lock: bool = False, force: bool = False,
             adopt: str | None = None, resume: str | None = None) -> list[str]:
        """Take every host's lock, in name order; at the first refusal stop, give back what was
        taken and return why. With adopt, only the paused rollout of that id is taken over
        (resume: and an unfinished abort or promote of it, may_take)."""
        problems: list[str] = []
        self.replaced = {}   # only this take's: an earlier one's broken locks stay broken
        for host in sorted(self.session.names()):
            why = self._take_one(host, break_lock, force, adopt, resume)
            if why:
                problems.append(f"{host}: {why}")
                break
        if problems:
            self.give_back()
        return problems

    def give_back(self) -> None:
        """take() failed part-way, or what it took cannot be used (the hosts changed since
        they were read): locks taken over are put back as they were (a paused rollout keeps
        its lock, a live rollout its own), locks created are released."""
        for host, (raw, ours) in self.replaced.items():
            answer = self.session.shell(host, cmd.put_back(raw, ours))
            if answer.ok and answer.stdout.startswith("TAKEN"):
                self.locked.remove(host)
        self.replaced = {}
        self.release()

    def _take_one(self, host: str, break_lock: bool, force: bool, adopt: str | None,
                  resume: str | None) -> str | None:
        ours = cmd.content(self.holder)
        answer = self.session.shell(host, cmd.take(self.holder))
        word, sha, lock, raw = cmd.parse_answer(answer.stdout) if answer.ok else ("", None, None, b"")
        if not answer.ok or word not in ("TAKEN", "HELD"):
            why = " ".join(answer.stderr[-2:]) or answer.stdout.strip()[:200] or "no answer"
            if not answer.ok and not answer.stdout:   # sent, unanswered: it may run later
                why += (" (the lock may be taken when the host answers again: `rig lock status` "
                        "shows it, `rig lock release --host " + host + "` removes it)")
            return "could not take the lock: " + why
        if word == "TAKEN":
            if adopt is not None and not resume:  # the paused rollout's lock is gone: give
                                                  # this one back
                self.locked.append(host)
                return "not locked: the paused rollout's lock is gone"
            self.locked.append(host)
            return None
        why = may_take(lock, self.stale_after, time.time(), break_lock, force, adopt,
                       resume=resume)
        if why:
            return why
        answer = self.session.shell(host, cmd.take(self.holder, expect=sha))
        word, _, now_held, _ = cmd.parse_answer(answer.stdout) if answer.ok else ("", None, None, b"")
        if word != "TAKEN" and answer.stderr and answer.stderr[-1].startswith("rig: "):
            return "could not take the lock over: " + answer.stderr[-1]   # the script's reason
        if word != "TAKEN":
            who = describe_lock(now_held, self.stale_after, time.time()) if now_held else \
                (" ".join(answer.stderr[-2:]) or "no answer")
            return f"the lock changed while taking it over: {who}"
        self.locked.append(host)
        self.replaced[host] = (raw, cmd.digest(ours))
        return None

    def heartbeat(self) -> list[str]:
        """A live holder says so; returns the hosts where the lock is no longer ours (noted in
        .lost with who holds it now: someone forced it away)."""
        self.holder["heartbeat"] = time.time()
        gone = []
        for host in list(self.locked):
            # retry: safe to run twice, it only touches a lock that is ours
            answer = self.session.shell(host, cmd.refresh(self.holder), retry=True)
            word, _, lock, _ = cmd.parse_answer(answer.stdout) if answer.ok else ("", None, None, b"")
            if word == "GONE":
                self.locked.remove(host)
                self.lost[host] = describe_lock(lock, self.stale_after, time.time()) if lock \
                    else "no lock at all"
                gone.append(host)
        return gone

    def start_beating(self) -> None:
        """Refresh the heartbeat every beat_every seconds until release() or pause()."""
        def beat():
            while True:
                gevent.sleep(self.beat_every)
                self.heartbeat()
        if self._beater is None:
            self._beater = gevent.spawn(beat)

    def _stop_beating(self) -> None:
        if self._beater is not None:
            self._beater.kill(block=True, timeout=5)
            self._beater = None

    def pause(self, info: dict) -> None:
        """Keep the locks for a paused rollout: rewritten with `info` (paused, its record) and
        a fresh heartbeat, and no longer released by this process."""
        self._stop_beating()
        self.holder.update(info)
        self.heartbeat()
        self.locked = []

    def release(self) -> list[str]:
        """Release every lock taken; returns the hosts where that failed. A lock that is no
        longer ours is left to its new holder and named in .lost."""
        self._stop_beating()
        failed = []
        for host in self.locked:
            # retry: safe to run twice, it only touches a lock that is ours
            answer = self.session.shell(host, cmd.release(self.holder["id"]), retry=True)
            word, _, lock, _ = cmd.parse_answer(answer.stdout) if answer.ok else ("", None, None, b"")
            if word == "GONE":
                self.lost[host] = describe_lock(lock, self.stale_after, time.time()) \
                    if lock else "no lock at all"
            elif word not in ("RELEASED", "FREE"):  # FREE: nobody holds it (our retry's answer,
                failed.append(host)                 # or forced away; the heartbeat tells those)
        self.locked = []
        return failed
