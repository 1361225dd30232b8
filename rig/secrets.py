"""Registry credentials: from the environment variable the spec names, else its token file.

The value is returned to callers that feed it on stdin or in an HTTP header; it is never
logged, put in argv, or written anywhere but a 0600 file."""

from __future__ import annotations

import os
import stat

from .config import Fleet
from .errors import RigError


def registry_token(fleet: Fleet) -> str:
    reg = fleet.registry
    token = os.environ.get(reg.token_env)
    if token:
        return token.strip()
    if reg.token_file:
        path = fleet.path(reg.token_file)
        if path.is_file():
            mode = stat.S_IMODE(path.stat().st_mode)
            if mode & 0o077:
                raise RigError(
                    f"{path}: token file is readable by others (mode {mode:o}); chmod 600 it"
                )
            return path.read_text().strip()
    where = f" or the file {reg.token_file}" if reg.token_file else ""
    raise RigError(
        f"registry {reg.host}: no token: set the environment variable {reg.token_env}{where}"
        + (" (run `rig lab up` first)" if reg.token_file else "")
    )
