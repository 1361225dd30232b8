"""The one loader: YAML files -> validated Fleet, or a SpecError naming file, line and field.

Every value remembers where it was written (file and line), so a pydantic error on
`services.model_ops_coordinator.port` becomes
`fleet.yml:14: services.model_ops_coordinator.port: Input should be less than or equal to 65535`.

Reading is bounded (MAX_BYTES, MAX_NODES with aliases expanded, MAX_ALIASES, MAX_DEPTH) and
checked before anything walks or constructs the document; what rig refuses and why is listed
in rig/config/__init__.py.
"""

from __future__ import annotations

import math
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from ..errors import SpecError
from . import rules
from .base import NAME_RE
from .fleet import Fleet, is_inside
from .profiles import ProfileSpec


@dataclass(frozen=True)
class Where:
    """Where a value was written: file, 1-based line, and how much of the path is the file's own
    prefix (profiles are mounted under profiles.<name> but their fields are shown without it)."""

    file: str
    line: int
    prefix: int = 0


Locations = dict[tuple, Where]


MAX_BYTES = 1 << 20
"""A spec file larger than 1 MiB is refused before it is parsed."""
MAX_NODES = 10_000
"""Values in one file, counted as the loader and the models see them: every alias expanded."""
MAX_ALIASES = 100
"""Alias uses (*name) in one file."""
MAX_DEPTH = 32
"""Nesting levels in one file, aliases expanded (the spec itself needs about six)."""

_FLOAT_TAG = "tag:yaml.org,2002:float"
_MERGE_TAG = "tag:yaml.org,2002:merge"


class _Refusal(Exception):
    """A limit or a value rig refuses, found while reading YAML: where, and what is wrong."""

    def __init__(self, line: int, path: tuple, message: str):
        super().__init__(message)
        self.line, self.path, self.message = line, path, message


class _SpecLoader(yaml.SafeLoader):
    """SafeLoader with limits, for files rig did not write.

    While composing it counts values as they will be seen once every alias is expanded (an
    alias adds the size of what it refers to), so a YAML alias bomb ("billion laughs") is
    refused at the alias that crosses MAX_NODES, before anything walks or constructs it. It
    also refuses deep nesting, recursive aliases, duplicate and unhashable keys, and turns a
    value its tag cannot hold (`!!int abc`, a 5000-digit number) into a YAML error with a line
    instead of a Python exception."""

    def __init__(self, stream: str):
        super().__init__(stream)
        self._size: dict[int, int] = {}  # id(node) -> its size with aliases expanded
        self._total = 0
        self._aliases = 0
        self._path: list = []

    # -- composing: bounded ---------------------------------------------------------------------
    def compose_node(self, parent, index):
        self._path.append(_part(parent, index))
        try:
            if self.check_event(yaml.AliasEvent):
                return self._compose_alias(parent, index)
            mark = self.peek_event().start_mark
            if len(self._path) > MAX_DEPTH + 1:
                raise self._refuse(mark, f"nested more than {MAX_DEPTH} levels deep")
            self._count(1, mark, "")
            node = super().compose_node(parent, index)
            self._size[id(node)] = 1 + sum(self._size[id(child)] for child in _children(node))
            return node
        finally:
            self._path.pop()

    def _compose_alias(self, parent, index) -> yaml.Node:
        event = self.peek_event()
        self._aliases += 1
        if self._aliases > MAX_ALIASES:
            raise self._refuse(event.start_mark, f"more than {MAX_ALIASES} aliases (*name) in one file")
        node = super().compose_node(parent, index)
        size = self._size.get(id(node))
        if size is None:
            raise self._refuse(event.start_mark, f"alias *{event.anchor} is used inside its own anchor")
        self._count(size, event.start_mark, event.anchor)
        return node

    def _count(self, size: int, mark, anchor: str) -> None:
        self._total += size
        if self._total > MAX_NODES:
            what = f"alias *{anchor} makes" if anchor else "this makes"
            raise self._refuse(mark, f"{what} the file more than {MAX_NODES} values, aliases "
                                     "expanded (a YAML alias bomb?)")

    def _refuse(self, mark, message: str) -> _Refusal:
        return _Refusal(mark.line + 1, tuple(p for p in self._path[1:] if p is not None), message)

    # -- constructing: no Python exceptions ---------------------------------------------------
    def construct_object(self, node, deep=False):
        try:
            return super().construct_object(node, deep=deep)
        except (ValueError, TypeError, KeyError, AttributeError, OverflowError, IndexError):
            shown = _short(node.value, 40) if isinstance(node, yaml.ScalarNode) else "this value"
            raise yaml.constructor.ConstructorError(
                None, None, f"cannot read {shown} as {node.tag.rsplit(':', 1)[-1]}", node.start_mark
            ) from None

    def construct_mapping(self, node, deep=False):
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                hash(key)
            except TypeError:
                raise yaml.constructor.ConstructorError(
                    None, None, "a list or mapping cannot be a key", key_node.start_mark
                ) from None
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"duplicate key {_short(key)} (first on line {seen[key]})",
                    key_node.start_mark,
                )
            seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


