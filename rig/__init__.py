"""rig: declarative provisioning and rollout for a small GPU fleet, built on pyinfra 3."""

__version__ = "0.1.0"
