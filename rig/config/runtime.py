"""How a service container runs: resources, security, GPUs, caches, logs, secrets.

Three layers, later wins key by key: the fleet's `defaults:`, the service's `runtime:`, and the
service's `by_profile: {<profile>: {...}}` (PC2's 3060 gets less than MainPC's 4090). What no
layer sets comes from SECURE: a read-only root with a /tmp tmpfs, every capability dropped, no
new privileges. `Runtime` is the resolved result, the one thing `docker run` is built from."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, BeforeValidator, Field, PlainValidator, field_validator, model_validator

from .base import Duration, EnvName, Name, SpecPathOrAbsolute, StrictModel

_SIZE = re.compile(r"([0-9]+(?:\.[0-9]+)?)([bkmg]?)")
_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3}
MAX_SIZE = 1024**5  # 1 PiB: larger is a typo, not a machine


def parse_size(value: object) -> int:
    """'512m', '8g', '1.5g', '65536k' or a number of bytes -> bytes (docker's units: k, m, g
    are powers of 1024). `12 GB`, `8GiB` and negative numbers are refused."""
    size: float | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        size = value
    elif isinstance(value, str) and len(value) < 32:
        match = _SIZE.fullmatch(value.strip().lower())
        if match:
            size = float(match.group(1)) * _UNITS[match.group(2)]
    if size is None or size <= 0 or size > MAX_SIZE:
        raise ValueError("expected a size such as 512m, 8g or 1.5g (k, m, g: KiB, MiB, GiB) "
                         "or a number of bytes")
    return int(size)


def show_size(size: int) -> str:
    """Bytes as docker writes them: 8g, 512m, 64k, else the number."""
    for unit in ("g", "m", "k"):
        if size % _UNITS[unit] == 0:
            return f"{size // _UNITS[unit]}{unit}"
    return str(size)


Size = Annotated[int, BeforeValidator(parse_size)]
"""Bytes; written as 512m, 8g, 1.5g or a number of bytes."""


def parse_size_or_zero(value: object) -> int:
    """A size, or 0 (nothing: e.g. no GPU memory held back)."""
    if isinstance(value, bool):
        raise ValueError("expected 0, a size such as 512m, 1g or 1.5g, or a number of bytes")
    if value == 0:
        return 0
    match = _SIZE.fullmatch(value.strip().lower()) if isinstance(value, str) and len(value) < 32 \
        else None
    if match and float(match.group(1)) == 0:
        return 0
    try:
        return parse_size(value)
    except ValueError:
        raise ValueError("expected 0, a size such as 512m, 1g or 1.5g (k, m, g: KiB, MiB, GiB) "
                         "or a number of bytes") from None


SizeOrZero = Annotated[int, BeforeValidator(parse_size_or_zero)]

def _matching(pattern: str, expected: str):
    compiled = re.compile(pattern)

    def check(value: str) -> str:
        if not compiled.fullmatch(value):
            raise ValueError(f"{value[:40]!r}: expected {expected}")
        return value
    return AfterValidator(check)


Capability = Annotated[str, Field(max_length=40), _matching(
    r"ALL|(CAP_)?[A-Z][A-Z_]{1,30}", "a capability such as NET_BIND_SERVICE (upper case), or ALL")]
"""A Linux capability as docker names it: NET_BIND_SERVICE (or CAP_NET_BIND_SERVICE), or ALL."""

TmpfsMount = Annotated[str, Field(max_length=256), _matching(
    r"/[A-Za-z0-9._/-]*(:[a-z0-9=,]+)?", "an absolute path such as /tmp, or /tmp:size=256m")]
"""`/tmp` or `/tmp:size=256m,mode=1777`: a tmpfs on a read-only root."""

UlimitName = Literal["nofile", "memlock", "nproc", "core", "stack", "fsize", "msgqueue"]


class Ulimit(StrictModel):
    soft: int = Field(ge=-1, le=2**62, description="Soft limit (-1: unlimited)")
    hard: int = Field(ge=-1, le=2**62, description="Hard limit (-1: unlimited)")

    @model_validator(mode="before")
    @classmethod
    def _one_number(cls, value):
        """`nofile: 65536` sets both; `unlimited` is -1."""
        if value == "unlimited":
            value = -1
        if isinstance(value, int) and not isinstance(value, bool):
            return {"soft": value, "hard": value}
        return value

    @model_validator(mode="after")
    def _soft_within_hard(self) -> Ulimit:
        if self.hard != -1 and (self.soft == -1 or self.soft > self.hard):
            raise ValueError(f"soft limit {self.soft} is above the hard limit {self.hard}")
        return self

    def show(self) -> str:
        def word(n: int) -> str:
            return "unlimited" if n == -1 else str(n)
        return word(self.soft) if self.soft == self.hard else f"{word(self.soft)}:{word(self.hard)}"


def parse_gpus(value: object) -> str | list[int]:
    """all, none, or a list of distinct device indices 0..63."""
    if value in ("all", "none"):
        return value
    if isinstance(value, list) and value and all(
            isinstance(i, int) and not isinstance(i, bool) and 0 <= i <= 63 for i in value) \
            and len(set(value)) == len(value):
        return list(value)
    raise ValueError("expected all, none, or distinct device indices such as [0] or [0, 1]")


Gpus = Annotated[str | list[int], PlainValidator(parse_gpus)]


class RuntimeSpec(StrictModel):
    """One layer of runtime settings; a field left out is taken from the layer below."""

    memory: Size | None = Field(default=None, description="Hard memory limit (docker --memory)")
    memory_reservation: Size | None = Field(
        default=None, description="Soft memory limit the kernel reclaims towards under pressure")
    cpus: float | None = Field(default=None, gt=0, le=1024, description="CPU share (--cpus)")
    shm_size: Size | None = Field(
        default=None, description="/dev/shm size (PyTorch data loaders need more than 64m)")
    pids: int | None = Field(default=None, ge=16, le=4_194_304,
                             description="Most processes and threads the container may have")
    ulimits: dict[UlimitName, Ulimit] | None = Field(
        default=None, description="nofile, memlock, ...: a number (soft = hard), `unlimited`, "
        "or {soft, hard}; merged name by name over the layer below")
    read_only: bool | None = Field(default=None, description="Read-only root filesystem")
    tmpfs: list[TmpfsMount] | None = Field(
        default=None, description="Writable tmpfs mounts on the read-only root (default /tmp)")
    cap_drop: list[Capability] | None = Field(default=None, description="Default [ALL]")
    cap_add: list[Capability] | None = Field(
        default=None, description="Capabilities given back after cap_drop (default none)")
    no_new_privileges: bool | None = Field(
        default=None, description="setuid binaries cannot gain privileges (default true)")
    gpus: Gpus | None = Field(
        default=None, description="all, none, or device indices such as [1]; on a GPU host a "
        "service with none sees no GPU at all (NVIDIA_VISIBLE_DEVICES=void)")
    cache_volume: Name | None = Field(
        default=None, description="Named volume at /cache for model caches (HF_HOME, TORCH_HOME)")
    log_volume: Name | None = Field(
        default=None, description="Named volume at /logs the service writes its log file to")
    stop_timeout: Duration | None = Field(
        default=None, description="Seconds `docker stop` waits before SIGKILL (default: "
        "rollout.stop_timeout)")
    gpu_memory: Size | None = Field(
        default=None, description="GPU memory the service needs once its model is loaded "
        "(8g): checked against the card's memory by `rig validate` (what a host's services "
        "declare together must fit) and before a start (what is free now)")
    strategy: Literal["auto", "start_first", "stop_first"] | None = Field(
        default=None, description="How a rollout swaps the service behind the host's proxy: "
        "start_first (the new container beside the old, switched to once its gate passes, the "
        "old drained), stop_first (the proxy answers 503 maintenance while the old stops and "
        "the new loads), auto (start_first where the GPU memory allows two copies). Default: "
        "rollout.strategy")
    drain: Duration | None = Field(
        default=None, description="How long the old container keeps its open connections "
        "(WebSocket streams) after the switch before it is stopped (default: rollout.drain)")

    @field_validator("cap_drop", "cap_add")
    @classmethod
    def _plain_names(cls, caps: list[str] | None) -> list[str] | None:
        """CAP_SYS_NICE and SYS_NICE are the same capability: compared without the prefix."""
        return None if caps is None else [c.removeprefix("CAP_") for c in caps]


SECURE = RuntimeSpec(read_only=True, tmpfs=["/tmp"], cap_drop=["ALL"], cap_add=[],
                     no_new_privileges=True, ulimits={})
"""What a service gets when no layer says otherwise."""


DECLARED = ("gpu_memory", "strategy", "drain")


class Runtime(StrictModel):
    """The resolved settings of one service on one machine profile."""

    memory: int | None = None
    memory_reservation: int | None = None
    cpus: float | None = None
    shm_size: int | None = None
    pids: int | None = None
    ulimits: dict[str, Ulimit] = Field(default_factory=dict)
    read_only: bool = True
    tmpfs: list[str] = Field(default_factory=list)
    cap_drop: list[str] = Field(default_factory=list)
    cap_add: list[str] = Field(default_factory=list)
    no_new_privileges: bool = True
    gpus: Gpus = "none"
    cache_volume: str | None = None
    log_volume: str | None = None
    stop_timeout: float = 10.0
    gpu_memory: int | None = None   # declared, not a container setting: not in describe()
    strategy: str | None = None     # declared too: how it is swapped, not how it runs
    drain: float | None = None

    def describe(self) -> dict[str, str]:
        """Setting -> how an operator writes it (`memory: 8g`), for plans and labels. What a
        service only declares (gpu_memory) is no container setting and changes no container."""
        shown: dict[str, str] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if value is None or value == [] or value == {} or name in DECLARED:
                continue
            if name in ("memory", "memory_reservation", "shm_size"):
                shown[name] = show_size(value)
            elif name == "ulimits":
                for key, limit in sorted(value.items()):
                    shown[f"ulimit {key}"] = limit.show()
            elif isinstance(value, list):
                shown[name] = ",".join(str(v) for v in value)
            elif isinstance(value, bool):
                shown[name] = "true" if value else "false"
            else:
                shown[name] = f"{value:g}" if isinstance(value, float) else str(value)
        return shown


def resolve(layers: list[RuntimeSpec], gpu_shorthand: bool, stop_timeout: float) -> Runtime:
    """SECURE, then each layer over it (ulimits merged by name); `gpu: true` on the service is
    shorthand for gpus: all when no layer names gpus."""
    values: dict = {"gpus": "all" if gpu_shorthand else "none", "stop_timeout": stop_timeout}
    for layer in [SECURE, *layers]:
        for name in layer.model_fields_set:
            value = getattr(layer, name)
            if value is None:
                continue
            if name == "ulimits":
                values["ulimits"] = {**values.get("ulimits", {}), **value}
            else:
                values[name] = value
    return Runtime(**values)


class SecretSource(StrictModel):
    """Where the control machine reads one secret: an environment variable, else a file."""

    env: EnvName | None = Field(default=None, description="Environment variable holding it")
    file: SpecPathOrAbsolute | None = Field(
        default=None, description="A file of mode 0600 holding it (read when env is unset); "
        "absolute, or relative to the spec (keep it out of git)")

    @model_validator(mode="after")
    def _somewhere(self) -> SecretSource:
        if not self.env and not self.file:
            raise ValueError("a secret needs env: VARIABLE or file: PATH (or both: env first)")
        return self
