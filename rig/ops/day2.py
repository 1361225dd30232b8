"""Day-2 verbs: logs, exec, lock status and release, prune. Each selects hosts the way every
verb does, works on all of them at once, and names the host in what it returns."""

from __future__ import annotations

import re
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field

import gevent

from ..commands import day2
from ..commands import lock as lock_cmd
from ..commands.base import seq, with_sudo
from ..commands.jobs import job_dir_create, job_dir_remove, job_stop, parse_job_dir
from ..errors import RigError
from ..images import image_for
from ..prune import PrunePlan, parse_inventory, plan_prune
from ..rollout.engine import Rollout
from ..rollout.locks import HostLocks, describe_lock, liveness, unfinished
from ..verify import ssh_argv, ssh_target
from .job import Job, check_services, select_hosts

SINCE = re.compile(r"[0-9]{1,6}(s|m|h)")


def _hosts(job: Job, service: str | None, limit: list[str] | None) -> list[str]:
    check_services(job.fleet, [service] if service else None, "SERVICE")
    return select_hosts(job.fleet, limit, [service] if service else None)


# -- logs -----------------------------------------------------------------------------------------
@dataclass
class LogLine:
    host: str
    time: str
    text: str


def merge_logs(outputs: dict[str, str]) -> list[LogLine]:
    """`docker logs --timestamps` of several hosts -> one list in time order (RFC 3339
    timestamps sort as text; a line without one keeps the place of the line before it)."""
    lines = []
    for host, text in outputs.items():
        last = ""
        for raw in text.splitlines():
            stamp, _, rest = raw.partition(" ")
            if len(stamp) >= 20 and stamp[:4].isdigit() and stamp[10:11] == "T":
                last = stamp
                lines.append(LogLine(host, stamp, rest))
            else:
                lines.append(LogLine(host, last, raw))
    return sorted(lines, key=lambda line: line.time)


def check_since(since: str | None) -> str | None:
    if since is not None and not SINCE.fullmatch(since):
        raise RigError(f"--since {since!r}: expected a duration such as 30s, 10m or 2h")
    return since


def logs(job: Job, service: str, limit, since: str | None, tail: int | None, say) -> list[LogLine]:
    hosts = _hosts(job, service, limit)
    command = day2.logs_command(service, check_since(since), tail)
    with job.session(hosts) as session:
        answers = session.shell_all({h: command for h in hosts}, timeout=120)
    for host, answer in answers.items():
        if not answer.ok:
            say(f"{host}: no logs: {' '.join(answer.stderr[-1:]) or answer.stdout.strip()[-200:]}")
    return merge_logs({h: a.stdout for h, a in answers.items() if a.ok})


def follow_logs(job: Job, service: str, limit, since: str | None, tail: int | None,
                on_line) -> list[str]:
    """Every host's log stream at once, as lines come, until Ctrl-C or SIGTERM: the signal only
    sets an event, each follower then stops its remote `docker logs --follow` job itself, and
    the job folders go. Each host's job runs in a private folder made fresh for it (root's,
    under LOGS_ROOT: no other user can plant its pid file), and ends by itself when rig stops
    polling it (rig killed, connection lost: commands/day2.py follow_command). Returns why
    each host whose stream ended early stopped (lost, or docker logs failed); [] when every
    stream ran until it was stopped or ended by itself (the container was removed)."""
    hosts = _hosts(job, service, limit)
    since = check_since(since)
    stop = threading.Event()
    handled = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {s: signal.signal(s, lambda *_: stop.set()) for s in handled}
    workdirs: dict[str, str] = {}
    with job.session(hosts) as session:
        try:
            made = session.shell_all({h: job_dir_create(day2.LOGS_ROOT) for h in hosts}, timeout=60)
            for host, answer in made.items():
                if answer.ok and (folder := parse_job_dir(answer.stdout, day2.LOGS_ROOT)):
                    workdirs[host] = folder
            failed = [h for h in hosts if h not in workdirs]
            if failed:
                raise RigError(*(f"{h}: could not make a folder for the log job: "
                                 f"{' '.join(made[h].stderr[-1:]) or made[h].stdout.strip()[-200:]}"
                                 for h in failed))
            def follow(host: str):
                code, last = session.follow(host, day2.follow_command(service, since, tail,
                                                                     workdirs[host]),
                                            workdirs[host], lambda line: on_line(host, line),
                                            24 * 3600, 0.5, stop)
                if code == 0 and not stop.is_set():   # the container went (a rollout replaced it)
                    on_line(host, f"-- the log stream of rig-{service} ended (the container "
                                  "was replaced or removed); still following the others --")
                return code, last
            followers = [gevent.spawn(follow, h) for h in hosts]
            try:
                gevent.joinall(followers)
            finally:
                stop.set()
                gevent.joinall(followers, timeout=30)
            problems = [_follow_problem(h, f) for h, f in zip(hosts, followers, strict=True)]
            gevent.killall([f for f in followers if not f.ready()], block=False)  # frozen hosts
            return [problem for problem in problems if problem]
        finally:
            for number, handler in previous.items():
                signal.signal(number, handler)
            if workdirs:
                session.shell_all({h: seq(job_stop(w), job_dir_remove(w, day2.LOGS_ROOT))
                                   for h, w in workdirs.items()}, timeout=20)


