"""Hooks: executables in hooks/ next to the spec (Kamal's convention), run on this machine.

    pre-deploy, post-deploy, pre-rollout, post-rollout, rollback

Each gets RIG_TAG, RIG_HOSTS, RIG_SERVICES, RIG_RESULT (empty for pre-*) and RIG_OPERATOR in
its environment, runs in the spec's folder with a deadline, and its output is shown prefixed
`hook <name>:`. A failing pre-* hook stops the command before any host is touched; a failing
post-* hook is reported, and the command's own result stands."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from ..errors import RigError
from ..ledger import operator

HOOKS = ("pre-deploy", "post-deploy", "pre-rollout", "post-rollout", "rollback")
TIMEOUT = 300


def run_hook(folder: Path, name: str, say, tag: str = "", hosts=(), services=(),
             result: str = "") -> int | None:
    """Run hooks/<name> if it exists; its exit code (None: no such hook)."""
    assert name in HOOKS, name
    path = folder / "hooks" / name
    if not path.exists():
        return None
    if not path.is_file() or not os.access(path, os.X_OK):
        raise RigError(f"{path}: a hook must be an executable file (chmod +x {path})")
    env = {**os.environ, "RIG_TAG": tag, "RIG_HOSTS": ",".join(hosts),
           "RIG_SERVICES": ",".join(services), "RIG_RESULT": result, "RIG_OPERATOR": operator()}
    try:
        done = subprocess.run([str(path)], cwd=folder, env=env, capture_output=True, text=True,
                              timeout=TIMEOUT, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        code, lines = 124, [f"still running after {TIMEOUT} s: stopped"]
    else:
        code, lines = done.returncode, (done.stdout + done.stderr).splitlines()
    for line in lines[-40:]:
        say(f"hook {name}: {line}")
    if code != 0 and name.startswith("pre-"):
        raise RigError(f"hook {name} exited {code}: stopped before any host was touched")
    if code != 0:
        say(f"hook {name}: exited {code} (the command's own result stands)")
    return code
