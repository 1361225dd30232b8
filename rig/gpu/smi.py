"""The nvidia-smi queries rig runs on a host, and parsers for what they print.

Field names are nvidia-smi's own (`nvidia-smi --help-query-gpu`, `--help-query-compute-apps`):
`index`, `uuid`, `name`, `compute_cap` ("The CUDA Compute Capability, represented as Major DOT
Minor"; drivers before it existed answer '"compute_cap" is not a valid field to query'),
`memory.total`, `memory.used`, `driver_version` (still valid in the 610 driver, whose help calls
it deprecated in favour of `kmd_version`); `gpu_uuid`, `pid`, `process_name`, `used_memory` (an
alias of `used_gpu_memory`). With `--format=csv,noheader,nounits` each GPU or process is one line,
values separated by ", ", memory in MiB without unit; a value the driver cannot give reads
"[N/A]" or "[Not Supported]" ("N/A" in older drivers).

The CUDA version the driver supports has no query field; the plain `nvidia-smi` table prints it
in its banner: "Driver Version: 535.129.03   CUDA Version: 12.2" (driver 610 renamed both:
"KMD Version: 610.57.04     CUDA UMD Version: 13.3").

Recorded outputs: tests/unit/fixtures/gpu/smi-*.txt (each names its source).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

GPU_QUERY = ("nvidia-smi --query-gpu=index,uuid,name,compute_cap,memory.total,memory.used,"
             "driver_version --format=csv,noheader,nounits")
APPS_QUERY = ("nvidia-smi --query-compute-apps=gpu_uuid,pid,process_name,used_memory "
              "--format=csv,noheader,nounits")
HEADER_QUERY = "nvidia-smi"

NO_DRIVER = ("NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. "
             "Make sure that the latest NVIDIA driver is installed and running.")
"""nvidia-smi's words when no driver answers; it then exits 9 ("Return code 9 - NVIDIA driver
is not loaded", nvidia-smi(1))."""

_FAILURES = (
    re.compile(r"NVIDIA-SMI has failed because it couldn.t communicate with the NVIDIA driver"),
    # e.g. "Failed to initialize NVML: Driver/library version mismatch" after a driver upgrade
    # without a reboot (exit 18)
    re.compile(r"^Failed to initialize NVML: ", re.MULTILINE),
)
_NOT_AVAILABLE = {"[N/A]", "N/A", "[Not Supported]", "Not Supported", ""}
_INT = re.compile(r"[0-9]{1,12}")
_HEADER_CUDA = re.compile(r"CUDA (?:UMD )?Version:\s*([0-9]{1,3}\.[0-9]{1,3})\b")
_HEADER_DRIVER = re.compile(r"(?:Driver|KMD) Version:\s*([0-9]{1,4}(?:\.[0-9]{1,4}){1,3})\b")


@dataclass(frozen=True)
class Gpu:
    index: int
    uuid: str
    name: str
    compute_cap: str | None  # "8.9"; None when nvidia-smi says [N/A]
    memory_total_mib: int | None
    memory_used_mib: int | None
    driver: str | None


@dataclass(frozen=True)
class App:
    gpu_uuid: str
    pid: int
    name: str
    used_mib: int | None  # None when nvidia-smi says [N/A] (it does on Windows WDDM)


def smi_failed(text: str) -> bool:
    """True when nvidia-smi's output is its no-driver failure (or NVML could not start)."""
    if not isinstance(text, str):
        return False
    return any(pattern.search(text) for pattern in _FAILURES)


def _value(text: str) -> str | None:
    text = text.strip()
    return None if text in _NOT_AVAILABLE else text


def _mib(text: str) -> int | None:
    value = _value(text)
    if value is None:
        return None
    value = value.removesuffix("MiB").strip()
    return int(value) if _INT.fullmatch(value) else None


def _lines(text: str) -> list[str]:
    if not isinstance(text, str) or smi_failed(text):
        return []
    return [line.strip() for line in text.splitlines() if line.strip()]


def parse_gpus(text: str) -> list[Gpu]:
    """GPU_QUERY's output: one Gpu a line; [] when nvidia-smi failed. Lines that are not seven
    values with an integer index and a GPU-/MIG- uuid are skipped."""
    gpus = []
    for line in _lines(text):
        parts = [part.strip() for part in line.split(",")]
        if len(parts) != 7:
            continue
        index, uuid, name, cap, total, used, driver = parts
        if not _INT.fullmatch(index) or not uuid.startswith(("GPU-", "MIG-")) or not name:
            continue
        gpus.append(Gpu(int(index), uuid, name, _value(cap), _mib(total), _mib(used),
                        _value(driver)))
    return gpus


def parse_apps(text: str) -> list[App]:
    """APPS_QUERY's output: one App a line; [] when none runs or nvidia-smi failed.

    A process name may itself contain ", " (nvidia-smi does not quote it): the first two values
    and the last one are taken, the name is what lies between."""
    apps = []
    for line in _lines(text):
        head = line.split(", ", 2)
        if len(head) != 3:
            continue
        uuid, pid, rest = head
        name, sep, used = rest.rpartition(", ")
        if not sep or not uuid.startswith(("GPU-", "MIG-")) or not _INT.fullmatch(pid.strip()):
            continue
        apps.append(App(uuid.strip(), int(pid), name.strip(), _mib(used)))
    return apps


def parse_header_cuda(text: str) -> str | None:
    """"12.2" from the plain nvidia-smi banner ("CUDA Version: 12.2", or "CUDA UMD Version:" from
    driver 610 on); None when absent, "N/A", or nvidia-smi failed."""
    if not isinstance(text, str) or smi_failed(text):
        return None
    match = _HEADER_CUDA.search(text)
    return match.group(1) if match else None


def parse_header_driver(text: str) -> str | None:
    """"535.129.03" from the plain nvidia-smi banner ("Driver Version:", or "KMD Version:")."""
    if not isinstance(text, str) or smi_failed(text):
        return None
    match = _HEADER_DRIVER.search(text)
    return match.group(1) if match else None
