"""Running local programs: argv lists in, clear errors out. Secrets go in `input`, never argv."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping, Sequence

from .errors import RigError


def run(
    argv: Sequence[str],
    *,
    input: str | bytes | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = 600,
    check: bool = True,
) -> subprocess.CompletedProcess:
    """Run argv, capture output. On failure raise RigError with the command and stderr's tail."""
    try:
        result = subprocess.run(
            list(argv),
            input=input.encode() if isinstance(input, str) else input,
            env=dict(env) if env is not None else None,
            capture_output=True,
            timeout=timeout,
        )
    except FileNotFoundError:
        raise RigError(f"{argv[0]}: command not found") from None
    except subprocess.TimeoutExpired:
        raise RigError(f"{' '.join(argv[:3])} ...: no answer after {timeout:.0f} s") from None
    if check and result.returncode != 0:
        raise RigError(
            f"{' '.join(argv[:4])}{' ...' if len(argv) > 4 else ''} failed "
            f"(exit {result.returncode})",
            *tail(result.stderr or result.stdout),
        )
    return result


def tail(output: bytes | str, lines: int = 5) -> list[str]:
    text = output.decode(errors="replace") if isinstance(output, bytes) else output
    return ["  " + line for line in text.strip().splitlines()[-lines:]]


def pid_running(pid: int) -> bool:
    """Whether a process with this pid is alive on this machine (a zombie is not: PID 1 here
    does not always reap what it should)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True
