"""A small Docker Registry HTTP API v2 client: existence and digests of manifests.

Handles both auth schemes met in practice: HTTP basic (the lab's htpasswd registry) and the
bearer-token exchange GHCR and Docker Hub use (401 with `WWW-Authenticate: Bearer realm=...`,
then GET realm?service=...&scope=repository:<repo>:pull with basic credentials).

What it does not trust in a registry's answers:

- the bearer `realm` receives the credentials, so it must be https and on the configured
  host (or, for a few well-known registries, their own token host: TOKEN_HOSTS);
- a 429 or 5xx answer is retried with exponential backoff (a Retry-After of up to
  `max_retry_after` seconds is honoured), all within `deadline` seconds per call;
- the deadline holds for the whole call, headers and body included, however slowly the
  server sends them (requests' timeout is per read: a server trickling one byte a second
  never reaches it): a watchdog shuts the socket of the request in flight when it passes;
- an answer body is read with a size cap (MAX_BODY) and the same deadline;
- anything unexpected (a token answer that is not JSON, no token in it) is a one-line
  RigError naming the registry and what it answered, by status, content type and length
  only: a token answer's body is never quoted (it may hold a token). The password and tokens
  never appear in a repr or an error message.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urljoin, urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3 import HTTPConnectionPool, HTTPSConnectionPool
from urllib3 import poolmanager as _poolmanager
from urllib3.connection import HTTPConnection, HTTPSConnection

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
        for prefix in ("https://", "http://"):
            self._session.mount(prefix, _WatchedAdapter())
        # Per request, not on the session: requests lets REQUESTS_CA_BUNDLE in the environment
        # override a session's verify, which would silently drop the registry's CA.
        self._verify: str | bool = self.ca_file or True
        self._tokens: dict[str, str] = {}
        self._basic = False     # the registry asked for basic auth once: send it up front
        from gevent.lock import Semaphore  # (look-ups side by side are greenlets)

        self._open: set[str] = set()   # scopes that answered without credentials
        self._unanswered = False       # a look-up that was to learn the scheme failed
        self._learning = Semaphore()                 # see _request
        self._scope_locks: dict[str, Semaphore] = {}
        self.requests = 0       # HTTP requests sent (each authenticated one may cost a bcrypt)

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

    def image_config(self, repository: str, digest: str, platform: str = "linux/amd64") -> dict:
        """The image config (Env, Labels, ...) of repository@digest: its manifest (the
        platform's manifest for an index), then the config blob. Every document is checked
        against the digest that named it: a registry cannot hand over another image's."""
        until = self._until()
        scope = f"repository:{repository}:pull"
        manifest = self._document(f"{self.base}{repository}/manifests/{digest}", digest, scope,
                                  until, {"Accept": MANIFEST_TYPES})
        if isinstance(manifest.get("manifests"), list):  # an index: the platform's manifest
            os_name, _, arch = platform.partition("/")
            chosen = next((m for m in manifest["manifests"] if isinstance(m, dict)
                           and (m.get("platform") or {}).get("os") == os_name
                           and (m.get("platform") or {}).get("architecture") == arch), None)
            if chosen is None or not isinstance(chosen.get("digest"), str):
                raise self._error(f"{repository}@{digest}: no {platform} image in its index")
            manifest = self._document(f"{self.base}{repository}/manifests/{chosen['digest']}",
                                      chosen["digest"], scope, until, {"Accept": MANIFEST_TYPES})
        config = manifest.get("config")
        if not isinstance(config, dict) or not isinstance(config.get("digest"), str):
            raise self._error(f"{repository}@{digest}: its manifest names no config")
        return self._document(f"{self.base}{repository}/blobs/{config['digest']}",
                              config["digest"], scope, until, {})

    def image_env(self, repository: str, digest: str) -> dict[str, str]:
        """The image's environment (KEY=value entries of its config), as a dict."""
        env = (self.image_config(repository, digest).get("config") or {}).get("Env") or []
        return dict(e.split("=", 1) for e in env if isinstance(e, str) and "=" in e)

    # -- signatures and attestations (rig/supply/cosign.py) -------------------------------------
    def manifest(self, repository: str, reference: str) -> tuple[bytes, str] | None:
        """The raw manifest at a tag or digest and its media type; None when there is none. A
        manifest asked for by digest must hash to it."""
        url = f"{self.base}{repository}/manifests/{reference}"
        response = self._request("GET", url, scope=f"repository:{repository}:pull",
                                 headers={"Accept": MANIFEST_TYPES}, until=self._until())
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise self._error(f"GET {repository}:{_show(reference)} -> {_status(response)}")
        algorithm, _, expected = reference.partition(":")
        if algorithm == "sha256" and hashlib.sha256(response.content).hexdigest() != expected:
            raise self._error(f"{repository}@{_show(reference)}: content does not match its digest")
        return response.content, response.headers.get("Content-Type", "")

    def blob(self, repository: str, digest: str) -> bytes:
        """A blob (at most MAX_BODY bytes) whose sha256 must be `digest`."""
        url = f"{self.base}{repository}/blobs/{digest}"
        response = self._request("GET", url, scope=f"repository:{repository}:pull",
                                 until=self._until())
        if response.status_code != 200:
            raise self._error(f"GET {repository} blob {_show(digest)} -> {_status(response)}")
        algorithm, _, expected = digest.partition(":")
        if algorithm != "sha256" or hashlib.sha256(response.content).hexdigest() != expected:
            raise self._error(f"{repository} blob {_show(digest)}: content does not match its digest")
        return response.content

    def push_blob(self, repository: str, data: bytes) -> str:
        """Upload a blob (unless the registry has it): a POST that opens an upload, then one PUT
        with the whole body and its digest, as GHCR and the distribution registry both take.
        Returns its digest."""
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        until, scope = self._until(), f"repository:{repository}:pull,push"
        head = self._request("HEAD", f"{self.base}{repository}/blobs/{digest}", scope=scope,
                             until=until)
        if head.status_code == 200:
            return digest
        opened = self._request("POST", f"{self.base}{repository}/blobs/uploads/", scope=scope,
                               until=until)
        location = opened.headers.get("Location", "")
        if opened.status_code != 202 or not location:
            raise self._error(f"POST {repository} blob upload -> {_status(opened)}")
        url = urljoin(self.base, location)
        if not self._own_url(url):
            raise self._error(f"{repository}: the upload location {_show(url)} is not on "
                              f"https://{self.host}; nothing is sent there")
        put = self._request("PUT", url + ("&" if "?" in url else "?") + f"digest={digest}",
                            scope=scope, headers={"Content-Type": "application/octet-stream"},
                            data=data, until=until)
        if put.status_code not in (201, 204):
            raise self._error(f"PUT {repository} blob {digest[:19]} -> {_status(put)}")
        return digest

    def put_manifest(self, repository: str, tag: str, body: bytes, media_type: str) -> str:
        """Put a manifest under a tag; returns its digest."""
        put = self._request("PUT", f"{self.base}{repository}/manifests/{tag}",
                            scope=f"repository:{repository}:pull,push",
                            headers={"Content-Type": media_type}, data=body, until=self._until())
        if put.status_code not in (200, 201):
            raise self._error(f"PUT {repository}:{_show(tag)} -> {_status(put)}")
        return put.headers.get("Docker-Content-Digest") or "sha256:" + hashlib.sha256(body).hexdigest()

    def _document(self, url: str, digest: str, scope: str, until: float, headers: dict) -> dict:
        """A JSON document whose sha256 must be `digest`."""
        response = self._request("GET", url, scope=scope, headers=headers, until=until)
        if response.status_code != 200:
            raise self._error(f"GET {_show(url.removeprefix(self.base))} -> {_status(response)}")
        algorithm, _, expected = digest.partition(":")
        if algorithm != "sha256" or hashlib.sha256(response.content).hexdigest() != expected:
            raise self._error(f"{_show(url.removeprefix(self.base))}: content does not match "
                              "its digest")
        try:
            document = json.loads(response.content)
        except ValueError:
            raise self._error(f"{_show(url.removeprefix(self.base))}: not JSON") from None
        if not isinstance(document, dict):
            raise self._error(f"{_show(url.removeprefix(self.base))}: not a JSON object")
        return document

    # -- auth ---------------------------------------------------------------------------------
    def _request(self, method: str, url: str, scope: str, until: float, headers=None,
                 data=None) -> requests.Response:
        """The request, authenticated as the registry asks. Until this client knows how (basic
        auth, or a bearer token for the scope), look-ups side by side take turns: the first
        meets the 401 challenge and learns, the others then go straight in with what it
        learned instead of each meeting its own 401. Once the registry is known to hand out a
        token per scope (GHCR), only requests of the same scope take turns."""
        while not self._knows(scope):
            first = not (self._basic or self._tokens or self._open)
            lock = self._learning if first else \
                self._scope_locks.setdefault(scope, type(self._learning)())
            with lock:
                if first and (self._basic or self._tokens or self._open):
                    continue    # learned while this one waited: by scope from now on
                if self._knows(scope) or self._unanswered:
                    break
                try:
                    return self._authenticated(method, url, scope, until, headers, data)
                except RigError:    # no answer, or refused: the others do not queue behind
                    self._unanswered = True     # it one deadline each, they go at once
                    raise
        return self._authenticated(method, url, scope, until, headers, data)

    def _knows(self, scope: str) -> bool:
        return self._basic or scope in self._tokens or scope in self._open

    def _authenticated(self, method: str, url: str, scope: str, until: float, headers=None,
                       data=None) -> requests.Response:
        headers = dict(headers or {})
        token = self._tokens.get(scope)
        if token:
            headers["Authorization"] = f"Bearer {token}"
        basic = (self.username, self.password) if self._basic else None
        response = self._send(method, url, headers, until, auth=basic, data=data)
        if response.status_code != 401:
            if basic is None and not token:
                self._open.add(scope)
            return response
        scheme, params = parse_challenge(response.headers.get("WWW-Authenticate", ""))
        if basic is not None and scheme == "basic":
            raise self._error(f"credentials refused for {self.username}")
        if scheme == "basic":
            self._basic = True
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
                              f"is not JSON ({_describe(response)})") from None
        token = body.get("token") or body.get("access_token") if isinstance(body, dict) else None
        if not token:
            raise self._error("token response without a token")
        if not isinstance(token, str) or not _TOKEN.fullmatch(token):
            raise self._error("token response holds a token that is not a plain string")
        return token

    def _own_url(self, url: str) -> bool:
        """https, on this registry's host and port, without user info (which would carry
        credentials, or hide another host: https://host:x@evil/)."""
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError:
            return False
        return (parts.scheme == "https" and parts.username is None and parts.password is None
                and _netloc(parts.hostname or "", port) == _netloc(*_split_host(self.host)))

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
            deadline = _Deadline(until)
            self.requests += 1
            try:
                with deadline:
                    response = self._session.request(
                        method, url, headers=headers, auth=auth, data=data, params=params,
                        timeout=wait, verify=self._verify, allow_redirects=redirects, stream=True,
                    )
                    self._read_body(response, until, what)
            except (requests.RequestException, ValueError, UnicodeError) as e:
                if deadline.fired:
                    raise self._late(what) from None
                if isinstance(e, requests.exceptions.SSLError):
                    raise self._error(f"TLS verification failed: {_one_line(e)}") from None
                raise self._error(f"{what}: no answer: {_one_line(e)}") from None
            if deadline.fired:  # the socket was shut: what was read may be cut short
                _close(response)
                raise self._late(what)
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

    def _late(self, what: str) -> RigError:
        return self._error(f"{what}: no complete answer within {self.deadline:g} s")

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


