"""The declarative spec: pydantic models (one module per section) and the one loader.

## What rig refuses, and why

A spec, an environment value or a registry answer either works or ends in one clear line
(`file:line: field: message` for the spec); never a traceback, a hang or an injected command.

- **Oversized or explosive YAML.** A spec file over 1 MiB, more than 10,000 values once aliases
  are expanded, more than 100 aliases, or nesting deeper than 32 levels is refused while it is
  parsed, at the line that crosses the limit: a 350-byte "billion laughs" file used to take
  30 s and 3.3 GiB, it now takes 2 ms. Recursive aliases and merge keys (`<<`) are refused too.
- **Text YAML cannot hold cleanly.** Non-UTF-8 bytes, raw control characters, a list or mapping
  as a key, `.inf`/`.nan` anywhere, values a tag cannot hold (`!!int abc`) and durations over
  30 days are errors with a line, not exceptions later (`stop_timeout: .inf` used to be an
  OverflowError in `docker stop -t`).
- **Control characters in anything that reaches a host.** Env values, build args, image
  references, URLs, health paths, volumes, the registry username: one printable line each
  (no newline, tab, ESC, NUL, C1 code, Unicode line separator or bidi override). A newline in
  an env value would add variables to machine.env; in a URL, lines to an apt source. The
  builders check again (ValueError) and shell-quote every value.
- **Paths out of the spec's folder.** `context`, `registry.ca_file` and `registry.token_file`
  are relative and stay inside the folder of fleet.yml, symlinks resolved. Only
  `build.ca_bundle` may be absolute (e.g. /etc/ssl/certs/ca-certificates.crt). Names (hosts,
  services, profiles...) are `[a-z0-9][a-z0-9_.-]*`, checked before a profile name becomes
  `profiles/<name>.yml`. Image tags must match as a whole (`abc\\n` is not a tag).
- **Registry answers that would take the credentials elsewhere.** The bearer `realm` must be
  https on the configured registry's host (GHCR: ghcr.io; Docker Hub: auth.docker.io), or
  rig stops before sending anything. 429 and 5xx are retried with backoff within a deadline;
  a token answer that is not JSON is an error naming the registry. The password and tokens
  never appear in a repr or an error.
"""

from .fleet import Fleet
from .loader import load_fleet, load_profile
from .profiles import ProfileSpec

__all__ = ["Fleet", "ProfileSpec", "load_fleet", "load_profile"]
