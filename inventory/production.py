"""The real fleet: MainPC and PC2. Groups come from fleet.yml (gpu, canary).

Addresses are not committed: set RIG_HOST_MAINPC=ops@192.168.1.10 (user@address[:port]) and
RIG_HOST_PC2=..., or write inventory/hosts.local.yml (git-ignored):
    mainpc: {address: 192.168.1.10, user: ops}            # sudo implied: ops is not root
    pc2: {address: 192.168.1.11, user: ops, key: ~/.ssh/id_ops}
Host keys are checked strictly against ~/.ssh/known_hosts (RIG_KNOWN_HOSTS): `rig hosts trust`.
    pyinfra inventory/production.py deploy.py
"""

from pathlib import Path

from rig.inventory import inventory_groups

globals().update(inventory_groups(Path(__file__).resolve().parent.parent, "production"))
