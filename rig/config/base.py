"""The strict base every spec model derives from, and the small value types they share.

What the types refuse, and why (every refusal is a `file:line: field: message` from the loader):

- Control characters (tabs, newlines, ESC, NUL, C1 codes), Unicode line/paragraph separators,
  bidi overrides and lone surrogates in any string that reaches a host (`Line`): an env value
  with a newline would add variables to /etc/rig/machine.env, a URL with one would add lines
  to an apt source. Free text (`Text`: descriptions) may hold newlines and tabs, nothing else.
- Paths (`SpecPath`) that are absolute or climb out of the spec's folder with `..`: a spec
  names files of its own checkout, nothing else on the control machine. The one exception is
  build.ca_bundle (`SpecPathOrAbsolute`), whose natural value is a system file such as
  /etc/ssl/certs/ca-certificates.crt. The loader also resolves symlinks (rules.py).
- Durations that are infinite, not a number, or longer than 30 days: they end up as
  `docker stop -t N` or a sleep, where .inf would be an OverflowError.
- Names (hosts, groups, services, families, profiles) outside [a-z0-9_.-]: a profile name
  becomes the file profiles/<name>.yml, so it is checked before any file is opened.
"""

from __future__ import annotations

import math
import posixpath
import re
from typing import Annotated

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

_DURATION = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*(ms|s|m|h)?\s*")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}
MAX_DURATION = 30 * 24 * 3600.0
"""The longest duration a spec may hold (30 days), so every duration fits an int and a sleep."""


class StrictModel(BaseModel):
    """Unknown keys are errors, values are immutable once loaded, floats are finite."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


def parse_duration(value: object) -> float:
    """'30s', '500ms', '2m', '1h' or a plain number of seconds -> seconds as float.

    Infinite, NaN and longer than MAX_DURATION are refused (.inf used to load, and failed
    later as an OverflowError in `docker stop -t`)."""
    seconds: float | None = None
    if isinstance(value, bool):
        seconds = None
    elif isinstance(value, int | float):
        seconds = float(value) if not isinstance(value, int) or abs(value) < 10**18 else math.inf
    elif isinstance(value, str) and len(value) < 64:
        match = _DURATION.fullmatch(value)
        if match:
            seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if seconds is None:
        raise ValueError("expected a duration such as 30s, 500ms or 2m")
    if math.isnan(seconds):
        raise ValueError("a duration must be a number, not NaN")
    if math.isinf(seconds) or seconds > MAX_DURATION:
        raise ValueError("a duration must be finite and at most 30 days (2592000 s)")
    return seconds


Duration = Annotated[float, BeforeValidator(parse_duration), Field(ge=0)]
"""Seconds; written in YAML as 30s, 500ms, 2m or a number; finite, at most 30 days."""

NAME_PATTERN = r"^[a-z0-9][a-z0-9_.-]*$"
NAME_RE = re.compile(r"[a-z0-9][a-z0-9_.-]{0,62}")
"""NAME_PATTERN for Python code that must check a name before pydantic does (fullmatch)."""

Name = Annotated[str, Field(pattern=NAME_PATTERN, max_length=63)]
"""Lower-case identifier for hosts, groups, services, families and profiles."""

EnvName = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", max_length=128)]
"""A shell environment variable name."""


# -- strings that reach a host ------------------------------------------------------------------
# C0 and C1 control characters, DEL, line/paragraph separators, bidi embedding/override/isolate
# marks, lone surrogates. Free text keeps \t and \n.
_NOT_IN_LINE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
_NOT_IN_TEXT = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069"
                          "\ud800-\udfff]")


def _refuse(pattern: re.Pattern, value: str, expected: str) -> str:
    bad = pattern.search(value)
    if bad:
        raise ValueError(f"control character U+{ord(bad.group()):04X} at position {bad.start()}; "
                         f"{expected} expected")
    return value


def check_line(value: str) -> str:
    """A single line of printable text: what may go into a command, an env file or a header."""
    return _refuse(_NOT_IN_LINE, value, "one line of printable text")


def check_text(value: str) -> str:
    """Free text: newlines and tabs are fine, other control characters are not."""
    return _refuse(_NOT_IN_TEXT, value, "text without control characters")


Line = Annotated[str, AfterValidator(check_line), Field(max_length=4096)]
"""One line of printable text (no control characters): every string that reaches a host."""

Text = Annotated[str, AfterValidator(check_text), Field(max_length=4096)]
"""Free text such as a description: may span lines, no other control characters."""

ImageRef = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/@-]*$", max_length=512)]
"""An image reference such as nvidia/cuda:12.1.1-runtime or host:5000/ns/image@sha256:..."""

Word = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_./:-]*$", max_length=255)]
"""A driver or plugin name (json-file, overlay2, org/plugin:tag): no spaces, no quotes."""

URL_PATTERN = r"^https?://[A-Za-z0-9._~:/?#\[\]@!$&()*+,;=%-]+$"
Url = Annotated[str, AfterValidator(check_line), Field(pattern=URL_PATTERN, max_length=2048)]
"""An http(s) URL without spaces, quotes or control characters (apt sources take it as a field)."""


def check_spec_path(value: str) -> str:
    """A path relative to the spec's folder that stays inside it (checked lexically here; the
    loader also resolves symlinks against the real folder)."""
    check_line(value)
    if not value:
        raise ValueError("a path may not be empty")
    if value.startswith(("/", "\\")) or re.match(r"[A-Za-z]:", value):
        raise ValueError(f"{value!r} is absolute; paths are relative to the spec's folder")
    normal = posixpath.normpath(value.replace("\\", "/"))
    if normal == ".." or normal.startswith("../"):
        raise ValueError(f"{value!r} leaves the spec's folder")
    return value


def check_spec_path_or_absolute(value: str) -> str:
    """An absolute path (a system file) or a relative path that stays inside the spec's folder."""
    check_line(value)
    return value if value.startswith("/") else check_spec_path(value)


SpecPath = Annotated[str, AfterValidator(check_spec_path), Field(max_length=1024)]
"""Relative to the folder fleet.yml is in, and inside it: no absolute paths, no escaping `..`."""

SpecPathOrAbsolute = Annotated[str, AfterValidator(check_spec_path_or_absolute),
                               Field(max_length=1024)]
"""An absolute path, or a SpecPath. Only fields whose description says so use this."""


def check_json_value(value: object, depth: int = 0) -> object:
    """A JSON-like value (health.expect): str (one line), int, finite float, bool, null, lists and
    mappings of those with string keys, at most 32 levels deep."""
    if depth > 32:
        raise ValueError("nested more than 32 levels deep")
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{value} is not a finite number")
        return value
    if isinstance(value, str):
        return check_line(value)
    if isinstance(value, list):
        return [check_json_value(item, depth + 1) for item in value]
    if isinstance(value, dict):
        for key in value:
            if not isinstance(key, str):
                raise ValueError(f"key {key!r} is not a string")
            check_line(key)
        return {key: check_json_value(item, depth + 1) for key, item in value.items()}
    raise ValueError(f"{type(value).__name__} is not a JSON value (text, number, bool, list, mapping)")
