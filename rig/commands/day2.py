"""Day-2 commands on a host (pure): logs, exec, what prune reads and removes.

Every value is quoted by construction (sh); nothing here runs anything."""

from __future__ import annotations

import re

from .base import Cmd, all_of, no_stderr, ok, pipe, seq, sh
from .container import SERVICE_USER, current
from .jobs import bound_to_follower, job_dir_remove

EXIT_MARK = "rig-exit-code:"
LOGS_ROOT = "/var/lib/rig/logs"
"""Where `logs -f` keeps its job folders (jobs.job_dir_create: private, made fresh each time)."""
FOLLOW_STALE = 120
"""Seconds without a poll after which a `logs -f` job on a host decides its rig is gone."""


def logs_command(service: str, since: str | None = None, tail: int | None = None,
                 follow: bool = False) -> Cmd:
    """`docker logs --timestamps` of rig-<service>, stdout and stderr as one stream."""
    argv: list = ["docker", "logs", "--timestamps"]
    if since:
        argv += ["--since", since]
    if tail is not None:
        argv += ["--tail", int(tail)]
    if follow:
        argv.append("--follow")
    return Cmd(f"{sh(*argv, current(service)).line} 2>&1")


def follow_command(service: str, since: str | None, tail: int | None, workdir: str) -> Cmd:
    """`logs --follow` as a job bound to its follower: when rig stops polling for FOLLOW_STALE
    seconds (killed, or its connection lost), the job removes its folder and ends."""
    return bound_to_follower(logs_command(service, since, tail, follow=True), FOLLOW_STALE,
                             job_dir_remove(workdir, LOGS_ROOT))


def exec_command(service: str, argv: list[str], interactive: bool = False) -> Cmd:
    """The command in rig-<service> as the service's user; the exit code is printed on a last
    line of its own (`rig-exit-code: N`) so it survives the SSH round trip."""
    flags = ["-it"] if interactive else []
    run = sh("docker", "exec", *flags, "-u", SERVICE_USER, current(service), *argv)
    if interactive:
        return run
    return seq(Cmd(f"{run.line} 2>&1"), Cmd(f'echo "{EXIT_MARK}$?"'))


def parse_exit(stdout: str) -> tuple[str, int]:
    """(output, exit code) from exec_command's answer; 255 when the mark is missing."""
    head, mark, code = stdout.rstrip("\n").rpartition(EXIT_MARK)
    if not mark or not code.strip().isdigit():
        return stdout, 255
    return head[:-1] if head.endswith("\n") else head, int(code.strip())


# -- prune --------------------------------------------------------------------------------------
def inventory_command() -> Cmd:
    """What prune decides on, in one round trip: `--- images` (repository, tag, digest, id,
    created, size; tab-separated) and `--- containers` (name, image id, rig.service label)."""
    images = sh("docker", "image", "ls", "--no-trunc", "--digests", "--format",
                "{{.Repository}}\t{{.Tag}}\t{{.Digest}}\t{{.ID}}\t{{.CreatedAt}}\t{{.Size}}")
    containers = pipe(sh("docker", "ps", "-aq", "--no-trunc"),
                      sh("xargs", "-r", "docker", "inspect", "-f",
                         '{{.Name}}\t{{.Image}}\t{{index .Config.Labels "rig.service"}}'))
    return seq(sh("echo", "--- images"), ok(no_stderr(images)),
               sh("echo", "--- containers"), ok(no_stderr(containers)))


def remove_command(containers: list[str], refs: list[str]) -> Cmd:
    """Containers first (an orphan holds its image), then images by reference
    (`repository:tag`, `repository@digest`), never by ID and never forced: removing one
    repository's tag of an image that another repository also tags only untags it (an image
    ID names every tag it carries, and `rmi -f ID` would drop them all)."""
    if any(ref.startswith(("-", "sha256:")) or not (":" in ref or "@" in ref) for ref in refs):
        raise ValueError(f"not repository:tag or repository@digest references: {refs!r}")
    parts = []
    if containers:
        parts.append(sh("docker", "rm", "-f", *containers))
    if refs:
        parts.append(sh("docker", "rmi", *refs))
    return all_of(*parts) if parts else Cmd("true")


_SIZE = re.compile(r"([0-9.]+)\s*([kKMGT]?B)")
_FACTOR = {"B": 1, "kB": 1000, "KB": 1000, "MB": 1000**2, "GB": 1000**3, "TB": 1000**4}


def parse_size(text: str) -> int:
    """docker's sizes (`1.05GB`, `512kB`, decimal units) -> bytes; 0 when unreadable."""
    match = _SIZE.search(text or "")
    return int(float(match.group(1)) * _FACTOR.get(match.group(2), 1)) if match else 0
