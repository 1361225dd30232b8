"""The local lab: a Docker engine, a TLS+auth registry and SSH-reachable systemd hosts.

`Lab` (lab.py) pulls in the Docker SDK; it is imported only by `rig lab ...`, so every other
verb that reads the lab's layout or state (layout.py, state.py) does not pay for it."""
