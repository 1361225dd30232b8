"""What every command shares: the context (spec path, environment, the one loaded Job), the
error handling, common options and small printers."""

from __future__ import annotations

import functools
import json
import os
import sys
from dataclasses import asdict, is_dataclass
from pathlib import Path

import click

from ..errors import RigError

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


class Context:
    def __init__(self, config: str, env: str | None):
        self.config, self.env_option = Path(config), env
        self._job = None

    @property
    def repo(self) -> Path:
        return self.config.resolve().parent

    def job(self, inventory: str | None = None):
        """The Job (spec loaded once per command) for the chosen environment."""
        if self._job is None:
            from ..inventory import resolve_env
            from ..ops.job import Job

            self._job = Job(self.config, resolve_env(self.env_option, inventory, default="lab"))
            context = click.get_current_context(silent=True)
            if context is not None:      # its SSH connections close when the command ends
                context.call_on_close(self._job.close)
        return self._job


def friendly(func):
    """RigError -> `rig: ...` lines on stderr and exit 1; Ctrl-C -> exit 130."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except RigError as e:
            for i, line in enumerate(e.lines or [str(e)]):
                echo(("rig: " if i == 0 else "     ") + line, err=True)
            sys.exit(1)
        except Exception as e:  # the docker SDK's errors, without importing it (0.3 s) up front
            if not type(e).__module__.startswith("docker."):
                raise
            echo(f"rig: docker: {str(e).splitlines()[0]}", err=True)
            sys.exit(1)
        except KeyboardInterrupt:
            echo("rig: interrupted", err=True)
            sys.exit(130)

    return wrapper


def inventory_option(func):
    return click.option(
        "-i", "--inventory", default=None, metavar="FILE",
        help="Legacy spelling of --env: inventory/lab.py or inventory/production.py.",
    )(func)


def limit_option(func):
    return click.option("--limit", metavar="HOSTS", default=None,
                        help="Comma-separated hosts or groups to act on (default: all).")(func)


def break_lock_options(func):
    """--break-lock and --force, with the lock rules of rollout/locks.py."""
    func = click.option("--force", is_flag=True,
                        help="With --break-lock: break even a live holder's lock (fresh "
                             "heartbeat) or a paused rollout's. Only when you know it is dead.")(func)
    return click.option("--break-lock", is_flag=True,
                        help="Take over a lock whose holder is dead (its pid gone on this "
                             "machine), stale (no heartbeat for rollout.lock_stale_after) or "
                             "whose file is malformed; a live holder is refused.")(func)


def json_option(func):
    return click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")(func)


_GONE: set[int] = set()   # file descriptors whose reader has gone


def echo(text: str, err: bool = False) -> None:
    """click.echo that never raises. When whatever reads rig's output has gone (a closed
    terminal: EIO; `rig rollout | head`: a broken pipe), the command's work must go on, gates,
    rollbacks, ledger and locks included: that stream is pointed at /dev/null and rig carries
    on (its ledger still records what happened)."""
    stream = sys.stderr if err else sys.stdout
    try:
        fd = stream.fileno()
    except (OSError, ValueError):
        fd = -1
    if fd in _GONE:
        return
    try:
        click.echo(text, err=err)
    except OSError:
        _GONE.add(fd)
        if fd >= 0:
            try:
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, fd)   # also what Python flushes at exit: no second error
                os.close(devnull)
            except OSError:
                pass


def say(part: str, message: str) -> None:
    echo(f"  {part:<14} {message}")


def host_say(host: str, message: str) -> None:
    echo(f"  {host:<10} {message}")


def say_line(message: str) -> None:
    echo(f"  {message}")


def dump(value) -> None:
    """Dataclasses (and lists of them) as indented JSON."""
    def plain(v):
        if is_dataclass(v):
            return asdict(v)
        if isinstance(v, list):
            return [plain(x) for x in v]
        return v
    echo(json.dumps(plain(value), indent=2, default=str))
