"""Data every host carries: the validated fleet spec (host.data.rig_fleet) and SSH defaults.

Inventories named after an environment (lab.py) override rig_fleet in group_data/<name>.py."""

from pathlib import Path

from rig.config import load_fleet

rig_fleet = load_fleet(Path(__file__).resolve().parent.parent / "fleet.yml")
ssh_connect_retries = 1
ssh_connect_retry_min_delay = 0.5
ssh_connect_retry_max_delay = 1
