"""The local lab made by `rig lab up`: mainpc, pc2 (and node3... with --hosts N) over SSH.

Groups come from fleet.yml (gpu, canary); addresses, keys and known_hosts from .lab/state.json.
    pyinfra inventory/lab.py deploy.py
"""

from pathlib import Path

from rig.inventory import lab_groups

globals().update(lab_groups(Path(__file__).resolve().parent.parent))