def _follow_problem(host: str, follower) -> str | None:
    """Why a host's log stream stopped before rig stopped it, or None: stopped by rig (130),
    the day-long cap (124), or docker logs ended by itself (0: the container was replaced or
    removed; on_line has said so). A follower still running after its 30 s to stop is a host
    that stopped answering."""
    if not follower.ready():
        return f"{host}: stopped following: no answer when asked to stop"
    if not follower.successful():
        return f"{host}: stopped following: {follower.exception}"
    code, last = follower.value
    if code in (0, 124, 130):
        return None
    return (f"{host}: stopped following (exit {code}): "
            + (" ".join(last[-1:]) or "no reason given"))


# -- exec -----------------------------------------------------------------------------------------
@dataclass
class ExecResult:
    host: str
    code: int
    output: str


def exec_in(job: Job, service: str, limit, argv: list[str]) -> list[ExecResult]:
    hosts = _hosts(job, service, limit)
    command = day2.exec_command(service, argv)
    with job.session(hosts) as session:
        answers = session.shell_all({h: command for h in hosts}, timeout=600)
    results = []
    for host in hosts:
        answer = answers[host]
        output, code = day2.parse_exit(answer.stdout)
        if code == 255 and not answer.ok:
            output = "\n".join(answer.stderr[-3:]) or output
        results.append(ExecResult(host, code, output))
    return results


def exec_interactive(job: Job, service: str, limit, argv: list[str]) -> int:
    """`docker exec -it` through `ssh -t` to one host, as the operator (sudo when rig uses it)."""
    hosts = _hosts(job, service, limit)
    if len(hosts) != 1:
        raise RigError(f"-it needs exactly one host; {service} runs on {', '.join(hosts)} "
                       "(add --host)")
    target = ssh_target(next(t for t in job.targets if t.name == hosts[0]))
    line = day2.exec_command(service, argv, interactive=True)
    if target.sudo:
        line = with_sudo(line)
    return subprocess.call([*ssh_argv(target, "-t"), line.line])


# -- locks ----------------------------------------------------------------------------------------
@dataclass
class LockRow:
    host: str
    state: str                  # free, held, paused, malformed, unknown (did not answer)
    holder: dict | None = None
    description: str = "free"
    sha: str | None = None      # the lock file's sha256 when it was read


def lock_status(job: Job, limit, say) -> list[LockRow]:
    hosts = _hosts(job, None, limit)
    with job.session(hosts, partial=True) as session:   # a host that does not answer is a row
        facts = Rollout(session, job.fleet, say, "status", "").facts() if session.names() else {}
        gone = {h: "; ".join(line.removeprefix(f"{h}: ") for line in lines)
                for h, lines in session.unreachable.items()}
    rows = []
    for host in hosts:
        lock = facts[host].lock if facts.get(host) else None
        if facts.get(host) is None:
            rows.append(LockRow(host, "unknown", None, gone.get(host, "did not answer")))
        elif lock is None:
            rows.append(LockRow(host, "free"))
        else:
            kind = liveness(lock, job.fleet.rollout.lock_stale_after, time.time())
            rows.append(LockRow(host, kind if kind in ("paused", "malformed") else "held", lock,
                                describe_lock(lock, job.fleet.rollout.lock_stale_after,
                                              time.time()), facts[host].lock_sha))
    return rows


class Released(list):
    """lock_release's answer: one line per host (a list of str, printed as it is), and
    .not_released: the hosts whose lock may still be there (no answer, taken since it was read,
    or the removal failed), so that the command can fail after printing every line."""

    def __init__(self, lines: list[str], not_released: list[str]):
        super().__init__(lines)
        self.not_released = not_released


