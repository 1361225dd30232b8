"""The operations layer: one function per verb (bootstrap, build, plan, rollout, rollback,
status, verify, ...), each taking the loaded spec (a Job), the selected hosts and options,
driving the runner, and returning plain data the CLI prints or dumps as JSON."""
