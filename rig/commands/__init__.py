"""Commands are data: pure functions from the spec to argv lists, shell lines and file contents.
Nothing here runs anything, so every builder is unit-tested as exact strings."""
