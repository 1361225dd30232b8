"""The local lab made by `rig lab up`: mainpc, pc2 (and node3... with --hosts N) over SSH, as
the `ops` user with sudo. Groups come from fleet.yml (gpu, canary); addresses, keys and
known_hosts from .lab/state.json; every host carries the spec (fleet.yml + lab.yml), loaded once.
    pyinfra inventory/lab.py deploy.py
"""

from pathlib import Path

from rig.inventory import inventory_groups

globals().update(inventory_groups(Path(__file__).resolve().parent.parent, "lab"))
