"""A small Docker Registry HTTP API v2 client: existence and digests of manifests.

Handles both auth schemes met in practice: HTTP basic (the lab's htpasswd registry) and the
bearer-token exchange GHCR and Docker Hub use (401 with `WWW-Authenticate: Bearer realm=...`,
then GET realm?service=...&scope=repository:<repo>:pull with basic credentials).

What it does not trust in a registry's answers:

- the bearer `realm` receives the credentials, so it must be https and on the configured
  host (or, for a few well-known registries, their own token host: TOKEN_HOSTS);
- a 429 or 5xx answer is retried with exponential backoff (a Retry-After of up to
  `max_retry_after` seconds is honoured), all within `deadline` seconds per call;
- an answer body is read with a size cap (MAX_BODY) and the same deadline;
- anything unexpected (a token answer that is not JSON, no token in it) is a one-line
  RigError naming the registry and what it answered. The password and tokens never appear
  in a repr or an error message.
"""

from __future__ import annotations

import base64
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import requests

from .errors import RigError

MANIFEST_TYPES = ", ".join(
    [
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    ]
)
_CHALLENGE_PARAM = re.compile(r'(\w+)="([^"]*)"')
_TOKEN = re.compile(r"[A-Za-z0-9._~+/=-]+")  # RFC 6750 b64token: safe in a header
_UNPRINTABLE = re.compile(r"[^\x20-\x7e]")

TOKEN_HOSTS: dict[str, tuple[str, ...]] = {
    "ghcr.io": ("ghcr.io",),
    "docker.io": ("auth.docker.io",),
    "registry-1.docker.io": ("auth.docker.io",),
}
"""Token hosts a registry may send credentials to besides itself (its `realm`)."""

MAX_BODY = 4 * 1024 * 1024  # the OCI distribution spec's manifest limit; tokens are far smaller


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """'Bearer realm="https://ghcr.io/token",service="ghcr.io"' -> ('bearer', {...})."""
    scheme, _, params = header.strip().partition(" ")
    return scheme.lower(), dict(_CHALLENGE_PARAM.findall(params))


def _retryable(status: int) -> bool:
    return status == 429 or status >= 500


