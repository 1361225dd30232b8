"""Hostile and broken input: every spec, environment value and registry answer gets a clear error
or works, never a traceback, a hang or an injected command.

One test (or one table row) per item of the issue. Each failed on the code before it: the alias
bomb took 32 s and 3.3 GiB; non-UTF-8, unhashable keys, .inf, bad tagged values and a non-JSON
token answer were tracebacks; `../../x` as a profile read ../../x.yml; paths could be absolute or
climb out; "abc\\n" was a valid tag; repo_url and env values went into the apt source line and
machine.env as they were; the realm got the credentials wherever it was; the repr showed the
password; 429 and 503 ended the call at once."""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import re
import shlex
import shutil
import ssl
import threading
import time
import tracemalloc
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from rig.commands import host as cmd
from rig.config import load_fleet
from rig.config.base import parse_duration
from rig.config.loader import MAX_BYTES
from rig.errors import RigError, SpecError
from rig.registry import RegistryClient
from rig.secrets import registry_token
from rig.tags import check_tag

REPO = Path(__file__).resolve().parents[2]
SPEC_LINE = re.compile(r"^[^:\n]+:\d+: [^\n]+: [^\n]+$")  # file:line: field: message


@pytest.fixture
def spec(tmp_path, monkeypatch):
    """A copy of the real fleet.yml, lab.yml and profiles in a temp dir, cwd set there."""
    shutil.copy(REPO / "fleet.yml", tmp_path / "fleet.yml")
    shutil.copy(REPO / "lab.yml", tmp_path / "lab.yml")
    shutil.copytree(REPO / "profiles", tmp_path / "profiles")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def edit(path: Path, old: str, new: str) -> int:
    """Replace `old` (which must occur once) and return the 1-based line it was on."""
    text = path.read_text()
    assert text.count(old) == 1, old
    line = text[: text.index(old)].count("\n") + 1
    path.write_text(text.replace(old, new))
    return line


def errors(*args, **kwargs) -> list[str]:
    with pytest.raises(SpecError) as caught:
        load_fleet(*args, **kwargs)
    for line in caught.value.lines:
        assert SPEC_LINE.match(line), line
    return caught.value.lines


# -- 1. a YAML alias bomb ---------------------------------------------------------------------
BOMB = "\n".join(
    ["# billion laughs: ten to the seventh values from seven short lines",
     "a: &a [lol,lol,lol,lol,lol,lol,lol,lol,lol,lol]"]
    + [f"{b}: &{b} [" + ",".join([f"*{a}"] * 10) + "]" for a, b in zip("abcdef", "bcdefg", strict=True)]
) + "\n"


def test_alias_bomb_is_refused_in_milliseconds_with_a_line(spec):
    (spec / "fleet.yml").write_text(BOMB)
    assert len(BOMB.encode()) <= 350
    tracemalloc.start()
    started = time.perf_counter()
    try:
        (message,) = errors("fleet.yml")
        took = time.perf_counter() - started
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert re.match(r"fleet\.yml:5: d\[\d\]: alias \*c makes the file more than 10000 values", message)
    assert took < 1.0 and peak < 20 * 2**20, (took, peak)


def test_alias_bomb_in_a_profile_is_refused_too(spec):
    (spec / "profiles" / "pc2.yml").write_text(BOMB)
    (message,) = errors("fleet.yml")
    assert message.startswith(os.path.join("profiles", "pc2.yml") + ":5: d[")


