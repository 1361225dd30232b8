"""rig.supply against public third-party test vectors (sigstore-rs, the DSSE protocol, cosign's own
test key) and against independent few-line implementations written here with plain `cryptography`,
hashlib and PyNaCl: rig's signatures, envelopes and encrypted keys must be cosign's formats.

The vectors are in ../shared/fixtures/supply-chain beside the checkout (the CI clones it there);
without them these tests fail, they never skip."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import nacl.secret
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from hypothesis import given, settings
from hypothesis import strategies as st

from rig.errors import RigError
from rig.supply import dsse, keys, simplesign

VECTORS = Path(__file__).resolve().parents[2].parent / "shared" / "fixtures" / "supply-chain"
DIGEST = "sha256:" + "ab" * 32


@pytest.fixture(scope="module")
def vectors() -> Path:
    if not (VECTORS / "README.md").is_file():
        pytest.fail(
            f"the supply-chain test vectors are missing: expected {VECTORS} "
            "(clone the shared fixtures beside the repository as ../shared)"
        )
    return VECTORS


@pytest.fixture(scope="module")
def simple(vectors):
    d = vectors / "simple-signing"
    return {
        "payload": (d / "payload.json").read_bytes(),
        "sig": (d / "signature.b64").read_text().strip(),
        "key": keys.load_public_key(d / "key.pub"),
        "key_pem": (d / "key.pub").read_bytes(),
    }


@pytest.fixture(scope="module")
def dsse_vector(vectors):
    d = vectors / "dsse"
    numbers = json.loads((d / "key.json").read_text())
    assert numbers["curve"] == "P-256"
    key = ec.EllipticCurvePublicNumbers(int(numbers["x"]), int(numbers["y"]), ec.SECP256R1()).public_key()
    return {"env": json.loads((d / "envelope.json").read_text()), "key": key, "pae": numbers.get("pae")}


@pytest.fixture(scope="module")
def cosign_key(vectors):
    d = vectors / "cosign-key"
    return d / "cosign.key", (d / "password.txt").read_bytes().removesuffix(b"\n")


def _flip(data: bytes, i: int) -> bytes:
    return data[:i] + bytes([data[i] ^ 0x01]) + data[i + 1 :]


def _p256_pem() -> tuple[ec.EllipticCurvePrivateKey, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return key, pem


def _cosign_encrypt(der: bytes, password: bytes, n: int = 1024) -> bytes:
    """cosign's encrypted key format, written independently of rig (hashlib scrypt + nacl)."""
    salt, nonce = b"s" * 32, b"n" * 24
    box_key = hashlib.scrypt(password, salt=salt, n=n, r=8, p=1, dklen=32)
    ct = nacl.secret.SecretBox(box_key).encrypt(der, nonce).ciphertext
    doc = {
        "kdf": {
            "name": "scrypt",
            "params": {"N": n, "r": 8, "p": 1},
            "salt": base64.b64encode(salt).decode(),
        },
        "cipher": {"name": "nacl/secretbox", "nonce": base64.b64encode(nonce).decode()},
        "ciphertext": base64.b64encode(ct).decode(),
    }
    body = base64.encodebytes(json.dumps(doc).encode()).decode()
    label = "ENCRYPTED COSIGN PRIVATE KEY"
    return f"-----BEGIN {label}-----\n{body}-----END {label}-----\n".encode()


# -- simple signing: sigstore-rs's vector ------------------------------------------------------------


def test_simple_signing_vector_verifies_and_parses(simple):
    assert simplesign.verify(simple["key"], simple["payload"], simple["sig"]) is True
    assert simplesign.parse_payload(simple["payload"]) == (
        "registry-testing.svc.lan/busybox",
        "sha256:f3cfc9d0dbf931d3db4685ec659b7ac68e2a578219da4aae65427886e649b06b",
    )