def _describe(response: requests.Response) -> str:
    """An answer's content type and length, never its content (a token answer may hold one)."""
    kind = _UNPRINTABLE.sub("", response.headers.get("Content-Type", "no content type"))[:60]
    return f"{kind}, {len(response.content)} bytes"


def _one_line(error: Exception) -> str:
    text = str(error).splitlines()
    return text[0][:200] if text else type(error).__name__


# -- the deadline of one request, headers and body ------------------------------------------------
_watching = threading.local()


class _Deadline:
    """While a request runs (with ... as it), every socket its connection uses is noted (as a
    duplicate descriptor: shutting one down ends the connection under every descriptor); when
    `until` passes, a timer shuts them down, which wakes a read blocked on a server that sends
    one byte a second, in the headers, the TLS handshake or the body alike. `fired` says so."""

    def __init__(self, until: float):
        self.fired = False
        self._socks: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(max(0.0, until - time.monotonic()), self._fire)
        self._timer.daemon = True

    def watch(self, sock) -> None:
        try:
            dup = socket.fromfd(sock.fileno(), sock.family, sock.type)
        except (OSError, ValueError):
            return
        with self._lock:
            self._socks.append(dup)
            fired = self.fired
        if fired:
            _shut(dup)

    def _fire(self) -> None:
        with self._lock:
            self.fired = True
            socks = list(self._socks)
        for sock in socks:
            _shut(sock)

    def __enter__(self) -> _Deadline:
        _watching.deadline = self
        self._timer.start()
        return self

    def __exit__(self, *exc) -> None:
        self._timer.cancel()
        _watching.deadline = None
        with self._lock:
            socks, self._socks = self._socks, []
        for sock in socks:
            sock.close()


