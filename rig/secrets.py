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
    return read_private(path, "token file", MAX_TOKEN_BYTES).strip()


def read_private(path, label: str, limit: int) -> str:
    """A file only its owner may read (mode 0600 or stricter), at most `limit` bytes of UTF-8;
    every error names the file and what it is for, never its content."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            raise RigError(f"{path}: {label} is readable by others (mode {mode:o}); chmod 600 it")
        with path.open("rb") as f:
            raw = f.read(limit + 1)
    except OSError as e:
        raise RigError(f"{path}: cannot read the {label}: {e.strerror}") from None
    if len(raw) > limit:
        raise RigError(f"{path}: {label} is larger than {limit} bytes")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise RigError(f"{path}: {label} is not UTF-8 text") from None


def _checked(token: str, source: str) -> str:
    """The token, if it is one line of printable ASCII; else an error that does not show it."""
    if not _TOKEN.fullmatch(token):
        raise RigError(f"registry token from {source} is empty or holds line breaks, control "
                       "characters or non-ASCII characters")
    return token


# -- service secrets ----------------------------------------------------------------------------
MAX_SECRET_BYTES = 64 * 1024


class Secret:
    """A secret value that does not show itself: repr and str say where it came from. The value
    is read only by the code that sends it on stdin (`.value`)."""

    __slots__ = ("value", "source")

    def __init__(self, value: str, source: str):
        self.value, self.source = value, source

    def __repr__(self) -> str:
        return f"<secret from {self.source}>"

    __str__ = __repr__


def service_secrets(fleet: Fleet, service: str) -> dict[str, Secret]:
    """Every secret a service declares, read on the control machine: the environment variable
    first, else the 0600 file. A missing or unreadable one is an error naming the service, the
    secret and where rig looked (never the value)."""
    found: dict[str, Secret] = {}
    for name, source in fleet.services[service].secrets.items():
        where = f"services.{service}.secrets.{name}"
        if source.env and os.environ.get(source.env):
            found[name] = _secret_text(os.environ[source.env], f"${source.env}", where)
            continue
        if source.file:
            path = fleet.path(source.file)
            if path.is_file():
                text = read_private(path, f"secret file ({where})", MAX_SECRET_BYTES)
                found[name] = _secret_text(text, str(source.file), where)
                continue
        looked = " or ".join(part for part in (
            source.env and f"the environment variable {source.env}",
            source.file and f"the file {source.file}") if part)
        raise RigError(f"{where}: not set: rig looked in {looked}")
    return found


def _secret_text(value: str, source: str, where: str) -> Secret:
    """One trailing newline (an editor's) is not part of the secret; an empty one is refused."""
    value = value[:-1] if value.endswith("\n") else value
    if not value.strip():
        raise RigError(f"{where}: {source} is empty")
    if "\0" in value:
        raise RigError(f"{where}: {source} holds a NUL byte")
    return Secret(value, source)


class SecretStore:
    """The secrets of one command, each read once (plan, hash and write agree on one value)."""

    def __init__(self, fleet: Fleet):
        self.fleet = fleet
        self._read: dict[str, dict[str, Secret]] = {}

    def loaded(self, service: str) -> dict[str, Secret]:
        """The secrets already read for a service (nothing is read here)."""
        return self._read.get(service, {})

    def of(self, service: str) -> dict[str, Secret]:
        if service not in self._read:
            self._read[service] = service_secrets(self.fleet, service)
        return self._read[service]
