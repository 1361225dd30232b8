"""Rollouts: pre-flight, waves through pyinfra, health gates, rollback, ledger."""