@dataclass
class RegistryClient:
    host: str
    username: str
    password: str = field(repr=False)
    ca_file: str | None = None
    timeout: float = 10.0
    deadline: float = 60.0
    """Seconds one call (ping, manifest_digest, copy_manifest) may take, retries included."""
    retries: int = 4
    """Retries of a 429 or 5xx answer, waiting backoff, 2*backoff, 4*backoff... in between."""
    backoff: float = 0.5
    max_retry_after: float = 10.0
    """A Retry-After up to this long is waited for; a longer one ends the call with an error."""
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._session = requests.Session()
        # Per request, not on the session: requests lets REQUESTS_CA_BUNDLE in the environment
        # override a session's verify, which would silently drop the registry's CA.
        self._verify: str | bool = self.ca_file or True
        self._tokens: dict[str, str] = {}

    @property
    def base(self) -> str:
        return f"https://{self.host}/v2/"

    def ping(self) -> None:
        """Raise RigError unless the registry answers and accepts the credentials."""
        response = self._request("GET", self.base, scope="", until=self._until())
        if response.status_code != 200:
            raise self._error(f"GET /v2/ answered {_status(response)}")

    def manifest_digest(self, repository: str, tag: str) -> str | None:
        """Docker-Content-Digest of repository:tag, or None when the tag does not exist."""
        url = f"{self.base}{repository}/manifests/{tag}"
        response = self._request("HEAD", url, scope=f"repository:{repository}:pull",
                                 headers={"Accept": MANIFEST_TYPES}, until=self._until())
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise self._error(f"HEAD {repository}:{tag} -> {_status(response)}")
        digest = response.headers.get("Docker-Content-Digest")
        if not digest:
            raise self._error(f"no Docker-Content-Digest for {repository}:{tag}")
        return digest

    def copy_manifest(self, repository: str, source_tag: str, target_tag: str) -> str:
        """Give the manifest at source_tag a second tag, inside the registry (no layers move).
        Returns its digest."""
        until = self._until()
        scope = f"repository:{repository}:pull,push"
        url = f"{self.base}{repository}/manifests/"
        got = self._request("GET", url + source_tag, scope=scope,
                            headers={"Accept": MANIFEST_TYPES}, until=until)
        if got.status_code != 200:
            raise self._error(f"GET {repository}:{source_tag} -> {_status(got)}")
        media_type = got.headers.get("Content-Type", "application/vnd.oci.image.manifest.v1+json")
        put = self._request("PUT", url + target_tag, scope=scope,
                            headers={"Content-Type": media_type}, data=got.content, until=until)
        if put.status_code not in (200, 201):
            raise self._error(f"PUT {repository}:{target_tag} -> {_status(put)}")
        return put.headers.get("Docker-Content-Digest") or got.headers.get("Docker-Content-Digest", "")

    # -- auth ---------------------------------------------------------------------------------
    def _request(self, method: str, url: str, scope: str, until: float, headers=None,
                 data=None) -> requests.Response:
        headers = dict(headers or {})
        token = self._tokens.get(scope)
        if token:
            headers["Authorization"] = f"Bearer {token}"
        response = self._send(method, url, headers, until, data=data)
        if response.status_code != 401:
            return response
        scheme, params = parse_challenge(response.headers.get("WWW-Authenticate", ""))
        if scheme == "basic":
            response = self._send(method, url, headers, until,
                                  auth=(self.username, self.password), data=data)
            if response.status_code == 401:
                raise self._error(f"credentials refused for {self.username}")
            return response
        if scheme == "bearer":
            self._tokens[scope] = self._fetch_token(params, scope, until)
            headers["Authorization"] = f"Bearer {self._tokens[scope]}"
            return self._send(method, url, headers, until, data=data)
        raise self._error(f"unsupported auth challenge {_show(scheme)}")

    def _fetch_token(self, params: dict[str, str], scope: str, until: float) -> str:
        realm = params.get("realm")
        if not realm:
            raise self._error("bearer challenge without realm")
        self._check_realm(realm)
        query = {"service": params.get("service", "")}
        if scope:
            query["scope"] = scope
        response = self._send("GET", realm, {}, until, auth=(self.username, self.password),
                              params=query, redirects=False, what="token request")
        if response.status_code in (401, 403):
            raise self._error(f"token request refused ({response.status_code}); "
                              "check the username and token")
        if response.status_code != 200:
            raise self._error(f"token request answered {_status(response)}")
        try:
            body = response.json()
        except ValueError:
            raise self._error(f"token request answered {_status(response)} with something that "
                              f"is not JSON ({_excerpt(response)})") from None
        token = body.get("token") or body.get("access_token") if isinstance(body, dict) else None
        if not token:
            raise self._error("token response without a token")
        if not isinstance(token, str) or not _TOKEN.fullmatch(token):
            raise self._error("token response holds a token that is not a plain string")
        return token

    def _check_realm(self, realm: str) -> None:
        """The realm gets our basic credentials: https, no user info, and an allowed host."""
        try:
            parts = urlsplit(realm)
            port = parts.port
        except ValueError:
            raise self._error(f"bearer realm {_show(realm)} is not a URL") from None
        if parts.scheme != "https":
            raise self._error(f"bearer realm {_show(realm)} is not https; "
                              "credentials are not sent there")
        if parts.username is not None or parts.password is not None:
            raise self._error(f"bearer realm {_show(realm)} has user info; "
                              "credentials are not sent there")
        netloc = _netloc(parts.hostname or "", port)
        own = _netloc(*_split_host(self.host))
        allowed = (own, *TOKEN_HOSTS.get(own, ()))
        if netloc not in allowed:
            raise self._error(f"bearer realm {_show(realm)} is not on {' or '.join(allowed)}; "
                              "credentials are not sent there")

    # -- transport ------------------------------------------------------------------------------
    def _until(self) -> float:
        return time.monotonic() + self.deadline

    def _send(self, method: str, url: str, headers: dict, until: float, auth=None, data=None,
              params=None, redirects: bool = True, what: str = "") -> requests.Response:
        """One request, retried on 429 and 5xx while retries and the deadline last."""
        what = what or f"{method} {urlsplit(url).path}"
        for attempt in range(1, max(self.retries, 0) + 2):
            remaining = until - time.monotonic()
            if remaining <= 0:
                raise self._error(f"{what}: no answer within {self.deadline:g} s")
            wait = min(self.timeout, remaining)
            try:
                response = self._session.request(
                    method, url, headers=headers, auth=auth, data=data, params=params,
                    timeout=wait, verify=self._verify, allow_redirects=redirects, stream=True,
                )
                self._read_body(response, until, what)
            except requests.exceptions.SSLError as e:
                raise self._error(f"TLS verification failed: {_one_line(e)}") from None
            except (requests.RequestException, ValueError, UnicodeError) as e:
                raise self._error(f"{what}: no answer: {_one_line(e)}") from None
            if not _retryable(response.status_code):
                return response
            delay, why = self._retry_delay(response, attempt, until)
            if delay is None:
                raise self._error(f"{what} answered {_status(response)} "
                                  f"({attempt} {'try' if attempt == 1 else 'tries'}{why})")
            _close(response)
            self.sleep(delay)
        raise AssertionError("unreachable")  # the last attempt returns or raises

    def _retry_delay(self, response: requests.Response, attempt: int,
                     until: float) -> tuple[float | None, str]:
        """Seconds to wait before the next attempt, or None (and why) to stop."""
        if attempt > self.retries:
            return None, ""
        delay = self.backoff * 2 ** (attempt - 1)
        asked = response.headers.get("Retry-After", "").strip()
        if asked.isdigit():
            if int(asked) > self.max_retry_after:
                return None, f"; it asks to wait {int(asked)} s"
            delay = float(asked)
        if time.monotonic() + delay >= until:
            return None, f"; the {self.deadline:g} s deadline is near"
        return delay, ""

    def _read_body(self, response: requests.Response, until: float, what: str) -> None:
        """Read the body now, at most MAX_BODY bytes, within the deadline."""
        if getattr(response, "_content", False) is not False:
            return  # already in memory (a transport adapter that is not a socket)
        chunks, size = [], 0
        for chunk in response.iter_content(64 * 1024):
            size += len(chunk)
            if size > MAX_BODY:
                _close(response)
                raise self._error(f"{what}: answer larger than {MAX_BODY} bytes")
            if time.monotonic() > until:
                _close(response)
                raise self._error(f"{what}: answer not complete within {self.deadline:g} s")
            chunks.append(chunk)
        response._content = b"".join(chunks)

    def _error(self, message: str) -> RigError:
        """A one-line RigError naming the registry, with any secret replaced by ***."""
        secrets = [self.password, *self._tokens.values()]
        if self.password:
            pair = f"{self.username}:{self.password}".encode()
            secrets.append(base64.b64encode(pair).decode())
        for secret in secrets:
            if secret:
                message = message.replace(secret, "***")
        return RigError(_UNPRINTABLE.sub("?", f"registry {self.host}: {message}")[:400])