def test_simple_signing_vector_one_byte_changed_does_not_verify(simple):
    payload, sig = simple["payload"], base64.b64decode(simple["sig"])
    for i in (0, len(payload) // 2, len(payload) - 1):
        assert simplesign.verify(simple["key"], _flip(payload, i), simple["sig"]) is False
    for i in (10, len(sig) // 2, len(sig) - 1):
        assert simplesign.verify(simple["key"], payload, base64.b64encode(_flip(sig, i)).decode()) is False


def test_payload_reproduces_the_vector_byte_for_byte(simple):
    repository, digest = simplesign.parse_payload(simple["payload"])
    assert simplesign.payload(repository, digest) == simple["payload"]


def test_verify_never_raises_on_bad_input(simple):
    for bad in ("", "not base64!", "AAAA", base64.b64encode(b"\x30\x02\x00\x00").decode(), None, 7):
        assert simplesign.verify(simple["key"], simple["payload"], bad) is False
    assert simplesign.verify(None, simple["payload"], simple["sig"]) is False
    assert simplesign.verify(simple["key"], "text, not bytes", simple["sig"]) is False


def test_payload_and_tags_refuse_bad_references():
    assert simplesign.sig_tag(DIGEST) == "sha256-" + "ab" * 32 + ".sig"
    assert simplesign.att_tag(DIGEST) == "sha256-" + "ab" * 32 + ".att"
    for digest in ("sha256:" + "AB" * 32, "sha256:abc", "sha512:" + "ab" * 32, "ab" * 32):
        with pytest.raises(RigError):
            simplesign.payload("registry.lan/app", digest)
        with pytest.raises(RigError):
            simplesign.sig_tag(digest)
    for repository in ("registry.lan/app:1.0", "registry.lan/app@" + DIGEST, "", "Registry.lan/App", "a b"):
        with pytest.raises(RigError):
            simplesign.payload(repository, DIGEST)
    assert simplesign.payload("localhost:5000/team/app", DIGEST).startswith(
        b'{"critical":{"identity":{"docker-reference":"localhost:5000/team/app"},'
    )


@pytest.mark.parametrize(
    "doc",
    [
        b"[]",
        b"{}",
        b'{"critical":{"identity":{"docker-reference":"r.lan/a"},"image":{"docker-manifest-digest":"%s"},'
        b'"type":"something else"},"optional":null}' % DIGEST.encode(),
        b'{"critical":{"identity":{},"image":{"docker-manifest-digest":"%s"},'
        b'"type":"cosign container image signature"},"optional":null}' % DIGEST.encode(),
        b'{"critical":{"identity":{"docker-reference":"r.lan/a"},"image":{},'
        b'"type":"cosign container image signature"},"optional":null}',
        b'{"critical":{"identity":{"docker-reference":"r.lan/a"},"image":{"docker-manifest-digest":"%s"},'
        b'"type":"cosign container image signature","type":"cosign container image signature"}}'
        % DIGEST.encode(),
        b"\xff\xfe",
    ],
)
def test_parse_payload_is_strict(doc):
    with pytest.raises(RigError):
        simplesign.parse_payload(doc)


# -- DSSE: the protocol's test vector ----------------------------------------------------------------


def test_dsse_vector_verifies(dsse_vector):
    payload, key = dsse.verify_envelope(dsse_vector["env"], [dsse_vector["key"]])
    assert payload == b"hello world"
    assert key is dsse_vector["key"]
    assert dsse_vector["pae"], "the DSSE vector's key.json should carry the PAE string"
    assert dsse.pae(dsse_vector["env"]["payloadType"], payload) == dsse_vector["pae"].encode()


def test_dsse_vector_one_byte_changed_is_refused(dsse_vector):
    env = dsse_vector["env"]
    payload = base64.b64decode(env["payload"])
    sig = base64.b64decode(env["signatures"][0]["sig"])
    for i in (0, len(payload) - 1):
        bad = dict(env, payload=base64.b64encode(_flip(payload, i)).decode())
        with pytest.raises(RigError, match="verifies"):
            dsse.verify_envelope(bad, [dsse_vector["key"]])
    for i in (0, 40, len(sig) - 1):
        bad = dict(env, signatures=[{"sig": base64.b64encode(_flip(sig, i)).decode()}])
        with pytest.raises(RigError, match="verifies"):
            dsse.verify_envelope(bad, [dsse_vector["key"]])
    bad = dict(env, payloadType=env["payloadType"] + "x")
    with pytest.raises(RigError):
        dsse.verify_envelope(bad, [dsse_vector["key"]])


def test_dsse_vector_with_another_key_is_refused(dsse_vector):
    other = ec.generate_private_key(ec.SECP256R1()).public_key()
    with pytest.raises(RigError):
        dsse.verify_envelope(dsse_vector["env"], [other])
    payload, key = dsse.verify_envelope(dsse_vector["env"], [other, dsse_vector["key"]])
    assert key is dsse_vector["key"]


@pytest.mark.parametrize(
    "env",
    [
        None,
        [],
        {"payload": "aGk=", "signatures": [{"sig": "AAAA"}]},
        {"payloadType": "t", "payload": "not base64!", "signatures": [{"sig": "AAAA"}]},
        {"payloadType": "t", "payload": "aGk=", "signatures": []},
        {"payloadType": "t", "payload": "aGk=", "signatures": ["AAAA"]},
        {"payloadType": "t", "payload": "aGk=", "signatures": [{"sig": 5}]},
        {"payloadType": "t", "payload": "aGk=", "signatures": [{"keyid": 5, "sig": "AAAA"}]},
    ],
)
def test_verify_envelope_checks_the_shape(env, dsse_vector):
    with pytest.raises(RigError):
        dsse.verify_envelope(env, [dsse_vector["key"]])


# -- cosign's encrypted key: cosign's own test key ---------------------------------------------------


def test_cosign_key_vector_decrypts(cosign_key):
    path, password = cosign_key
    assert password == b"hello"
    key = keys.load_private_key(path, password)
    assert isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP256R1)
    assert keys.is_encrypted(path) is True
    # the key it holds signs, and its public half verifies
    sig = simplesign.sign(key, b"data")
    assert simplesign.verify(key.public_key(), b"data", sig)


def test_cosign_key_wrong_password_names_the_file(cosign_key):
    path, _ = cosign_key
    with pytest.raises(RigError) as e:
        keys.load_private_key(path, b"hellO-wrong")
    assert "wrong password" in str(e.value) and str(path) in str(e.value)
    assert "hellO-wrong" not in str(e.value)
    with pytest.raises(RigError, match="password"):
        keys.load_private_key(path, None)


def test_cosign_key_damaged_files_are_refused(cosign_key, tmp_path):
    path, password = cosign_key
    text = path.read_text()
    lines = text.splitlines()
    damaged = {
        "truncated.key": text[: len(text) // 2],
        "no-end.key": "\n".join(lines[:-1]) + "\n",
        "garbled-b64.key": "\n".join([lines[0], "!!!!" + lines[1][4:], *lines[2:]]) + "\n",
        "empty.key": "",
    }
    # one character of the ciphertext changed: the JSON and base64 stay valid, the MAC does not
    body = json.loads(base64.b64decode("".join(lines[1:-1])))
    ct = bytearray(base64.b64decode(body["ciphertext"]))
    ct[20] ^= 1
    body["ciphertext"] = base64.b64encode(bytes(ct)).decode()
    damaged["garbled-ciphertext.key"] = "\n".join(
        [lines[0], base64.b64encode(json.dumps(body).encode()).decode(), lines[-1]]
    )
    body["kdf"]["params"]["N"] = 1 << 30
    damaged["huge-scrypt.key"] = "\n".join(
        [lines[0], base64.b64encode(json.dumps(body).encode()).decode(), lines[-1]]
    )
    damaged["not-json.key"] = "\n".join([lines[0], base64.b64encode(b"{nope").decode(), lines[-1]])
    for name, content in damaged.items():
        bad = tmp_path / name
        bad.write_text(content)
        with pytest.raises(RigError) as e:
            keys.load_private_key(bad, password)
        assert str(bad) in str(e.value), name
    with pytest.raises(RigError, match="cannot read"):
        keys.load_private_key(tmp_path / "absent.key", password)


def test_independently_encrypted_cosign_key_loads(tmp_path):
    key, _ = _p256_pem()
    der = key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    path = tmp_path / "old-cosign.key"
    path.write_bytes(_cosign_encrypt(der, b"pw"))
    loaded = keys.load_private_key(path, b"pw")
    assert loaded.private_numbers() == key.private_numbers()
    assert keys.is_encrypted(path)


# -- new keys ---------------------------------------------------------------------------------------


def test_generate_encrypted_round_trips(tmp_path):
    private_pem, public_pem = keys.generate_encrypted(b"correct horse")
    assert private_pem.startswith(b"-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\n")
    assert public_pem.startswith(b"-----BEGIN PUBLIC KEY-----\n")
    (tmp_path / "cosign.key").write_bytes(private_pem)
    (tmp_path / "cosign.pub").write_bytes(public_pem)
    key = keys.load_private_key(tmp_path / "cosign.key", b"correct horse")
    assert keys.is_encrypted(tmp_path / "cosign.key") is True
    public = keys.load_public_key(tmp_path / "cosign.pub")
    sig = simplesign.sign(key, b"payload")
    assert simplesign.verify(public, b"payload", sig)
    assert keys.key_id(public) == keys.key_id(key.public_key())
    assert keys.key_id(public).startswith("sha256:") and len(keys.key_id(public)) == 7 + 64
    assert keys.short_id(public) == keys.key_id(public)[7:19]
    with pytest.raises(RigError):
        keys.load_private_key(tmp_path / "cosign.key", b"correct horsE")


def test_generated_key_has_cosigns_layout_and_decrypts_independently():
    private_pem, public_pem = keys.generate_encrypted(b"pw")
    lines = private_pem.decode().splitlines()
    assert lines[-1] == "-----END ENCRYPTED SIGSTORE PRIVATE KEY-----"
    assert all(len(line) <= 64 for line in lines[1:-1])
    raw = base64.b64decode("".join(lines[1:-1]))
    doc = json.loads(raw)
    assert list(doc) == ["kdf", "cipher", "ciphertext"]
    assert list(doc["kdf"]) == ["name", "params", "salt"]
    assert doc["kdf"]["name"] == "scrypt" and doc["kdf"]["params"] == {"N": 32768, "r": 8, "p": 1}
    assert list(doc["kdf"]["params"]) == ["N", "r", "p"]
    assert doc["cipher"]["name"] == "nacl/secretbox" and list(doc["cipher"]) == ["name", "nonce"]
    assert b" " not in raw
    salt, nonce = base64.b64decode(doc["kdf"]["salt"]), base64.b64decode(doc["cipher"]["nonce"])
    assert len(salt) == 32 and len(nonce) == 24
    box_key = hashlib.scrypt(b"pw", salt=salt, n=32768, r=8, p=1, dklen=32, maxmem=64 << 20)
    der = nacl.secret.SecretBox(box_key).decrypt(base64.b64decode(doc["ciphertext"]), nonce)
    key = serialization.load_der_private_key(der, None)
    assert key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ) == public_pem


def test_empty_password_is_refused():
    with pytest.raises(RigError, match="empty password"):
        keys.generate_encrypted(b"")


def test_plain_pem_private_keys_load_and_are_not_encrypted(tmp_path):
    key, pkcs8 = _p256_pem()
    sec1 = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    enc = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"pw"),
    )
    for name, pem in (("pkcs8.pem", pkcs8), ("sec1.pem", sec1)):
        (tmp_path / name).write_bytes(pem)
        assert keys.is_encrypted(tmp_path / name) is False
        assert keys.load_private_key(tmp_path / name, None).private_numbers() == key.private_numbers()
        assert keys.load_private_key(tmp_path / name, b"ignored").private_numbers() == key.private_numbers()
    (tmp_path / "enc.pem").write_bytes(enc)
    assert keys.is_encrypted(tmp_path / "enc.pem") is True
    assert keys.load_private_key(tmp_path / "enc.pem", b"pw").private_numbers() == key.private_numbers()
    with pytest.raises(RigError, match="wrong password"):
        keys.load_private_key(tmp_path / "enc.pem", b"nope")