@pytest.mark.parametrize("yaml_text, expected", [
    ("x: &x 1\nl: [" + ", ".join(["*x"] * 101) + "]\n", r"fleet\.yml:2: l\[100\]: more than 100 aliases"),
    ("a: &a [*a]\n", r"fleet\.yml:1: a\[0\]: alias \*a is used inside its own anchor"),
    ("a: " + "[" * 40 + "]" * 40 + "\n", r"fleet\.yml:1: a(\[0\])+: nested more than 32 levels deep"),
    # depth through aliases: each level is shallow, the expansion is not
    ("a: &a [[[[[[[[[[x]]]]]]]]]]\nb: &b [[[[[[[[[[*a]]]]]]]]]]\nc: &c [[[[[[[[[[*b]]]]]]]]]]\n"
     "d: [[[[[[[[[[*c]]]]]]]]]]\n", r"fleet\.yml:1: d(\[0\])+: nested more than 32 levels deep"),
])
def test_yaml_limits(spec, yaml_text, expected):
    (spec / "fleet.yml").write_text(yaml_text)
    (message,) = errors("fleet.yml")
    assert re.match(expected, message), message


def test_a_file_over_1_mib_is_not_parsed(spec):
    text = (spec / "fleet.yml").read_text()
    (spec / "fleet.yml").write_text(text + "#" * MAX_BYTES)
    assert errors("fleet.yml") == [
        f"fleet.yml:1: YAML: the file is {len(text) + MAX_BYTES} bytes; "
        f"a spec file may be at most {MAX_BYTES} (1 MiB)"
    ]


# -- 2. tracebacks instead of errors ----------------------------------------------------------
def test_non_utf8_file_is_a_line_error(spec):
    text = (spec / "fleet.yml").read_text()
    line = edit(spec / "fleet.yml", "namespace: haymayndzultra", "namespace: haymayndzultra")
    raw = text.encode().replace(b"namespace: haymayndzultra", b"namespace: hay\xffmayndzultra")
    (spec / "fleet.yml").write_bytes(raw)
    assert errors("fleet.yml") == [
        f"fleet.yml:{line}: YAML: not UTF-8 text (byte 0xff); save the file as UTF-8"
    ]


def test_raw_control_character_is_a_line_error(spec):
    line = edit(spec / "fleet.yml", "username: haymayndzultra", "username: hay\x1bmayndzultra")
    assert errors("fleet.yml") == [
        f"fleet.yml:{line}: YAML: control character U+001B is not allowed in a spec file"
    ]


@pytest.mark.parametrize("key", ["[pc2]", "{pc2: 1}", "? [a, b]\n  "])
def test_unhashable_key_is_a_line_error(spec, key):
    line = edit(spec / "fleet.yml", "  pc2: {profile: pc2", f"  {key}: {{profile: pc2")
    assert errors("fleet.yml") == [f"fleet.yml:{line}: hosts: a list or mapping cannot be a key"]


@pytest.mark.parametrize("value, message", [
    (".inf", ".inf is not a finite number"),
    ("-.Inf", "-.Inf is not a finite number"),
    (".nan", ".nan is not a finite number"),
    ("1.0e+400", "1.0e+400 is not a finite number"),
    ("99999999999999999999999999999s",
     "Value error, a duration must be finite and at most 30 days (2592000 s)"),
    ("31d", "Value error, expected a duration such as 30s, 500ms or 2m"),
])
def test_durations_are_finite(spec, value, message):
    line = edit(spec / "fleet.yml", "stop_timeout: 10s", f"stop_timeout: {value}")
    assert errors("fleet.yml") == [f"fleet.yml:{line}: rollout.stop_timeout: {message}"]


def test_no_infinity_or_nan_in_any_float_field(spec):
    line = edit(spec / "fleet.yml", "expect: {status: ok}, start_period: 30s",
                "expect: {status: ok, load: .nan}, start_period: 30s")
    assert errors("fleet.yml") == [
        f"fleet.yml:{line}: services.model_ops_coordinator.health.expect.load: .nan is not a finite number"
    ]
    for value in (float("inf"), float("nan"), -float("inf"), 10**400):
        with pytest.raises(ValueError):
            parse_duration(value)


