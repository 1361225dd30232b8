"""Registry credentials: from the environment variable the spec names, else its token file.

The value is returned to callers that feed it on stdin or in an HTTP header; it is never
logged, put in argv, written anywhere but a 0600 file, or shown in an error message (errors
name where the token came from, never what it is)."""

from __future__ import annotations

import os
import re
import stat

from .config import Fleet
from .errors import RigError

MAX_TOKEN_BYTES = 64 * 1024
# Printable ASCII: what a token or password can be in an HTTP header (basic auth encodes
# latin-1 at most) and on the single line `docker login --password-stdin` reads.
_TOKEN = re.compile(r"[\x20-\x7e]+")


def registry_token(fleet: Fleet) -> str:
    reg = fleet.registry
    token = os.environ.get(reg.token_env)
    if token:
        return _checked(token.strip(), f"the environment variable {reg.token_env}")
    if reg.token_file:
        path = fleet.path(reg.token_file)
        if path.is_file():
            return _checked(_read_token_file(path), f"the token file {reg.token_file}")
    where = f" or the file {reg.token_file}" if reg.token_file else ""
    raise RigError(
        f"registry {reg.host}: no token: set the environment variable {reg.token_env}{where}"
        + (" (run `rig lab up` first)" if reg.token_file else "")
    )


def _read_token_file(path) -> str:
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            raise RigError(f"{path}: token file is readable by others (mode {mode:o}); chmod 600 it")
        with path.open("rb") as f:
            raw = f.read(MAX_TOKEN_BYTES + 1)
    except OSError as e:
        raise RigError(f"{path}: cannot read the token file: {e.strerror}") from None
    if len(raw) > MAX_TOKEN_BYTES:
        raise RigError(f"{path}: token file is larger than {MAX_TOKEN_BYTES} bytes")
    try:
        return raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise RigError(f"{path}: token file is not UTF-8 text") from None


def _checked(token: str, source: str) -> str:
    """The token, if it is one line of printable ASCII; else an error that does not show it."""
    if not _TOKEN.fullmatch(token):
        raise RigError(f"registry token from {source} is empty or holds line breaks, control "
                       "characters or non-ASCII characters")
    return token