# -- independent verification of what rig writes ----------------------------------------------------


def test_rig_signature_verifies_with_plain_cryptography(tmp_path):
    private_pem, public_pem = keys.generate_encrypted(b"pw")
    (tmp_path / "k").write_bytes(private_pem)
    key = keys.load_private_key(tmp_path / "k", b"pw")
    data = simplesign.payload("registry.lan/team/app", DIGEST)
    sig = simplesign.sign(key, data)
    # independent: nothing from rig below
    public_key = serialization.load_pem_public_key(public_pem)
    public_key.verify(base64.b64decode(sig), data, ec.ECDSA(hashes.SHA256()))
    assert base64.b64decode(sig)[0] == 0x30  # ASN.1 DER SEQUENCE, not raw r||s


def test_rig_envelope_verifies_with_independent_pae():
    key = ec.generate_private_key(ec.SECP256R1())
    stmt = dsse.statement("registry.lan/team/app", DIGEST, "https://example.com/pred/v1", {"a": 1})
    body = json.dumps(stmt).encode()
    env = dsse.envelope(dsse.INTOTO, body, key, keyid="k1")
    # independent: PAE and verification written here
    payload = base64.b64decode(env["payload"])
    ptype = env["payloadType"].encode()
    pae = b"DSSEv1 %d %s %d %s" % (len(ptype), ptype, len(payload), payload)
    key.public_key().verify(base64.b64decode(env["signatures"][0]["sig"]), pae, ec.ECDSA(hashes.SHA256()))
    assert env["signatures"][0]["keyid"] == "k1"
    assert payload == body
    assert json.loads(payload) == {
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{"name": "registry.lan/team/app", "digest": {"sha256": "ab" * 32}}],
        "predicateType": "https://example.com/pred/v1",
        "predicate": {"a": 1},
    }
    # and rig verifies its own envelope
    other = ec.generate_private_key(ec.SECP256R1()).public_key()
    payload_back, signer = dsse.verify_envelope(env, [other, key.public_key()])
    assert payload_back == body and signer == key.public_key() and signer != other


