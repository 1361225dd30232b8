"""Property: whatever is in fleet.yml, a profile or the overlay, load_fleet ends in a valid Fleet
or a SpecError whose every line is `file:line: field: message`, within a time and memory bound,
and a Fleet that loads is safe to turn into host commands.

Inputs: YAML documents generated from arbitrary data, raw text and bytes, alias bombs, and
mutations of the shipped fleet.yml and profiles (keys renamed, values of the wrong type, deep
nesting, anchors and aliases, odd unicode, broken bytes, lines moved).

`make test` runs the derandomized "ci" profile (a fixed set of examples, a few seconds);
HYPOTHESIS_PROFILE=fuzz (`make fuzz`) runs many more, randomized."""

from __future__ import annotations

import itertools
import math
import os
import re
import resource
import shutil
import time
import tracemalloc
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rig.commands import host as cmd
from rig.config import Fleet, load_fleet
from rig.errors import SpecError

REPO = Path(__file__).resolve().parents[2]
FLEET = (REPO / "fleet.yml").read_text()
LAB = (REPO / "lab.yml").read_text()
PROFILES = {p.name: p.read_text() for p in sorted((REPO / "profiles").glob("*.yml"))}
SPEC_LINE = re.compile(r"^[^:\n]+:\d+: [^\n]+: [^\n]+$")  # file:line: field: message

MAX_SECONDS = 2.0  # per load; the real spec takes a few milliseconds
MAX_PEAK = 64 * 2**20  # bytes allocated at the peak of one load (tracemalloc)

_COMMON = dict(deadline=None, database=None, print_blob=True,
               suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("ci", derandomize=True, max_examples=300, **_COMMON)
settings.register_profile("fuzz", max_examples=5000, **_COMMON)
PROFILE = settings.get_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
"""Applied per test (not loaded globally), so other tests' settings are left alone."""


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


def write_spec(folder: Path, fleet: str | bytes, lab: str | bytes = LAB,
               profiles: dict[str, str | bytes] | None = None) -> None:
    """A fresh spec folder: fleet.yml, lab.yml and profiles/ (the shipped ones unless given)."""
    shutil.rmtree(folder / "profiles", ignore_errors=True)
    (folder / "profiles").mkdir()
    files = {"fleet.yml": fleet, "lab.yml": lab}
    files.update({f"profiles/{name}": text for name, text in (profiles or PROFILES).items()})
    for name, content in files.items():
        data = content if isinstance(content, bytes) else content.encode("utf-8", "surrogatepass")
        (folder / name).write_bytes(data)


_loads = itertools.count()


def load_bounded(folder: Path, overlay: bool = False) -> Fleet | None:
    """load_fleet within MAX_SECONDS and MAX_PEAK; a Fleet, or None after a well-formed SpecError.

    Memory: the process's high-water mark may not grow by more than MAX_PEAK in any load, and
    every fourth load is traced (tracemalloc makes a load four times slower)."""
    traced = next(_loads) % 4 == 0
    if traced:
        tracemalloc.start()
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    started = time.perf_counter()
    try:
        fleet = load_fleet(folder / "fleet.yml", folder / "lab.yml" if overlay else None)
    except SpecError as e:
        fleet = None
        assert e.lines, "a SpecError with nothing to say"
        for line in e.lines:
            assert SPEC_LINE.match(line), f"not file:line: field: message: {line!r}"
    finally:
        took = time.perf_counter() - started
        peak = tracemalloc.get_traced_memory()[1] if traced else 0
        tracemalloc.stop()
    rss_growth = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - rss_before
    assert took < MAX_SECONDS, f"load took {took:.2f} s"
    assert peak < MAX_PEAK, f"load peaked at {peak / 2**20:.1f} MiB"
    assert rss_growth < MAX_PEAK, f"load grew the process by {rss_growth / 2**20:.1f} MiB"
    if fleet is not None:
        check_safe(fleet)
    return fleet


def check_safe(fleet: Fleet) -> None:
    """What a loaded Fleet promises the code that turns it into host commands."""
    for profile in fleet.profiles.values():
        cmd.profile_env(profile.runtime_env(), profile.content_hash())  # no ValueError
    cmd.docker_ce_repo(fleet.bootstrap.docker.repo_url, "debian", "trixie")
    rollout = fleet.rollout
    for seconds in (rollout.min_healthy, rollout.stop_timeout, rollout.lock_stale_after):
        assert math.isfinite(seconds) and int(seconds) >= 0
    for spec in [*fleet.families.values(), *fleet.services.values()]:
        fleet.path(spec.context)  # inside the spec's folder


# -- strategies ---------------------------------------------------------------------------------
ODD = ["\u0085", "\u2028", "\u2029", "\ufeff", "\u200b", "\u202e", "\x00", "\x1b", "\t", "\r",
       "\ud800", "é", "İ", "ß", "٣", "８", "🚀", "\U0010ffff", "'", '"', "\\", "#", ":", "&", "*",
       "!", "|", ">", "%", "@", "`", "{", "[", "-", "?", ",", " "]

SCALARS = ["~", "null", "true", "no", "0", "-1", "65536", "0x1F", "0o17", "1_000", ".inf", "-.inf",
           ".NaN", "1.0e+400", "1e400", "2024-01-01", "2001-12-14t21:59:43.10-05:00", "[]", "{}",
           "[1, [2, [3]]]", "{a: {b: c}}", "!!binary aGk=", "!!int 12x", "!!float x", "!!bool y",
           "!!set {a, b}", "!!omap [a: 1]", "!!python/name:os.system", "*undefined", "&a x",
           '"x\\ny"', '"\\ud800"', '"\\x00"', '"\\e[2J"', '"\\u202eevil"', "'it''s'", "|\n  block",
           "9" * 400, "a" * 5000, "../../etc", "/etc/passwd", "https://x/' ; id ; '", "-", "? x",
           "<<: {a: 1}", "30s", "500ms", "2m", "1h", "50%", "101%", "0%", "-0.0"]


@st.composite
def nested(draw) -> str:
    depth = draw(st.integers(1, 60))
    open_, close = draw(st.sampled_from([("[", "]"), ("{a: ", "}")]))
    return open_ * depth + draw(st.sampled_from(["x", "1", ""])) + close * depth


@st.composite
def bomb(draw) -> str:
    """A flow-style alias bomb: `levels` anchors, each `width` aliases of the one before."""
    width, levels = draw(st.integers(2, 12)), draw(st.integers(1, 10))
    parts = [f"&b0 [{', '.join(['lol'] * width)}]"]
    parts += [f"&b{i} [{', '.join([f'*b{i - 1}'] * width)}]" for i in range(1, levels)]
    return "{" + ", ".join(f"k{i}: {p}" for i, p in enumerate(parts)) + "}"


values = st.one_of(st.sampled_from(SCALARS), nested(), bomb(),
                   st.text(st.sampled_from(ODD + list("abc01")), max_size=12),
                   st.text(max_size=20).map(lambda t: yaml.safe_dump(t).split("\n...")[0].strip()))
keys = st.one_of(st.sampled_from(["registry", "hosts", "services", "profile", "port", "context",
                                  "env", "name", "<<", "? [a]", "[k]", "{k: 1}", "1", "~", ".inf",
                                  "x y", "dup"]),
                 st.text(st.sampled_from(ODD + list("abcxyz_")), min_size=1, max_size=8))


@st.composite
def mutated(draw, text: str) -> str | bytes:
    """`text` with a few line-level mutations; sometimes broken at the byte level as well."""
    lines = text.split("\n")
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(lines) - 1))
        line = lines[i]
        kind = draw(st.sampled_from(["value", "value", "key", "delete", "duplicate", "indent",
                                     "insert", "alias", "move", "char"]))
        key, sep, value = line.partition(": ")
        if kind == "value" and sep:
            lines[i] = f"{key}: {draw(values)}"
        elif kind == "key" and sep:
            indent = key[: len(key) - len(key.lstrip())]
            lines[i] = f"{indent}{draw(keys)}: {value}"
        elif kind == "delete":
            del lines[i]
        elif kind == "duplicate":
            lines.insert(i, line)
        elif kind == "indent":
            lines[i] = draw(st.sampled_from(["", " ", "\t", "    "])) + line.lstrip(" ")[: len(line)]
        elif kind == "insert":
            lines.insert(i, f"{draw(st.sampled_from(['', '  ', '    ']))}{draw(keys)}: {draw(values)}")
        elif kind == "alias" and sep:
            lines[i] = f"{key}: &x {value}"
            j = draw(st.integers(0, len(lines) - 1))
            k, s, _ = lines[j].partition(": ")
            if s:
                lines[j] = f"{k}: *x"
        elif kind == "move":
            lines.insert(draw(st.integers(0, len(lines))), lines.pop(i))
        elif kind == "char":
            at = draw(st.integers(0, len(line)))
            lines[i] = line[:at] + draw(st.sampled_from(ODD)) + line[at:]
        if not lines:
            lines = [""]
    result = "\n".join(lines)
    if draw(st.integers(0, 9)) == 0:  # one time in ten: bytes that are not UTF-8
        raw = result.encode("utf-8", "surrogatepass")
        at = draw(st.integers(0, len(raw)))
        return raw[:at] + draw(st.sampled_from([b"\xff", b"\xc3", b"\xe2\x80", b"\xed\xa0\x80"])) + raw[at:]
    return result


