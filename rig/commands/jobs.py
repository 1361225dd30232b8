"""Long commands (a build, a push) as background jobs on a host, followed by short polls, so
every round trip goes through pyinfra's ordinary run_shell_command with its deadline (pure).

    job_start(cmd, dir)    runs cmd in its own session: output to dir/out, exit code to dir/rc
    job_poll(dir, offset)  line 1: `running <size>` or `<exit code> <size>`;
                           line 2: base64 of the output from byte `offset` to `size`
    job_stop(dir)          TERM to the job's process group
"""

from __future__ import annotations

import base64
import shlex

from .base import Cmd, all_of, sh


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
                  Cmd("r=$(cat rc 2>/dev/null || echo running)"),
                  Cmd("n=$(stat -c %s out)"),
                  Cmd('echo "$r $n"'),
                  Cmd(f'{{ tail -c +{skip} out | head -c $((n - {int(offset)})) | base64 -w0; echo; }}',
                      compound=True))


def job_stop(workdir: str) -> Cmd:
    """TERM to the job's process group. No `--`: dash's kill (Debian's sh) refuses it, and
    `kill -TERM -- -PGID` used to fail silently there, leaving the job running."""
    return Cmd(f"kill -TERM -$(cat {shlex.quote(workdir + '/pid')}) 2>/dev/null || true")


def parse_poll(stdout: str) -> tuple[int | None, int, bytes]:
    """(exit code or None while running, size, new output bytes) from job_poll's answer."""
    lines = stdout.split("\n")
    status, size = lines[0].split()
    data = base64.b64decode(lines[1].strip()) if len(lines) > 1 and lines[1].strip() else b""
    return (None if status == "running" else int(status)), int(size), data