def _part(parent, index):
    """The path element a node adds below its parent: a key, a list index, or None (a key)."""
    if isinstance(parent, yaml.SequenceNode):
        return index
    if isinstance(index, yaml.ScalarNode):
        return str(index.value)
    return None


def _children(node: yaml.Node) -> list:
    if isinstance(node, yaml.SequenceNode):
        return node.value
    if isinstance(node, yaml.MappingNode):
        return [child for pair in node.value for child in pair]
    return []


def _short(value: Any, width: int = 60) -> str:
    """repr() on one line, cut to `width` characters: safe to put in an error message."""
    text = repr(value)
    return text if len(text) <= width else text[: width - 3] + "..."


def _display(path: Path) -> str:
    """Path as the user would type it: relative to cwd when below it, else absolute."""
    try:
        relative = os.path.relpath(path)
    except ValueError:
        return str(path)
    return str(path.resolve()) if relative.startswith("..") else relative


def _read_text(path: Path, shown: str) -> str:
    """The file as text: a regular file, at most MAX_BYTES, UTF-8 (a BOM is fine)."""
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):
            raise SpecError(f"{shown}: not a regular file")
        if info.st_size > MAX_BYTES:
            raise SpecError(f"{shown}:1: YAML: the file is {info.st_size} bytes; "
                            f"a spec file may be at most {MAX_BYTES} (1 MiB)")
        with path.open("rb") as f:
            raw = f.read(MAX_BYTES + 1)
    except FileNotFoundError:
        raise SpecError(f"{shown}: file not found") from None
    except OSError as e:
        raise SpecError(f"{shown}: cannot read: {e.strerror}") from None
    if len(raw) > MAX_BYTES:
        raise SpecError(f"{shown}:1: YAML: the file is larger than {MAX_BYTES} bytes (1 MiB)")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise SpecError(f"{shown}:{line}: YAML: not UTF-8 text "
                        f"(byte 0x{raw[e.start]:02x}); save the file as UTF-8") from None


def read_yaml(path: Path, prefix: tuple = ()) -> tuple[Any, Locations]:
    """Parse one YAML file; return its data and the line of every key and list item.

    Bounded: see MAX_BYTES, MAX_NODES, MAX_ALIASES, MAX_DEPTH. Every problem, limits included,
    is a SpecError `file:line: field: message` (field is `YAML` for syntax)."""
    shown = _display(path)
    text = _read_text(path, shown)
    loader = None
    try:
        loader = _SpecLoader(text)  # the reader refuses control characters here already
        node = loader.get_single_node()
        locations: Locations = {prefix: Where(shown, 1, len(prefix))}
        if node is None:
            return None, locations
        problems: list[str] = []
        _walk(node, prefix, shown, len(prefix), locations, problems)
        if problems:
            raise SpecError(*problems)
        return loader.construct_document(node), locations
    except _Refusal as e:
        raise SpecError(f"{shown}:{e.line}: {_dotted(e.path) or 'YAML'}: {e.message}") from None
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark else 1
        raise SpecError(f"{shown}:{line}: YAML: {e.problem or e.context}") from None
    except yaml.reader.ReaderError as e:
        line = text.count("\n", 0, e.position) + 1
        code = e.character if isinstance(e.character, int) else ord(e.character)
        raise SpecError(f"{shown}:{line}: YAML: control character U+{code:04X} "
                        "is not allowed in a spec file") from None
    except yaml.YAMLError as e:
        raise SpecError(f"{shown}:1: YAML: {str(e).splitlines()[0]}") from None
    finally:
        if loader is not None:
            loader.dispose()


