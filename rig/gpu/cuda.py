"""Will this image's CUDA run on that host's driver? Pure functions over NVIDIA's published data.

An image says which CUDA it needs in its environment, as NVIDIA's CUDA base images set it:
`NVIDIA_REQUIRE_CUDA="cuda>=12.1 brand=tesla,driver>=470,driver<471 ..."` and
`CUDA_VERSION=12.1.1`. The NVIDIA Container Toolkit checks the `cuda>=X.Y` term against the CUDA
version the host driver supports ("nvidia-container-cli: requirement error: unsatisfied
condition: cuda>=12.8, please update your driver ..."), so the driver must be at least the one
NVIDIA's release notes list for that toolkit (rig/gpu/cuda_table.py).

The `brand=...,driver>=470,driver<471` alternatives in NVIDIA_REQUIRE_CUDA (space-separated terms
are alternatives) admit old datacenter drivers through the CUDA forward-compatibility package,
which NVIDIA supports only on data center GPUs, select NGC Server Ready RTX SKUs and Jetson
(docs.nvidia.com/deploy/cuda-compatibility/forward-compatibility.html): not on GeForce cards like
the RTX 4090 and 3060. rig therefore reads the `cuda>=` term only.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from .cuda_table import SOURCE, TOOLKIT_DRIVERS

_VERSION = re.compile(r"([0-9]{1,4})\.([0-9]{1,4})(?:\.[0-9]{1,6})?")
_DOTTED = re.compile(r"[0-9]{1,9}(?:\.[0-9]{1,9}){0,5}")


def _driver_key(version: str) -> tuple[int, ...] | None:
    """'535.129.03' -> (535, 129, 3); None unless digits separated by dots."""
    if not isinstance(version, str):
        return None
    text = version.strip()
    if not _DOTTED.fullmatch(text):
        return None
    return tuple(int(part) for part in text.split("."))


def _compare(a: tuple[int, ...], b: tuple[int, ...]) -> int:
    width = max(len(a), len(b))
    a, b = a + (0,) * (width - len(a)), b + (0,) * (width - len(b))
    return (a > b) - (a < b)


def _minimums() -> dict[tuple[int, int], str]:
    table: dict[tuple[int, int], str] = {}
    for release, _label, driver in TOOLKIT_DRIVERS:
        major, minor = (int(x) for x in release.split(".")[:2])
        known = table.get((major, minor))
        key = _driver_key(driver)
        if key is None:
            raise ValueError(f"cuda_table: driver {driver!r} of {release} is not a version")
        if known is None or _compare(key, _driver_key(known) or ()) < 0:
            table[(major, minor)] = driver
    return table


MIN_DRIVER: dict[tuple[int, int], str] = _minimums()
"""(major, minor) -> the oldest Linux x86_64 driver NVIDIA lists for any release of that minor."""


def _version(text: str) -> tuple[int, int] | None:
    match = _VERSION.fullmatch(text)
    if not match:
        return None
    return int(match.group(1)), int(match.group(2))


def parse_requirement(env: Mapping[str, str]) -> tuple[int, int] | None:
    """The CUDA (major, minor) an image needs, from its environment; None if none or unreadable.

    NVIDIA_REQUIRE_CUDA's first `cuda>=X.Y` term wins; without a `cuda` term there, CUDA_VERSION
    ("12.1.1"). A `cuda` term that is not `cuda>=X.Y[.Z]`, or a malformed CUDA_VERSION, gives None:
    the values come from a registry and are never guessed at. Never raises."""
    try:
        return _parse_requirement(env)
    except Exception:  # untrusted input: a bug here must not stop a rollout check
        return None


def _parse_requirement(env: Mapping[str, str]) -> tuple[int, int] | None:
    if not isinstance(env, Mapping):
        return None
    require = env.get("NVIDIA_REQUIRE_CUDA")
    if isinstance(require, str):
        for term in require.split():
            for condition in term.split(","):
                if not condition.startswith("cuda"):
                    continue
                if not condition.startswith("cuda>="):
                    return None
                return _version(condition[len("cuda>="):])
    elif require is not None:
        return None
    version = env.get("CUDA_VERSION")
    if version is None:
        return None
    if not isinstance(version, str):
        return None
    return _version(version.strip())


def min_driver(cuda: tuple[int, int]) -> str | None:
    """The minimum Linux driver for CUDA major.minor; None for a version not in rig's table."""
    try:
        return MIN_DRIVER.get((int(cuda[0]), int(cuda[1])))
    except (TypeError, ValueError, IndexError):
        return None


def driver_ok(found: str, needed: str) -> bool:
    """found >= needed, compared as dotted numbers ('535.129.03' >= '530.30.02').

    False when either is not a dotted number: an unreadable driver proves nothing."""
    a, b = _driver_key(found), _driver_key(needed)
    if a is None or b is None:
        return False
    return _compare(a, b) >= 0


def cuda_for_driver(driver: str) -> str | None:
    """The newest CUDA major.minor whose oldest listed driver is <= driver, e.g. '12.2' for
    535.129.03: what such a driver reports as "CUDA Version" as far as rig's table knows.
    None below the table's first row or for an unreadable driver."""
    key = _driver_key(driver)
    if key is None:
        return None
    fits = [cuda for cuda, needed in MIN_DRIVER.items() if _compare(key, _driver_key(needed)) >= 0]
    if not fits:
        return None
    major, minor = max(fits)
    return f"{major}.{minor}"


def _one_line(text: object, limit: int = 200) -> str:
    """Untrusted text for a one-line message: printable, no newlines, bounded."""
    flat = "".join(ch if ch.isprintable() else "?" for ch in str(text))
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def driver_problem(host: str, image: str, env: Mapping[str, str], driver: str | None) -> str | None:
    """One line when `image` cannot run its CUDA on `host`'s driver; None when it can, or when
    the image declares no CUDA at all.

    `driver` is what nvidia-smi reports (driver_version); None when the host has no working
    NVIDIA driver or GPU. An image whose CUDA declaration rig cannot read, or whose CUDA version
    is newer than rig's table, is a problem too: rig does not guess."""
    host, image = _one_line(host), _one_line(image)
    need = parse_requirement(env)
    if need is None:
        declared = {key: env.get(key) for key in ("NVIDIA_REQUIRE_CUDA", "CUDA_VERSION")
                    if isinstance(env, Mapping) and env.get(key) is not None}
        if not declared:
            return None
        shown = ", ".join(f"{key}={_one_line(value, 80)!r}" for key, value in declared.items())
        return f"{host}: {image} declares CUDA in a form rig cannot read ({shown})"
    cuda = f"{need[0]}.{need[1]}"
    needed = min_driver(need)
    if needed is None:
        return (f"{host}: {image} needs CUDA {cuda}: unknown CUDA version {cuda}: not in rig's "
                f"table ({SOURCE}); add its rows to rig/gpu/cuda_table.py")
    wants = f"{host}: {image} needs CUDA {cuda} (driver >= {needed})"
    if driver is None:
        return f"{wants}, {host} has no working NVIDIA driver (nvidia-smi cannot reach one)"
    if _driver_key(driver) is None:
        return f"{wants}, {host} reports driver {_one_line(driver, 60)!r}, which is not a version"
    if driver_ok(driver, needed):
        return None
    return (f"{wants}, {host} has driver {_one_line(driver, 60)} (GeForce cards have no forward "
            "compatibility: update the driver, or build on an older CUDA base)")