def lock_release(job: Job, limit, force: bool, say) -> Released:
    """Remove the locks of the chosen hosts. Without --force only a lock no one is using: its
    holder dead (pid gone on this machine), stale (no heartbeat for lock_stale_after) or the
    file malformed; a live holder (fresh heartbeat, from any machine), a paused rollout
    (`rig promote` / `rig abort`) and an abort or a promote that did not finish (its lock keeps
    the paused record: `rig abort` / `rig promote` finishes it) need --force. Exactly the lock
    seen is removed: one taken since is left alone and named. Returns one line per host and
    the hosts not released."""
    rows = lock_status(job, limit, say)
    now, stale_after = time.time(), job.fleet.rollout.lock_stale_after
    refused = [r for r in rows if r.holder is not None and not force
               and (liveness(r.holder, stale_after, now) in ("live", "paused")
                    or unfinished(r.holder, stale_after, now))]
    if refused:
        raise RigError(*(f"{r.host}: {r.description}" for r in refused),
                       "the lock is in use (a live holder, a paused rollout, or an abort or "
                       "promote that did not finish and keeps its record): nothing was "
                       "released; `rig lock "
                       "release --force` removes it anyway")
    held = [r for r in rows if r.holder is not None]
    lines = [f"{r.host}: free already" for r in rows if r.state == "free"]
    lines += [f"{r.host}: did not answer" for r in rows if r.state == "unknown"]
    not_released = [r.host for r in rows if r.state == "unknown"]
    if held:
        with job.session([r.host for r in held]) as session:
            answers = session.shell_all({r.host: lock_cmd.remove(r.sha or "-") for r in held},
                                        timeout=30)
        for r in held:
            word, _, now_held, _ = lock_cmd.parse_answer(answers[r.host].stdout) \
                if answers[r.host].ok else ("", None, None, b"")
            if word in ("REMOVED", "FREE"):
                lines.append(f"{r.host}: released ({r.description.split(';')[0]})")
            elif word == "HELD":
                lines.append(f"{r.host}: NOT released: the lock changed since it was read: "
                             + describe_lock(now_held, stale_after, time.time()))
                not_released.append(r.host)
            else:
                lines.append(f"{r.host}: FAILED: {' '.join(answers[r.host].stderr[-1:])}")
                not_released.append(r.host)
    return Released(lines, not_released)


# -- prune ----------------------------------------------------------------------------------------
@dataclass
class PruneReport:
    dry_run: bool
    hosts: dict[str, PrunePlan] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)

    @property
    def freed(self) -> int:
        return sum(plan.freed for plan in self.hosts.values())


def repositories(job: Job, host: str) -> dict[str, str]:
    """repository -> service for every service image the spec deploys to `host` (any tag)."""
    return {image_for(job.fleet, s, host, "x").repository: s for s in job.fleet.services}


def prune(job: Job, limit, keep: int | None, dry_run: bool, say) -> PruneReport:
    """Plan on every chosen host, then (unless dry_run) remove. A real prune holds the rollout
    lock on every chosen host from before it reads what runs until it is done (a rollout
    changing what runs meanwhile would make the plan wrong); a host that is locked stops it
    before anything is removed anywhere."""
    keep = job.fleet.rollout.keep_images if keep is None else keep
    if keep < 1:
        raise RigError("--keep must be at least 1")
    hosts = _hosts(job, None, limit)
    with job.session(hosts) as session:
        if dry_run:
            return _prune(job, session, hosts, keep, True, say)
        locks = HostLocks(session, job.fleet.rollout.lock_stale_after, "prune", "")
        try:
            problems = locks.take(break_lock=False)
            if problems:
                raise RigError(*problems, "nothing was pruned")
            locks.start_beating()
            return _prune(job, session, hosts, keep, False, say)
        finally:
            locks.release()


def _prune(job: Job, session, hosts: list[str], keep: int, dry_run: bool, say) -> PruneReport:
    report = PruneReport(dry_run)
    facts = Rollout(session, job.fleet, say, "prune", "").facts()
    listed = session.shell_all({h: day2.inventory_command() for h in hosts}, timeout=60)
    for host in hosts:
        if not listed[host].ok or facts.get(host) is None:
            report.failed[host] = " ".join(listed[host].stderr[-1:]) or "did not answer"
            continue
        images, containers = parse_inventory(listed[host].stdout)
        report.hosts[host] = plan_prune(images, containers, facts[host].state,
                                        repositories(job, host), keep,
                                        namespace=job.fleet.registry.repository(""))
    if not dry_run:
        work = {h: day2.remove_command(p.orphans, p.refs)
                for h, p in report.hosts.items() if p.orphans or p.images}
        for host, answer in session.shell_all(work, timeout=600).items():
            if not answer.ok:
                report.failed[host] = " ".join(answer.stderr[-2:])
    return report
