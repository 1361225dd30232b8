"""Long commands (a build, a push, `logs -f`) as background jobs on a host, followed by short
polls, so every round trip goes through pyinfra's ordinary run_shell_command with its deadline
(pure).

    job_dir_create(root)   a fresh private folder for one job (mktemp -d in a root-owned folder)
    job_start(cmd, dir)    runs cmd in its own session: output to dir/out, exit code to dir/rc
    job_poll(dir, offset)  line 1: `running <size>` or `<exit code> <size>`;
                           line 2: base64 of the output from byte `offset` to `size`
    job_stop(dir)          TERM to the job's process group (only a pid file holding a pid > 1)
    bound_to_follower(cmd, stale_after, on_stale)
                           cmd, ended when no poll came for stale_after seconds (its follower,
                           rig, is gone): a job that would otherwise run forever
"""

from __future__ import annotations

import base64
import re
import shlex

from .base import Cmd, all_of, any_of, fail, sh

KEEPALIVE = "alive"
"""The file in a job's folder every poll touches (if it exists): bound_to_follower watches it."""


def job_dir_create(root: str) -> Cmd:
    """A fresh private job folder: mktemp -d under a root-owned 0700 folder (as root on the
    host, through sudo), so no other user can plant a symlink, a folder or a pid file in it.
    Prints the folder's path."""
    quoted = shlex.quote(root)
    return all_of(
        any_of(Cmd(f"[ ! -L {quoted} ]"), fail(f"{root} is a symlink: refusing it")),
        sh("install", "-d", "-m", "0700", "-o", "root", "-g", "root", root),
        sh("mktemp", "-d", f"{root}/XXXXXXXX"),
    )


def parse_job_dir(stdout: str, root: str) -> str | None:
    """The folder job_dir_create printed, or None when its answer is not one."""
    lines = stdout.strip().splitlines()
    last = lines[-1].strip() if lines else ""
    return last if re.fullmatch(re.escape(root) + r"/[A-Za-z0-9]+", last) else None


def job_dir_remove(workdir: str, root: str) -> Cmd:
    if not workdir.startswith(root + "/") or ".." in workdir:
        raise ValueError(f"not a folder of {root}: {workdir!r}")
    return sh("rm", "-rf", "--", workdir)


def job_start(command: Cmd, workdir: str) -> Cmd:
    """The job's own shell writes its pid (`$$`): after setsid it leads the job's process group,
    which job_stop signals. (`$!` of the starting shell is not it: setsid may fork.)"""
    script = f"echo $$ >pid; ( {command.line} ) >out 2>&1; echo $? >rc.tmp && mv rc.tmp rc"
    return all_of(sh("cd", workdir), sh("rm", "-f", "out", "rc", "rc.tmp", "pid"),
                  Cmd("touch out"),
                  Cmd(f"{{ setsid nohup sh -c {shlex.quote(script)} </dev/null >/dev/null 2>&1 & "
                      "}", compound=True))


def job_poll(workdir: str, offset: int) -> Cmd:
    skip = int(offset) + 1
    return all_of(sh("cd", workdir),
                  Cmd(f"touch -c {KEEPALIVE}"),
                  Cmd("r=$(cat rc 2>/dev/null || echo running)"),
                  Cmd("n=$(stat -c %s out)"),
                  Cmd('echo "$r $n"'),
                  Cmd(f'{{ tail -c +{skip} out | head -c $((n - {int(offset)})) | base64 -w0; echo; }}',
                      compound=True))


def job_stop(workdir: str) -> Cmd:
    """TERM to the job's process group, only when the pid file holds a number above 1: never
    `kill -TERM -1` (every process) or `-0` (our own group), whatever the file says. No `--`:
    dash's kill (Debian's sh) refuses it, and `kill -TERM -- -PGID` used to fail silently
    there, leaving the job running. Always succeeds."""
    pid = shlex.quote(workdir + "/pid")
    return Cmd(f"p=$(cat {pid} 2>/dev/null); case $p in ''|0*|*[!0-9]*) ;; "
               '*) [ "$p" -gt 1 ] && kill -TERM -$p 2>/dev/null ;; esac; true', compound=True)


def bound_to_follower(command: Cmd, stale_after: int, on_stale: Cmd, every: int = 5) -> Cmd:
    """The command as a job that ends when its follower does. Every job_poll touches the job
    folder's KEEPALIVE file; a watchdog beside the command looks every `every` seconds, and
    when no poll came for `stale_after` seconds (rig was killed, its SSH connection lost)
    runs `on_stale` (nobody else will clean up: say, remove the job's folder) and sends TERM
    to the job's whole process group, itself included. Otherwise the job ends with the
    command, and with its exit code."""
    age = f"$(( $(date +%s) - $(stat -c %Y {KEEPALIVE} 2>/dev/null || echo 0) ))"
    return Cmd(f"touch {KEEPALIVE}; {{ {command.line}; }} & c=$!; "
               f"while kill -0 $c 2>/dev/null; do sleep {int(every)}; "
               f"[ {age} -lt {int(stale_after)} ] || {{ {on_stale.line}; kill -TERM 0; }}; done; "
               "wait $c", compound=True)


def parse_poll(stdout: str) -> tuple[int | None, int, bytes]:
    """(exit code or None while running, size, new output bytes) from job_poll's answer."""
    lines = stdout.split("\n")
    status, size = lines[0].split()
    data = base64.b64decode(lines[1].strip()) if len(lines) > 1 and lines[1].strip() else b""
    return (None if status == "running" else int(status)), int(size), data