def test_signature_by_another_key_does_not_verify():
    key, other = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    sig = simplesign.sign(key, b"data")
    assert simplesign.verify(other.public_key(), b"data", sig) is False
    env = dsse.envelope(dsse.INTOTO, b"{}", key)
    with pytest.raises(RigError):
        dsse.verify_envelope(env, [other.public_key()])


@pytest.mark.parametrize("kind", ["p384", "ed25519"])
def test_non_p256_keys_are_refused_naming_the_file(kind, tmp_path):
    key = ec.generate_private_key(ec.SECP384R1()) if kind == "p384" else ed25519.Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    der = key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    files = {"plain.key": private, "cosign.key": _cosign_encrypt(der, b"pw")}
    for name, content in files.items():
        path = tmp_path / f"{kind}-{name}"
        path.write_bytes(content)
        with pytest.raises(RigError, match="P-256") as e:
            keys.load_private_key(path, b"pw")
        assert str(path) in str(e.value)
    (tmp_path / f"{kind}.pub").write_bytes(public)
    with pytest.raises(RigError, match="P-256") as e:
        keys.load_public_key(tmp_path / f"{kind}.pub")
    assert str(tmp_path / f"{kind}.pub") in str(e.value)
    with pytest.raises(RigError, match="P-256"):
        keys.load_public_key_bytes(public, "the registry's key")


