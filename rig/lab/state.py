"""state.json: what `rig lab up` made, read by inventory/lab.py, `rig lab down` and tests."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

from .layout import LabPaths


@dataclass
class LabState:
    docker_host: str = ""
    engine_owned: bool = False
    certs_d: str = ""                      # control-machine certs.d folder the lab created
    hosts: dict[str, str] = field(default_factory=dict)   # name -> address

    @classmethod
    def load(cls, paths: LabPaths) -> LabState | None:
        try:
            return cls(**json.loads(paths.state_file.read_text()))
        except FileNotFoundError:
            return None

    def save(self, paths: LabPaths) -> None:
        paths.root.mkdir(parents=True, exist_ok=True)
        tmp = paths.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2) + "\n")
        tmp.replace(paths.state_file)
