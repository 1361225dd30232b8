"""Day-2 commands on a host (pure): logs, exec, what prune reads and removes.

Every value is quoted by construction (sh); nothing here runs anything."""

from __future__ import annotations

import re

from .base import Cmd, all_of, no_stderr, ok, pipe, seq, sh
from .container import SERVICE_USER, current

EXIT_MARK = "rig-exit-code:"


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


def remove_command(containers: list[str], image_ids: list[str]) -> Cmd:
    """Containers first (an orphan holds its image), then images by ID."""
    parts = []
    if containers:
        parts.append(sh("docker", "rm", "-f", *containers))
    if image_ids:
        parts.append(sh("docker", "rmi", "-f", *image_ids))
    return all_of(*parts) if parts else Cmd("true")


_SIZE = re.compile(r"([0-9.]+)\s*([kKMGT]?B)")
_FACTOR = {"B": 1, "kB": 1000, "KB": 1000, "MB": 1000**2, "GB": 1000**3, "TB": 1000**4}


def parse_size(text: str) -> int:
    """docker's sizes (`1.05GB`, `512kB`, decimal units) -> bytes; 0 when unreadable."""
    match = _SIZE.search(text or "")
    return int(float(match.group(1)) * _FACTOR.get(match.group(2), 1)) if match else 0