def _walk(node: yaml.Node, path: tuple, shown: str, prefix: int, out: Locations,
          problems: list[str], depth: int = 0) -> None:
    """Record the line of every key and list item; refuse what YAML allows and a spec does not:
    non-scalar keys, merge keys, infinite or NaN numbers, nesting deeper than MAX_DEPTH (aliases
    expanded: the composer bounds how many values this visits, MAX_NODES)."""

    def problem(line: int, where: tuple, message: str) -> None:
        problems.append(f"{shown}:{line}: {_dotted(where[prefix:]) or '(top level)'}: {message}")

    if depth > MAX_DEPTH:
        raise _Refusal(node.start_mark.line + 1, path[prefix:],
                       f"nested more than {MAX_DEPTH} levels deep (aliases expanded)")
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            line = key_node.start_mark.line + 1
            if not isinstance(key_node, yaml.ScalarNode):
                problem(line, path, "a list or mapping cannot be a key")
                continue
            if key_node.tag == _MERGE_TAG:
                problem(line, path, "merge keys (<<) are not supported; write the keys out")
                continue
            child = (*path, str(key_node.value))
            if not _finite(key_node):
                problem(line, child, f"{key_node.value} is not a finite number")
            out[child] = Where(shown, line, prefix)
            _walk(value_node, child, shown, prefix, out, problems, depth + 1)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            child = (*path, i)
            out[child] = Where(shown, item.start_mark.line + 1, prefix)
            _walk(item, child, shown, prefix, out, problems, depth + 1)
    elif not _finite(node):
        problem(node.start_mark.line + 1, path, f"{node.value} is not a finite number")


def _finite(node: yaml.ScalarNode) -> bool:
    """False for a float scalar that is .inf, .nan or too large for a float (1.0e+400)."""
    if node.tag != _FLOAT_TAG:
        return True
    value = node.value.replace("_", "").lower()
    if "inf" in value or "nan" in value:
        return False
    try:
        return ":" in value or math.isfinite(float(value))
    except ValueError:
        return True  # not a float at all: the constructor refuses it with its line


