"""A small Docker Registry HTTP API v2 client: existence and digests of manifests.

Handles both auth schemes met in practice: HTTP basic (the lab's htpasswd registry) and the
bearer-token exchange GHCR and Docker Hub use (401 with `WWW-Authenticate: Bearer realm=...`,
then GET realm?service=...&scope=repository:<repo>:pull with basic credentials)."""

from __future__ import annotations

import re
from dataclasses import dataclass

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


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """'Bearer realm="https://ghcr.io/token",service="ghcr.io"' -> ('bearer', {...})."""
    scheme, _, params = header.strip().partition(" ")
    return scheme.lower(), dict(_CHALLENGE_PARAM.findall(params))


@dataclass
class RegistryClient:
    host: str
    username: str
    password: str
    ca_file: str | None = None
    timeout: float = 10.0

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
        response = self._request("GET", self.base, scope="")
        if response.status_code != 200:
            raise RigError(f"registry {self.host}: GET /v2/ answered {response.status_code}")

    def manifest_digest(self, repository: str, tag: str) -> str | None:
        """Docker-Content-Digest of repository:tag, or None when the tag does not exist."""
        url = f"{self.base}{repository}/manifests/{tag}"
        response = self._request(
            "HEAD", url, scope=f"repository:{repository}:pull", headers={"Accept": MANIFEST_TYPES}
        )
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise RigError(f"registry {self.host}: HEAD {repository}:{tag} -> {response.status_code}")
        digest = response.headers.get("Docker-Content-Digest")
        if not digest:
            raise RigError(f"registry {self.host}: no Docker-Content-Digest for {repository}:{tag}")
        return digest

    def copy_manifest(self, repository: str, source_tag: str, target_tag: str) -> str:
        """Give the manifest at source_tag a second tag, inside the registry (no layers move).
        Returns its digest."""
        scope = f"repository:{repository}:pull,push"
        url = f"{self.base}{repository}/manifests/"
        got = self._request("GET", url + source_tag, scope=scope, headers={"Accept": MANIFEST_TYPES})
        if got.status_code != 200:
            raise RigError(f"registry {self.host}: GET {repository}:{source_tag} -> {got.status_code}")
        media_type = got.headers.get("Content-Type", "application/vnd.oci.image.manifest.v1+json")
        put = self._request("PUT", url + target_tag, scope=scope,
                            headers={"Content-Type": media_type}, data=got.content)
        if put.status_code not in (200, 201):
            raise RigError(f"registry {self.host}: PUT {repository}:{target_tag} -> {put.status_code}")
        return put.headers.get("Docker-Content-Digest") or got.headers.get("Docker-Content-Digest", "")

    # -- auth ---------------------------------------------------------------------------------
    def _request(self, method: str, url: str, scope: str, headers=None, data=None) -> requests.Response:
        headers = dict(headers or {})
        token = self._tokens.get(scope)
        if token:
            headers["Authorization"] = f"Bearer {token}"
        response = self._send(method, url, headers, data=data)
        if response.status_code != 401:
            return response
        scheme, params = parse_challenge(response.headers.get("WWW-Authenticate", ""))
        if scheme == "basic":
            return self._send(method, url, headers, auth=(self.username, self.password), data=data)
        if scheme == "bearer":
            self._tokens[scope] = self._fetch_token(params, scope)
            headers["Authorization"] = f"Bearer {self._tokens[scope]}"
            return self._send(method, url, headers, data=data)
        raise RigError(f"registry {self.host}: unsupported auth challenge {scheme!r}")

    def _fetch_token(self, params: dict[str, str], scope: str) -> str:
        query = {"service": params.get("service", "")}
        if scope:
            query["scope"] = scope
        try:
            response = self._session.get(
                params["realm"], params=query, auth=(self.username, self.password),
                timeout=self.timeout, verify=self._verify,
            )
        except KeyError:
            raise RigError(f"registry {self.host}: bearer challenge without realm") from None
        except requests.RequestException as e:
            raise RigError(f"registry {self.host}: token request failed: {_one_line(e)}") from None
        if response.status_code != 200:
            raise RigError(
                f"registry {self.host}: token request refused ({response.status_code}); "
                "check the username and token"
            )
        body = response.json()
        token = body.get("token") or body.get("access_token")
        if not token:
            raise RigError(f"registry {self.host}: token response without a token")
        return token

    def _send(self, method, url, headers, auth=None, data=None) -> requests.Response:
        try:
            response = self._session.request(
                method, url, headers=headers, auth=auth, data=data, timeout=self.timeout,
                verify=self._verify,
            )
        except requests.exceptions.SSLError as e:
            raise RigError(f"registry {self.host}: TLS verification failed: {_one_line(e)}") from None
        except requests.RequestException as e:
            raise RigError(f"registry {self.host}: no answer: {_one_line(e)}") from None
        if response.status_code == 401 and auth is not None:
            raise RigError(f"registry {self.host}: credentials refused for {self.username}")
        return response


def _one_line(error: Exception) -> str:
    return str(error).splitlines()[0][:200]


def client_for(fleet) -> RegistryClient:
    """A client for the spec's registry, with the token from the environment or token file."""
    from .secrets import registry_token

    reg = fleet.registry
    ca = str(fleet.path(reg.ca_file)) if reg.ca_file else None
    return RegistryClient(reg.host, reg.username, registry_token(fleet), ca)