def _close(response: requests.Response) -> None:
    if response.raw is not None:
        response.close()


def _split_host(host: str) -> tuple[str, int | None]:
    name, _, port = host.lower().partition(":")
    return name, int(port) if port.isdigit() else None


def _netloc(hostname: str, port: int | None) -> str:
    return hostname.lower() if port in (None, 443) else f"{hostname.lower()}:{port}"


def _status(response: requests.Response) -> str:
    return f"{response.status_code} {_UNPRINTABLE.sub('', response.reason or '')[:60]}".strip()


def _show(text: str, width: int = 80) -> str:
    shown = repr(text)
    return shown if len(shown) <= width else shown[: width - 3] + "..."


def _excerpt(response: requests.Response) -> str:
    kind = _UNPRINTABLE.sub("", response.headers.get("Content-Type", "no content type"))[:60]
    start = " ".join(response.content[:200].decode("utf-8", "replace").split())[:60]
    return f"{kind}, {len(response.content)} bytes" + (f": {_show(start)}" if start else "")


def _one_line(error: Exception) -> str:
    text = str(error).splitlines()
    return text[0][:200] if text else type(error).__name__


def client_for(fleet) -> RegistryClient:
    """A client for the spec's registry, with the token from the environment or token file."""
    from .secrets import registry_token

    reg = fleet.registry
    ca = str(fleet.path(reg.ca_file)) if reg.ca_file else None
    return RegistryClient(reg.host, reg.username, registry_token(fleet), ca)