def _shut(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # closed already, or never connected


def _watch(sock) -> None:
    deadline = getattr(_watching, "deadline", None)
    if deadline is not None and sock is not None:
        deadline.watch(sock)


class _Watched:
    """Shows the call's _Deadline a connection's socket: a new one as soon as it exists (before
    any TLS handshake), a kept-alive one at each request."""

    def _new_conn(self) -> socket.socket:
        sock = super()._new_conn()
        _watch(sock)
        return sock

    def request(self, *args, **kwargs) -> None:
        _watch(self.sock)
        super().request(*args, **kwargs)


class _WatchedHTTPConnection(_Watched, HTTPConnection):
    pass


class _WatchedHTTPSConnection(_Watched, HTTPSConnection):
    pass


class _WatchedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _WatchedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


_WATCHED_POOLS = {"http": _WatchedHTTPPool, "https": _WatchedHTTPSPool}


class _WatchedAdapter(HTTPAdapter):
    """requests' adapter, with connections a _Deadline can end (a SOCKS proxy keeps its own)."""

    def init_poolmanager(self, *args, **kwargs) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _WATCHED_POOLS

    def proxy_manager_for(self, proxy, **proxy_kwargs):
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        if manager.pool_classes_by_scheme is _poolmanager.pool_classes_by_scheme:
            manager.pool_classes_by_scheme = _WATCHED_POOLS
        return manager


def client_for(fleet) -> RegistryClient:
    """A client for the spec's registry, with the token from the environment or token file."""
    from .secrets import registry_token

    reg = fleet.registry
    ca = str(fleet.path(reg.ca_file)) if reg.ca_file else None
    return RegistryClient(reg.host, reg.username, registry_token(fleet), ca)


# -- reads side by side ------------------------------------------------------------------------
LOOKUPS = 8   # registry look-ups in flight at once


def side_by_side(func, items: list, size: int = LOOKUPS) -> list:
    """[func(item) for item in items], up to `size` at once (greenlets). The first item's
    exception, in order, is raised here, in the caller, as a call in turn would raise it (a
    greenlet's own failure would also make gevent print its traceback)."""
    from gevent.pool import Pool

    def caught(item):
        try:
            return True, func(item)
        except Exception as e:      # raised again below, in the caller
            return False, e
    results = Pool(size).map(caught, items)
    for ok, value in results:
        if not ok:
            raise value
    return [value for _, value in results]