@pytest.mark.parametrize("value, shown", [
    ("!!int abc", "'abc' as int"),
    ("!!float abc", "'abc' as float"),
    ("!!bool maybe", "'maybe' as bool"),
    ("!!timestamp soon", "'soon' as timestamp"),
    ("9" * 5000, "'" + "9" * 36 + "... as int"),
])
def test_a_value_its_tag_cannot_hold_is_a_line_error(spec, value, shown):
    line = edit(spec / "fleet.yml", "port: 8212", f"port: {value}")
    assert errors("fleet.yml") == [f"fleet.yml:{line}: YAML: cannot read {shown}"]


def test_merge_keys_are_refused_clearly(spec):
    line = edit(spec / "fleet.yml", "  deploy_user: ops", "  deploy_user: ops\n  x: &m {a: 1}\n  y: {<<: *m}")
    assert errors("fleet.yml") == [
        f"fleet.yml:{line + 2}: bootstrap.y: merge keys (<<) are not supported; write the keys out"
    ]


# -- 3. paths and names -----------------------------------------------------------------------
def test_profile_name_is_checked_before_it_is_a_path(spec):
    # Were it read, ../x.yml would be a YAML error naming that file.
    (spec.parent / f"{spec.name}-x.yml").write_text("not: [valid\n")
    line = edit(spec / "fleet.yml", "pc2: {profile: pc2,", f"pc2: {{profile: ../../{spec.name}-x,")
    assert errors("fleet.yml") == [
        f"fleet.yml:{line}: hosts.pc2.profile: String should match pattern '^[a-z0-9][a-z0-9_.-]*$'"
    ]


@pytest.mark.parametrize("where, old, new, field", [
    ("fleet.yml", "context: dockerfiles/families/llm-cu121", "context: /etc", "families.llm-cu121.context"),
    ("fleet.yml", "context: dockerfiles/services/real_time_audio_pipeline",
     "context: dockerfiles/../../elsewhere", "services.real_time_audio_pipeline.context"),
    ("lab.yml", "ca_file: .lab/ca/ca.crt", "ca_file: /etc/ssl/private/key.pem", "registry.ca_file"),
    ("lab.yml", "token_file: .lab/registry/token", "token_file: ../../.docker/config.json",
     "registry.token_file"),
    ("lab.yml", "ca_bundle: /etc/ssl/certs/ca-certificates.crt", "ca_bundle: ../ca.crt",
     "build.ca_bundle"),
])
def test_spec_paths_stay_in_the_spec_folder(spec, where, old, new, field):
    line = edit(spec / where, old, new)
    value = new.split(": ", 1)[1]
    reason = "is absolute; paths are relative to the spec's folder" if value.startswith("/") \
        else "leaves the spec's folder"
    assert errors("fleet.yml", "lab.yml") == [f"{where}:{line}: {field}: Value error, {value!r} {reason}"]


def test_an_absolute_ca_bundle_is_legitimate(spec):
    assert load_fleet("fleet.yml", "lab.yml").build.ca_bundle == "/etc/ssl/certs/ca-certificates.crt"


def test_a_symlink_out_of_the_spec_folder_is_refused(spec, tmp_path_factory):
    outside = tmp_path_factory.mktemp("outside")
    (spec / "dockerfiles").mkdir()
    (spec / "dockerfiles" / "families").symlink_to(outside, target_is_directory=True)
    line = edit(spec / "fleet.yml", "context: dockerfiles/families/llm-cu121",
                "context: dockerfiles/families/llm-cu121")
    assert errors("fleet.yml") == [
        f"fleet.yml:{line}: families.llm-cu121.context: "
        "'dockerfiles/families/llm-cu121' leads out of the spec's folder (through a symlink)"
    ]


def test_fleet_path_refuses_an_escape_it_is_handed(fleet):
    with pytest.raises(RigError, match="leads out of the spec's folder"):
        fleet.path("../../etc/passwd")
    assert fleet.path("/etc/ssl/certs/ca-certificates.crt") == Path("/etc/ssl/certs/ca-certificates.crt")


