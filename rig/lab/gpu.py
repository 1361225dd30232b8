"""The state the lab's stand-in nvidia-smi (rig/lab/nvidia_smi.py) answers from: pure data.

A lab host plays a machine profile's GPU: its name, compute capability and memory come from the
profile (profiles/<machine>.yml), the driver and its CUDA version from the lab scenario.
"""

from __future__ import annotations

import uuid as _uuid
from typing import Any

from ..gpu.cuda import cuda_for_driver

STATE_PATH = "/etc/rig-lab/gpu.json"
"""Where the stand-in reads its state on a lab host (RIG_LAB_GPU_STATE overrides it)."""
STANDIN_PATH = "/usr/local/bin/nvidia-smi"
"""Where rig installs the stand-in on a lab host."""
DEFAULT_DRIVER = "535.129.03"
"""The lab's driver unless a scenario names another: a 535 driver, CUDA 12.2."""

_NAMESPACE = _uuid.UUID("5d1c2f7e-9a41-4f4b-8a36-2f0d6c1e7b90")  # rig lab stand-in GPUs


def standin_uuid(model: str) -> str:
    """A stable, well-formed GPU UUID for a model ("GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx")."""
    return f"GPU-{_uuid.uuid5(_NAMESPACE, model)}"


def standin_state(profile_gpu: Any, driver: str | None = None, used_mib: int | None = None,
                  missing: bool | None = None, current: dict | None = None) -> dict:
    """The stand-in's JSON state for a profile's GPU (an object with .model, .compute_cap and
    .memory_mib, as rig.config.profiles.GpuSpec).

    `current` is the state found on the host (None for a fresh one): its uuid, driver, used_mib,
    missing flag and apps are kept unless an argument replaces them; the GPU itself always
    follows the profile. The CUDA version is the one the driver supports per rig's table (as
    nvidia-smi's banner would show it), "N/A" below the table. `current` is not modified."""
    current = dict(current or {})
    chosen_driver = driver if driver is not None else current.get("driver") or DEFAULT_DRIVER
    chosen_used = used_mib if used_mib is not None else current.get("used_mib", 0)
    chosen_missing = missing if missing is not None else current.get("missing", False)
    apps = [dict(app) for app in current.get("apps") or [] if isinstance(app, dict)]
    return {
        "name": profile_gpu.model,
        "uuid": current.get("uuid") or standin_uuid(profile_gpu.model),
        "memory_mib": int(profile_gpu.memory_mib),
        "compute_cap": profile_gpu.compute_cap,
        "driver": chosen_driver,
        "cuda": cuda_for_driver(chosen_driver) or "N/A",
        "used_mib": int(chosen_used),
        "missing": bool(chosen_missing),
        "apps": apps,
    }
