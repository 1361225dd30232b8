"""Data every host carries in a plain `pyinfra inventory/<env>.py deploy.py` run. The spec
itself (host.data.rig_fleet) comes from the inventory file, loaded once there."""

ssh_connect_retries = 1
ssh_connect_retry_min_delay = 0.5
ssh_connect_retry_max_delay = 1
