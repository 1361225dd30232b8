"""pyinfra deploys, facts and operations that rig runs on hosts (and deploy.py for plain pyinfra)."""