@pytest.mark.parametrize("tag", ["abc\n", "abc\r\n", "-abc", ".abc", "a b", "a" * 101, "２０", ""])
def test_a_tag_must_match_as_a_whole(tag):
    with pytest.raises(RigError, match="is not a valid image tag"):
        check_tag(tag)
    assert check_tag("20261123-1a2b3c4d-dirty") == "20261123-1a2b3c4d-dirty"


# -- control characters in any string that reaches a host ---------------------------------------
@pytest.mark.parametrize("where, old, new, field", [
    ("fleet.yml", '    runtime: {memory: 12g, cpus: 8, shm_size: 2g, gpu_memory: 8g}',
     '    env: {A: "x\\nB=y"}\n    runtime: {memory: 12g, cpus: 8, shm_size: 2g, gpu_memory: 8g}',
     "services.model_ops_coordinator.env.A"),
    ("fleet.yml", "base_image: nvidia/cuda:12.1.1-cudnn8-runtime-ubuntu22.04",
     'base_image: "nvidia/cuda:12\\e[2J"', "families.llm-cu121.base_image"),
    ("fleet.yml", "source_url: https://github.com/haymayndzultra/ai_system",
     'source_url: "https://github.com/x\\ny"', "build.source_url"),
    ("fleet.yml", "health: {path: /health, expect: {status: ok}, start_period: 30s",
     "health: {path: \"/health'; reboot; '\", expect: {status: ok}, start_period: 30s",
     "services.model_ops_coordinator.health.path"),
    ("fleet.yml", '    runtime: {memory: 12g, cpus: 8, shm_size: 2g, gpu_memory: 8g}',
     '    volumes: ["rig-extra:/extra\\u2028x"]\n'
     '    runtime: {memory: 12g, cpus: 8, shm_size: 2g, gpu_memory: 8g}',
     "services.model_ops_coordinator.volumes[0]"),
    ("fleet.yml", "username: haymayndzultra", 'username: "hay\\tmayndzultra"', "registry.username"),
    ("fleet.yml", "docker: {source: distro}", 'docker: {source: distro, repo_url: "https://x/\\u0085y"}',
     "bootstrap.docker.repo_url"),
    ("fleet.yml", "description: CUDA 12.1 runtime, Python venv, shared heavy dependencies",
     'description: "CUDA 12.1\\u202e runtime"',
     "families.llm-cu121.description"),
])
def test_no_control_characters_in_strings_that_reach_a_host(spec, where, old, new, field):
    line = edit(spec / where, old, new)
    (message,) = errors("fleet.yml")
    assert message.startswith(f"{where}:{line}: {field}: "), message
    assert "control character" in message or "String should match pattern" in message


# -- 4. injection -----------------------------------------------------------------------------
CRAFTED_URL = "https://x/' ; touch /tmp/rig-pwned ; echo '"


def test_crafted_repo_url_is_refused_by_the_model(spec):
    line = edit(spec / "fleet.yml", "docker: {source: distro}",
                f'docker: {{source: distro, repo_url: "{CRAFTED_URL}"}}')
    (message,) = errors("fleet.yml")
    assert message.startswith(f"fleet.yml:{line}: bootstrap.docker.repo_url: String should match")


@pytest.mark.parametrize("url, distro, codename", [
    (CRAFTED_URL, "ubuntu", "jammy"),
    ("https://x/ stable main\ndeb https://evil/", "ubuntu", "jammy"),
    ("https://download.docker.com/linux", "ubuntu; reboot", "jammy"),
    ("https://download.docker.com/linux", "ubuntu", "jammy\ndeb http://evil/ x main"),
])
def test_docker_ce_repo_refuses_what_would_break_out(url, distro, codename):
    with pytest.raises(ValueError):
        cmd.docker_ce_repo(url, distro, codename)


def test_docker_ce_repo_line_is_one_quoted_word():
    command = cmd.docker_ce_repo("https://mirror.example/docker-ce/linux/", "debian", "trixie")[-1]
    assert shlex.split(command) == [
        "echo",
        "deb [arch=amd64 signed-by=/etc/apt/keyrings/docker.asc] "
        "https://mirror.example/docker-ce/linux/debian trixie stable",
        ">", "/etc/apt/sources.list.d/docker.list",
    ]