json_like = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=8) | st.integers(), children, max_size=4),
    max_leaves=40,
)
spec_shaped = st.dictionaries(
    st.sampled_from(["registry", "build", "families", "services", "hosts", "rollout", "bootstrap",
                     "profiles", "other"]),
    json_like, max_size=8,
)


# -- properties -------------------------------------------------------------------------------
def test_the_shipped_spec_passes_the_bounds(folder):
    write_spec(folder, FLEET)
    assert load_bounded(folder) is not None
    assert load_bounded(folder, overlay=True) is not None


@PROFILE
@given(fleet=mutated(FLEET))
def test_mutated_fleet(folder, fleet):
    write_spec(folder, fleet)
    load_bounded(folder)


@PROFILE
@given(profile=mutated(PROFILES["pc2.yml"]), lab=mutated(LAB))
def test_mutated_profile_and_overlay(folder, profile, lab):
    write_spec(folder, FLEET, lab=lab, profiles={**PROFILES, "pc2.yml": profile})
    load_bounded(folder, overlay=True)


@PROFILE
@given(data=st.one_of(json_like, spec_shaped), flow=st.booleans())
def test_generated_documents(folder, data, flow):
    write_spec(folder, yaml.safe_dump(data, default_flow_style=flow, allow_unicode=True))
    load_bounded(folder)


@PROFILE
@given(raw=st.one_of(st.binary(max_size=300),
                     st.text(st.sampled_from(ODD + list("ab01\n\n  ")), max_size=300),
                     bomb().map(lambda b: f"registry: {b}\n")))
def test_raw_text_and_bytes(folder, raw):
    write_spec(folder, raw)
    load_bounded(folder)