def test_public_key_loader_refuses_a_private_key(tmp_path):
    _, pem = _p256_pem()
    with pytest.raises(RigError, match="not a public key"):
        keys.load_public_key_bytes(pem, "k.pub")


# -- properties: strict parsers end in a result or a RigError, never another exception -------------

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
_b64text = st.binary(max_size=80).map(lambda b: base64.b64encode(b).decode())


@settings(max_examples=200, deadline=None)
@given(
    st.one_of(
        st.binary(max_size=300),
        _json.map(lambda v: json.dumps(v).encode()),
        st.builds(
            lambda ref, digest, typ: json.dumps(
                {
                    "critical": {
                        "identity": {"docker-reference": ref},
                        "image": {"docker-manifest-digest": digest},
                        "type": typ,
                    },
                    "optional": None,
                }
            ).encode(),
            st.text(max_size=30) | st.just("r.lan/app"),
            st.text(max_size=80) | st.just(DIGEST),
            st.just("cosign container image signature") | st.text(max_size=5),
        ),
    )
)
def test_parse_payload_returns_valid_or_rig_error(data):
    try:
        repository, digest = simplesign.parse_payload(data)
    except RigError:
        return
    assert simplesign.payload(repository, digest)  # valid: it round-trips through payload()
    assert simplesign.parse_payload(simplesign.payload(repository, digest)) == (repository, digest)


_PROPERTY_KEY = ec.generate_private_key(ec.SECP256R1())


@settings(max_examples=200, deadline=None)
@given(
    st.one_of(
        _json,
        st.fixed_dictionaries(
            {},
            optional={
                "payloadType": st.text(max_size=10) | _json,
                "payload": _b64text | _json,
                "signatures": st.lists(
                    st.fixed_dictionaries({}, optional={"sig": _b64text | _json, "keyid": _json}) | _json,
                    max_size=3,
                )
                | _json,
            },
        ),
    )
)
def test_verify_envelope_returns_or_rig_error(env):
    try:
        payload, key = dsse.verify_envelope(env, [_PROPERTY_KEY.public_key()])
    except RigError:
        return
    assert isinstance(payload, bytes) and key is not None