def test_env_value_with_a_newline_is_refused_by_the_model_and_the_builder(spec):
    text = (spec / "profiles" / "pc2.yml").read_text()
    (spec / "profiles" / "pc2.yml").write_text(text + 'env: {HF_HOME: "/cache\\nLD_PRELOAD=/tmp/x.so"}\n')
    line = len(text.splitlines()) + 1
    assert errors("fleet.yml") == [
        f"{os.path.join('profiles', 'pc2.yml')}:{line}: env.HF_HOME: Value error, "
        "control character U+000A at position 6; one line of printable text expected"
    ]
    for value in ("/cache\nLD_PRELOAD=/tmp/x.so", "a\rb", "a\u2028b", "a\x00b"):
        with pytest.raises(ValueError):
            cmd.profile_env({"HF_HOME": value}, "0" * 64)
    with pytest.raises(ValueError):
        cmd.profile_env({"A=B": "c"}, "0" * 64)
    assert cmd.profile_env({"B": "x y", "A": "1"}, "ab") == "A=1\nB=x y\nRIG_PROFILE_HASH=ab\n"


def test_registry_token_with_a_line_break_is_refused_without_showing_it(fleet, monkeypatch):
    monkeypatch.setenv(fleet.registry.token_env, "ghp_secret\nInjected: 1")
    with pytest.raises(RigError) as caught:
        registry_token(fleet)
    assert "ghp_secret" not in str(caught.value) and "GHCR_TOKEN" in str(caught.value)


