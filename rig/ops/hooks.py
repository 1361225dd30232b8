"""Hooks: executables in hooks/ next to the spec (Kamal's convention), run on this machine.

    pre-deploy, post-deploy, pre-rollout, post-rollout, rollback

Each gets RIG_TAG, RIG_HOSTS, RIG_SERVICES, RIG_RESULT (empty for pre-*) and RIG_OPERATOR in
its environment, runs in the spec's folder with a deadline, and its output is shown prefixed
`hook <name>:`. A failing pre-* hook stops the command before any host is touched; a failing
post-* hook is reported, and the command's own result stands.

A hook's environment is plain: the RIG_* variables, PATH, HOME, LANG and LC_*, USER, LOGNAME,
TERM and TZ, and never a variable a loaded spec reads a credential from (the registry token's,
any service secret's), RIG_* or not. It runs in a session of its own: at the deadline its whole
process group is stopped (a child it left in the background holding its output included)."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterable, Mapping
from pathlib import Path

from ..errors import RigError
from ..ledger import operator

HOOKS = ("pre-deploy", "post-deploy", "pre-rollout", "post-rollout", "rollback")
TIMEOUT = 300
GRACE = 5  # seconds between TERM and KILL to the hook's process group at the deadline
PLAIN_ENV = ("PATH", "HOME", "LANG", "USER", "LOGNAME", "TERM", "TZ")


def credential_variables(fleet) -> set[str]:
    """The environment variables the spec reads credentials from: the registry token's and
    every service secret's (`secrets: {NAME: {env: VAR}}`)."""
    names = {fleet.registry.token_env}
    names.update(source.env for service in fleet.services.values()
                 for source in service.secrets.values() if source.env)
    return names


def hook_env(environ: Mapping[str, str], withheld: Iterable[str], **rig: str) -> dict[str, str]:
    """What a hook sees: the allow-listed variables of `environ` less `withheld`, then rig's."""
    hidden = set(withheld)
    env = {name: value for name, value in environ.items()
           if (name in PLAIN_ENV or name.startswith(("LC_", "RIG_"))) and name not in hidden}
    env.update(rig)
    return env


def run_hook(folder: Path, name: str, say, tag: str = "", hosts=(), services=(),
             result: str = "", withheld: Iterable[str] = ()) -> int | None:
    """Run hooks/<name> if it exists; its exit code (None: no such hook; 124: stopped at the
    deadline). withheld: variables the hook must not see (credential_variables(fleet))."""
    assert name in HOOKS, name
    path = folder / "hooks" / name
    if not path.exists():
        return None
    if not path.is_file() or not os.access(path, os.X_OK):
        raise RigError(f"{path}: a hook must be an executable file (chmod +x {path})")
    env = hook_env(os.environ, withheld, RIG_TAG=tag, RIG_HOSTS=",".join(hosts),
                   RIG_SERVICES=",".join(services), RIG_RESULT=result, RIG_OPERATOR=operator())
    process = subprocess.Popen([str(path)], cwd=folder, env=env, stdin=subprocess.DEVNULL,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               errors="replace", start_new_session=True)
    try:
        output, _ = process.communicate(timeout=TIMEOUT)
        code, lines = process.returncode, output.splitlines()
    except subprocess.TimeoutExpired:
        code, lines = 124, _stop_group(process).splitlines()
        lines.append(f"still running after {TIMEOUT} s (the hook, or a process it started): "
                     "stopped, with every process it started")
    for line in lines[-40:]:
        say(f"hook {name}: {line}")
    if code != 0 and name.startswith("pre-"):
        raise RigError(f"hook {name} exited {code}: stopped before any host was touched")
    if code != 0:
        say(f"hook {name}: exited {code} (the command's own result stands)")
    return code


def _stop_group(process: subprocess.Popen) -> str:
    """TERM, then KILL, to the hook's process group (its pid: start_new_session made it the
    leader, and it is not reaped before this, so the id cannot be another's); what it wrote."""
    output = ""
    for number in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, number)
        except ProcessLookupError:
            pass
        try:
            output, _ = process.communicate(timeout=GRACE)
            return output
        except subprocess.TimeoutExpired:
            continue
    # something escaped the group (its own session) and holds the output: stop reading
    for stream in (process.stdout, process.stderr):
        if stream:
            stream.close()
    process.wait()
    return output
