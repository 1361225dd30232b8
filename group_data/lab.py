"""The lab's hosts carry the spec with the lab overlay (lab.yml) and the lab's extra nodes."""

from pathlib import Path

from rig.inventory import lab_fleet

rig_fleet = lab_fleet(Path(__file__).resolve().parent.parent)