# -- 5. the registry client, against a TLS server on 127.0.0.1 ------------------------------------
@pytest.fixture(scope="module")
def tls(tmp_path_factory):
    """A CA and a server certificate for 127.0.0.1: (ca.pem path, server ssl context)."""
    folder = tmp_path_factory.mktemp("tls")
    now = datetime.datetime.now(datetime.UTC)

    def cert(subject, key, issuer, issuer_key, ca: bool):
        builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(minutes=5))
                   .not_valid_after(now + datetime.timedelta(days=1))
                   .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
                   .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
                   .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                       issuer_key.public_key()), False))
        if ca:
            builder = builder.add_extension(x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                key_encipherment=False, data_encipherment=False, key_agreement=False,
                encipher_only=False, decipher_only=False), critical=True)
        else:
            builder = builder.add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        return builder.sign(issuer_key, hashes.SHA256())

    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "rig test CA")])
    ca = cert(ca_name, ca_key, ca_name, ca_key, ca=True)
    leaf = cert(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]), key, ca_name,
                ca_key, ca=False)
    (folder / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (folder / "server.pem").write_bytes(
        leaf.public_bytes(serialization.Encoding.PEM)
        + key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(folder / "server.pem")
    return str(folder / "ca.pem"), context


class FakeRegistry:
    """An HTTPS server on 127.0.0.1 answering from `routes`: (method, path) -> list of answers
    (status, headers, body), the last one repeated. Every request is recorded in `seen`."""

    def __init__(self, context):
        self.routes: dict[tuple[str, str], list] = {}
        self.seen: list[tuple[str, str, dict]] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self):
                path = self.path.split("?")[0]
                fake.seen.append((self.command, self.path, dict(self.headers)))
                answers = fake.routes.get((self.command, path)) or [(404, {}, b"")]
                status, headers, body = answers.pop(0) if len(answers) > 1 else answers[0]
                self.send_response(status)
                for name, value in {"Content-Length": str(len(body)), **headers}.items():
                    self.send_header(name, value)
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            do_GET = do_HEAD = do_PUT = do_POST = _answer

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.host = f"127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, args=(0.02,), daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def servers(tls, monkeypatch):
    """Two fake registries (the configured one, and an 'evil' one) and a client for the first."""
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    ca, context = tls
    good, evil = FakeRegistry(context), FakeRegistry(context)
    waits: list[float] = []
    client = RegistryClient(good.host, "robot", "s3cret-pw", ca, timeout=5.0, backoff=0.05,
                            sleep=waits.append)
    yield good, evil, client, waits
    good.close()
    evil.close()


DIGEST = "sha256:" + "d" * 64
PASSWORD = "s3cret-pw"


def challenge(realm: str) -> dict:
    return {"WWW-Authenticate": f'Bearer realm="{realm}",service="registry"'}


def test_bearer_flow_on_the_registrys_own_host_works(servers):
    good, _, client, _ = servers
    good.routes[("HEAD", "/v2/rig/app/manifests/T")] = [
        (401, challenge(f"https://{good.host}/token"), b""),
        (200, {"Docker-Content-Digest": DIGEST}, b""),
    ]
    good.routes[("GET", "/token")] = [(200, {"Content-Type": "application/json"}, b'{"token": "tkn"}')]
    assert client.manifest_digest("rig/app", "T") == DIGEST
    assert good.seen[-1][2]["Authorization"] == "Bearer tkn"


@pytest.mark.parametrize("realm", [
    "http://{good}/token",          # not https: the credentials would cross in clear
    "https://{evil}/token",         # another host (here: another port) gets the credentials
    "https://robot:x@{good}/token",  # user info in the realm
    "ftp://{good}/token",
])
def test_bearer_realm_must_be_https_on_an_allowed_host(servers, realm):
    good, evil, client, _ = servers
    realm = realm.format(good=good.host, evil=evil.host)
    good.routes[("HEAD", "/v2/rig/app/manifests/T")] = [(401, challenge(realm), b"")]
    with pytest.raises(RigError) as caught:
        client.manifest_digest("rig/app", "T")
    message = str(caught.value)
    assert message.startswith(f"registry {good.host}: bearer realm ") and "\n" not in message
    assert "credentials are not sent there" in message
    assert evil.seen == [] and [s[1] for s in good.seen] == ["/v2/rig/app/manifests/T"]


def test_realm_allow_list_knows_ghcr_and_docker_hub():
    ghcr = RegistryClient("ghcr.io", "u", PASSWORD)
    ghcr._check_realm("https://ghcr.io/token")
    ghcr._check_realm("https://GHCR.io:443/token")
    hub = RegistryClient("registry-1.docker.io", "u", PASSWORD)
    hub._check_realm("https://auth.docker.io/token")
    for client, realm in ((ghcr, "https://ghcr.io.evil.example/token"), (ghcr, "https://auth.docker.io/token"),
                          (hub, "http://auth.docker.io/token"), (ghcr, "https://ghcr.io:8443/token"),
                          (ghcr, "https://ghcr.io:99999/token")):
        with pytest.raises(RigError):
            client._check_realm(realm)


def test_password_is_never_in_a_repr_or_an_error(servers):
    good, _, client, _ = servers
    assert PASSWORD not in repr(client) and "robot" in repr(client)
    # A token endpoint that echoes what it was sent, as HTML
    good.routes[("HEAD", "/v2/rig/app/manifests/T")] = [(401, challenge(f"https://{good.host}/token"), b"")]
    good.routes[("GET", "/token")] = [(200, {"Content-Type": "text/html"}, b"<p>s3cret-pw</p>")]
    with pytest.raises(RigError) as caught:
        client.manifest_digest("rig/app", "T")
    assert PASSWORD not in str(caught.value)
    assert str(caught.value) == (
        f"registry {good.host}: token request answered 200 OK with something that is not JSON "
        "(text/html, 16 bytes)")


def test_a_token_answer_that_is_not_json_is_never_quoted(servers):
    """The body of a token answer may be a token (a misconfigured endpoint sending it raw): the
    error says the status, content type and length, nothing of the content."""
    good, _, client, _ = servers
    good.routes[("GET", "/v2/")] = [(401, challenge(f"https://{good.host}/token"), b"")]
    good.routes[("GET", "/token")] = [(200, {"Content-Type": "text/plain"}, b"ghs_RAWTOKEN42")]
    with pytest.raises(RigError) as caught:
        client.ping()
    assert str(caught.value) == (
        f"registry {good.host}: token request answered 200 OK with something that is not JSON "
        "(text/plain, 14 bytes)")


@pytest.mark.parametrize("body, message", [
    (b"<html>502 Bad Gateway</html>", "token request answered 200 OK with something that is not JSON"),
    (b"[1, 2]", "token response without a token"),
    (b'{"token": ""}', "token response without a token"),
    (b'{"token": "a\\nInjected: 1"}', "token response holds a token that is not a plain string"),
    (b'{"token": 42}', "token response holds a token that is not a plain string"),
])
def test_token_answers_that_make_no_sense_are_one_line_errors(servers, body, message):
    good, _, client, _ = servers
    good.routes[("GET", "/v2/")] = [(401, challenge(f"https://{good.host}/token"), b"")]
    good.routes[("GET", "/token")] = [(200, {"Content-Type": "application/json"}, body)]
    with pytest.raises(RigError) as caught:
        client.ping()
    assert str(caught.value).startswith(f"registry {good.host}: {message}")
    assert "\n" not in str(caught.value)


def test_429_and_5xx_are_retried_with_backoff_and_retry_after(servers):
    good, _, client, waits = servers
    good.routes[("HEAD", "/v2/rig/app/manifests/T")] = [
        (401, {"WWW-Authenticate": 'Basic realm="r"'}, b""),
        (503, {}, b""), (502, {}, b""), (429, {"Retry-After": "2"}, b""),
        (200, {"Docker-Content-Digest": DIGEST}, b""),
    ]
    assert client.manifest_digest("rig/app", "T") == DIGEST
    assert waits == [0.05, 0.1, 2.0]
    assert len(good.seen) == 5


def test_a_long_retry_after_or_endless_5xx_ends_in_one_line(servers):
    good, _, client, waits = servers
    good.routes[("GET", "/v2/")] = [(429, {"Retry-After": "3600"}, b"")]
    with pytest.raises(RigError, match=r"GET /v2/ answered 429 Too Many Requests "
                                       r"\(1 try; it asks to wait 3600 s\)$"):
        client.ping()
    good.routes[("GET", "/v2/")] = [(500, {}, b"")]
    with pytest.raises(RigError, match=r"GET /v2/ answered 500 Internal Server Error \(5 tries\)$"):
        client.ping()
    assert waits == [0.05, 0.1, 0.2, 0.4]


def test_retries_stop_at_the_deadline(servers):
    good, _, _, _ = servers
    client = RegistryClient(good.host, "robot", PASSWORD, servers[2].ca_file, timeout=5.0,
                            deadline=0.5, retries=100, backoff=0.1)
    good.routes[("GET", "/v2/")] = [(503, {}, b"")]
    started = time.monotonic()
    with pytest.raises(RigError, match=r"answered 503 Service Unavailable \(\d+ tries; the 0.5 s deadline"):
        client.ping()
    assert time.monotonic() - started < 1.5


def test_an_oversized_answer_is_cut_off(servers):
    good, _, client, _ = servers
    good.routes[("GET", "/v2/rig/app/manifests/src")] = [(200, {}, b"x" * (5 * 2**20))]
    with pytest.raises(RigError, match=r"GET /v2/rig/app/manifests/src: answer larger than 4194304 bytes"):
        client.copy_manifest("rig/app", "src", "T")


class Trickler:
    """A TLS server on 127.0.0.1 that answers one byte a second, in its headers or its body,
    for up to a minute (or until the client goes)."""

    def __init__(self, context, where: str):
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                head = (b"HTTP/1.1 200 OK\r\nX-Slow: " if where == "headers" else
                        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                        b"Content-Length: 100000\r\n\r\n")
                try:
                    self.wfile.write(head)
                    for _ in range(60):
                        self.wfile.write(b"a")
                        self.wfile.flush()
                        time.sleep(1)
                except OSError:
                    pass
                self.close_connection = True

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.host = f"127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, args=(0.02,), daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.parametrize("where", ["headers", "body"])
def test_a_server_that_trickles_still_meets_the_deadline(tls, where):
    """requests' timeout is per read: a byte a second never reaches it, and the call hung for
    as long as the server went on (the headers: up to 100 lines of 64 KiB each)."""
    server = Trickler(tls[1], where)
    client = RegistryClient(server.host, "robot", PASSWORD, tls[0], timeout=5.0, deadline=2.0)
    started = time.monotonic()
    try:
        with pytest.raises(RigError) as caught:
            client.ping()
    finally:
        server.close()
    assert time.monotonic() - started < 10
    assert str(caught.value) == f"registry {server.host}: GET /v2/: no complete answer within 2 s"


def test_no_answer_is_one_line_and_names_the_registry(tls):
    client = RegistryClient("127.0.0.1:9", "robot", PASSWORD, tls[0], timeout=2.0)
    with pytest.raises(RigError) as caught:
        client.ping()
    assert str(caught.value).startswith("registry 127.0.0.1:9: GET /v2/: no answer: ")
    assert PASSWORD not in str(caught.value) and "\n" not in str(caught.value)


def test_the_real_specs_registries_pass_the_realm_check(fleet, lab_fleet):
    for spec in (fleet, lab_fleet):
        reg = spec.registry
        realm = "https://ghcr.io/token" if reg.host == "ghcr.io" else f"https://{reg.host}/auth"
        RegistryClient(reg.host, reg.username, PASSWORD)._check_realm(realm)
    assert json.dumps(lab_fleet.registry.host) == '"10.77.0.1:5000"'


@pytest.mark.parametrize("location", [
    "https://{evil}/up", "//{evil}/up", "https://{good}:x@{evil}/up", "https://robot@{good}/up",
    "http://{good}/up", "https://127.0.0.1:1/up"])
def test_an_upload_location_off_the_registry_gets_nothing(servers, location):
    """push_blob sends the blob, with credentials, only to https on the registry's own host and
    port, without user info (https://host:x@evil/ names evil)."""
    good, evil, client, _ = servers
    good.routes[("POST", "/v2/rig/app/blobs/uploads/")] = [
        (401, {"WWW-Authenticate": 'Basic realm="r"'}, b""),
        (202, {"Location": location.format(good=good.host, evil=evil.host)}, b"")]
    with pytest.raises(RigError, match="is not on https://127.0.0.1:.*nothing is sent there"):
        client.push_blob("rig/app", b"payload")
    assert evil.seen == [] and not any(m == "PUT" for m, _, _ in good.seen)


def test_a_blob_goes_to_the_registrys_own_upload_location_once_with_its_digest(servers):
    import hashlib

    good, _, client, _ = servers
    digest = "sha256:" + hashlib.sha256(b"payload").hexdigest()
    good.routes[("POST", "/v2/rig/app/blobs/uploads/")] = [
        (202, {"Location": "/v2/rig/app/blobs/uploads/u1?_state=x"}, b"")]
    good.routes[("PUT", "/v2/rig/app/blobs/uploads/u1")] = [(201, {}, b"")]
    assert client.push_blob("rig/app", b"payload") == digest
    assert [(m, path) for m, path, _ in good.seen] == [
        ("HEAD", f"/v2/rig/app/blobs/{digest}"), ("POST", "/v2/rig/app/blobs/uploads/"),
        ("PUT", f"/v2/rig/app/blobs/uploads/u1?_state=x&digest={digest}")]
    good.routes[("HEAD", f"/v2/rig/app/blobs/{digest}")] = [(200, {}, b"")]
    good.seen.clear()
    assert client.push_blob("rig/app", b"payload") == digest      # there already: one HEAD
    assert [m for m, _, _ in good.seen] == ["HEAD"]