def _merge(base: dict, overlay: dict) -> dict:
    """Deep merge: mappings merge key by key, anything else in the overlay replaces."""
    merged = dict(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


_PYDANTIC_TAG = re.compile(r"^(int|str|float|bool|none|.*\[.*\])$")
_PLAIN_KEY = re.compile(r"[A-Za-z0-9_-]{1,63}")


def _data_path(loc: tuple, locations: Locations) -> tuple:
    """Drop pydantic's union/validator tags (`int`, `function-after[...]`) from a location."""
    path: list = []
    for part in loc:
        if isinstance(part, str) and _PYDANTIC_TAG.match(part) and (*path, part) not in locations:
            continue
        path.append(part)
    return tuple(path)


def _locate(loc: tuple, locations: Locations) -> tuple[Where, str]:
    """The best-known line for a pydantic/rule location, and the dotted field path to show."""
    path = _data_path(loc, locations)
    where = None
    for cut in range(len(path), -1, -1):
        where = locations.get(path[:cut])
        if where:
            break
    assert where is not None  # the root () is always present
    return where, _dotted(path[where.prefix:]) or "(top level)"


def _dotted(path: tuple) -> str:
    """('services', 'x', 'hosts', 0) -> 'services.x.hosts[0]'; odd keys shown quoted, cut short,
    so an error message is always one printable line."""
    parts = []
    for part in path:
        if isinstance(part, int):
            parts.append(f"[{part}]")
        else:
            text = str(part)
            if not _PLAIN_KEY.fullmatch(text):
                text = _short(text, 40)
            parts.append("." + text)
    dotted = "".join(parts).lstrip(".")
    return dotted if len(dotted) <= 120 else dotted[:60] + "..." + dotted[-57:]


def _problem(loc: tuple, message: str, locations: Locations) -> tuple[str, int, str]:
    where, dotted = _locate(loc, locations)
    return where.file, where.line, f"{where.file}:{where.line}: {dotted}: {message}"


def load_fleet(
    path: str | os.PathLike = "fleet.yml",
    overlay: str | os.PathLike | None = None,
    extra_hosts: dict[str, dict] | None = None,
) -> Fleet:
    """Load and validate fleet.yml (+ an optional overlay such as lab.yml) and its profiles.

    `extra_hosts` adds hosts that exist only at run time (the lab's node3...).
    Raises SpecError listing every problem found, one `file:line: field: message` each."""
    fleet_path = Path(path)
    data, locations = read_yaml(fleet_path)
    if not isinstance(data, dict):
        raise SpecError(f"{_display(fleet_path)}:1: (top level): expected a mapping of sections")
    if overlay is not None:
        over, over_locations = read_yaml(Path(overlay))
        if not isinstance(over, dict):
            raise SpecError(f"{_display(Path(overlay))}:1: (top level): expected a mapping")
        data = _merge(data, over)
        locations.update({k: v for k, v in over_locations.items() if k != ()})
    if extra_hosts:
        hosts = dict(data.get("hosts") or {})
        hosts.update(extra_hosts)
        data["hosts"] = hosts
    if "profiles" in data:
        raise SpecError(
            _problem(("profiles",), "profiles live in profiles/<name>.yml, not here", locations)[2]
        )

    problems: list[tuple[str, int, str]] = []
    data["profiles"] = _load_profiles(fleet_path.parent / "profiles", data, locations, problems)

    try:
        fleet = Fleet.model_validate(data)
    except ValidationError as e:
        for err in e.errors():
            problems.append(_problem(tuple(err["loc"]), err["msg"], locations))
        raise SpecError(*_ordered(problems)) from None

    fleet._base_dir = fleet_path.parent.resolve()
    for loc, message in rules.check(fleet):
        problems.append(_problem(loc, message, locations))
    if problems:
        raise SpecError(*_ordered(problems))
    return fleet


def _load_profiles(folder: Path, data: dict, locations: Locations, problems: list) -> dict:
    """Read profiles/<name>.yml for every profile a host names; problems collected, not raised.

    A name that is not a valid Name (`../../x`) never becomes a path: the model reports it."""
    profiles: dict[str, Any] = {}
    hosts = data.get("hosts")
    if not isinstance(hosts, dict):
        return profiles
    for host, spec in hosts.items():
        name = spec.get("profile") if isinstance(spec, dict) else None
        if not isinstance(name, str) or not NAME_RE.fullmatch(name) or name in profiles:
            continue
        file = folder / f"{name}.yml"
        if not is_inside(file, folder.parent):
            problems.append(_problem(("hosts", host, "profile"),
                                     f"{_display(file)} leads out of the spec's folder", locations))
            continue
        if not file.is_file():
            problems.append(
                _problem(("hosts", host, "profile"), f"no profile file {_display(file)}", locations)
            )
            continue
        try:
            content, profile_locations = read_yaml(file, prefix=("profiles", name))
        except SpecError as e:
            problems.extend(("", 0, line) for line in e.lines)
            continue
        locations.update(profile_locations)
        if isinstance(content, dict) and content.get("name") not in (None, name):
            problems.append(
                _problem(
                    ("profiles", name, "name"),
                    f"name {_short(content.get('name'))} does not match the file name {name!r}",
                    locations,
                )
            )
        profiles[name] = content
    return profiles


def load_profile(path: str | os.PathLike) -> ProfileSpec:
    """Load one profile file on its own (used by tests and `rig validate` of a profile)."""
    file = Path(path)
    content, locations = read_yaml(file, prefix=())
    try:
        return ProfileSpec.model_validate(content)
    except ValidationError as e:
        raise SpecError(
            *_ordered([_problem(tuple(err["loc"]), err["msg"], locations) for err in e.errors()])
        ) from None


def _ordered(problems: list[tuple[str, int, str]]) -> list[str]:
    seen: list[str] = []
    for _, _, line in sorted(problems, key=lambda p: (p[0], p[1])):
        if line not in seen:
            seen.append(line)
    return seen
