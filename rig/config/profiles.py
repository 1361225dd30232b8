"""`profiles/<machine>.yml`: what a machine is, for builds (ARG MACHINE) and for containers."""

from __future__ import annotations

import hashlib
import json

from pydantic import Field, model_validator

from .base import EnvName, Line, Name, StrictModel, Text


class GpuSpec(StrictModel):
    model: Line = Field(description="Name as nvidia-smi prints it, e.g. NVIDIA GeForce RTX 4090")
    compute_cap: str = Field(pattern=r"^[0-9]{1,2}\.[0-9]{1,2}$",
                             description="Compute capability, e.g. 8.9")
    memory_mib: int = Field(gt=0, le=2**31, description="Memory as nvidia-smi reports it, in MiB")


class ProfileSpec(StrictModel):
    name: Name = Field(description="Must match the file name")
    description: Text = Field(default="", description="Human summary of the machine")
    gpu: GpuSpec | None = Field(default=None, description="The GPU; empty for CPU-only machines")
    cuda_arch: str | None = Field(
        default=None, pattern=r"^[0-9]{1,2}\.[0-9]{1,2}$",
        description="CUDA arch built for (sm_XY as X.Y)",
    )
    threads: int = Field(ge=1, le=1024, description="CPU threads services may use")
    workers: int = Field(ge=1, le=256, description="Worker processes per service")
    build_args: dict[EnvName, Line] = Field(
        default_factory=dict, description="Extra build args for per-machine builds (one line each)"
    )
    env: dict[EnvName, Line] = Field(
        default_factory=dict,
        description="Extra container env, written to /etc/rig/machine.env (one line per value)",
    )

    @model_validator(mode="after")
    def _gpu_and_arch_agree(self) -> ProfileSpec:
        if self.gpu and self.cuda_arch and self.gpu.compute_cap != self.cuda_arch:
            raise ValueError(
                f"cuda_arch {self.cuda_arch} does not match gpu.compute_cap {self.gpu.compute_cap}"
            )
        if self.gpu and not self.cuda_arch:
            raise ValueError("a profile with a gpu needs cuda_arch")
        return self

    def runtime_env(self) -> dict[str, str]:
        """Environment every service container on this machine gets."""
        env = {
            "RIG_MACHINE": self.name,
            "RIG_THREADS": str(self.threads),
            "RIG_WORKERS": str(self.workers),
            "OMP_NUM_THREADS": str(self.threads),
        }
        if self.cuda_arch:
            env["RIG_CUDA_ARCH"] = self.cuda_arch
            env["TORCH_CUDA_ARCH_LIST"] = self.cuda_arch
        env.update(self.env)
        return env

    def build_env(self) -> dict[str, str]:
        """Build args for a per-machine image (ARG MACHINE and friends)."""
        args = {"MACHINE": self.name}
        if self.cuda_arch:
            args["CUDA_ARCH"] = self.cuda_arch
        args.update(self.build_args)
        return args

    def document(self) -> dict:
        """The JSON written to /etc/rig/machine-profile.json."""
        return self.model_dump(mode="json")

    def content_hash(self) -> str:
        """sha256 of the canonical JSON: tells which profile a container was started with."""
        canonical = json.dumps(self.document(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()
