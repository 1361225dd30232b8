"""The one loader: YAML files -> validated Fleet, or a SpecError naming file, line and field.

Every value remembers where it was written (file and line), so a pydantic error on
`services.model_ops_coordinator.port` becomes
`fleet.yml:14: services.model_ops_coordinator.port: Input should be less than or equal to 65535`.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from ..errors import SpecError
from . import rules
from .fleet import Fleet
from .profiles import ProfileSpec


@dataclass(frozen=True)
class Where:
    """Where a value was written: file, 1-based line, and how much of the path is the file's own
    prefix (profiles are mounted under profiles.<name> but their fields are shown without it)."""

    file: str
    line: int
    prefix: int = 0


Locations = dict[tuple, Where]


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys instead of silently keeping the last one."""

    def construct_mapping(self, node, deep=False):
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"duplicate key {key!r} (first on line {seen[key]})",
                    key_node.start_mark,
                )
            seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


def _display(path: Path) -> str:
    """Path as the user would type it: relative to cwd when below it, else absolute."""
    try:
        relative = os.path.relpath(path)
    except ValueError:
        return str(path)
    return str(path.resolve()) if relative.startswith("..") else relative


def read_yaml(path: Path, prefix: tuple = ()) -> tuple[Any, Locations]:
    """Parse one YAML file; return its data and the line of every key and list item."""
    shown = _display(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise SpecError(f"{shown}: file not found") from None
    except OSError as e:
        raise SpecError(f"{shown}: cannot read: {e.strerror}") from None
    try:
        node = yaml.compose(text, Loader=_UniqueKeyLoader)
        data = yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark else 1
        raise SpecError(f"{shown}:{line}: YAML: {e.problem or e.context}") from None
    locations: Locations = {prefix: Where(shown, 1, len(prefix))}
    if node is not None:
        _walk(node, prefix, shown, len(prefix), locations)
    return data, locations


def _walk(node: yaml.Node, path: tuple, shown: str, prefix: int, out: Locations) -> None:
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            child = (*path, str(key_node.value))
            out[child] = Where(shown, key_node.start_mark.line + 1, prefix)
            _walk(value_node, child, shown, prefix, out)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            child = (*path, i)
            out[child] = Where(shown, item.start_mark.line + 1, prefix)
            _walk(item, child, shown, prefix, out)


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
    shown = path[where.prefix:]
    dotted = ".".join(str(p) if not isinstance(p, int) else f"[{p}]" for p in shown)
    return where, dotted.replace(".[", "[") or "(top level)"


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

    for loc, message in rules.check(fleet):
        problems.append(_problem(loc, message, locations))
    if problems:
        raise SpecError(*_ordered(problems))
    fleet._base_dir = fleet_path.parent.resolve()
    return fleet


def _load_profiles(folder: Path, data: dict, locations: Locations, problems: list) -> dict:
    """Read profiles/<name>.yml for every profile a host names; problems collected, not raised."""
    profiles: dict[str, Any] = {}
    hosts = data.get("hosts")
    if not isinstance(hosts, dict):
        return profiles
    for host, spec in hosts.items():
        name = spec.get("profile") if isinstance(spec, dict) else None
        if not isinstance(name, str) or name in profiles:
            continue
        file = folder / f"{name}.yml"
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
                    f"name {content.get('name')!r} does not match the file name {name!r}",
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
