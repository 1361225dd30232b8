"""Keys in cosign's formats: ECDSA P-256 only.

A cosign private key file is a PEM block labelled `ENCRYPTED SIGSTORE PRIVATE KEY` (older cosign:
`ENCRYPTED COSIGN PRIVATE KEY`) whose body is JSON (go-securesystemslib's `encrypted` package):
`{"kdf":{"name":"scrypt","params":{"N":..,"r":..,"p":..},"salt":b64},"cipher":{"name":"nacl/secretbox",
"nonce":b64},"ciphertext":b64}`; the password, through scrypt, is the secretbox key and the plaintext
is the PKCS#8 DER private key. Plain PEM private keys (PKCS#8, SEC1 "EC PRIVATE KEY") are accepted too.
Errors name the file, never the password or any key material.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import re
from pathlib import Path

import nacl.exceptions
import nacl.secret
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from rig.errors import RigError

SIGSTORE_LABEL = "ENCRYPTED SIGSTORE PRIVATE KEY"
COSIGN_LABEL = "ENCRYPTED COSIGN PRIVATE KEY"
COSIGN_LABELS = (SIGSTORE_LABEL, COSIGN_LABEL)

# cosign's (go-securesystemslib's) parameters for new keys
SCRYPT_N, SCRYPT_R, SCRYPT_P = 32768, 8, 1
SALT_BYTES = 32
# limits for reading: a file must not make rig spend gigabytes of memory on scrypt (128*N*r bytes)
_MAX_N, _MAX_R, _MAX_P = 1 << 20, 32, 16
_MAX_SCRYPT_MEMORY = 256 << 20

_PEM = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----\r?\n(.*?)-----END \1-----", re.DOTALL)


def _read(path: Path) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise RigError(f"cannot read the key file {path}: {e.strerror or e}") from None


def _first_pem(data: bytes, name: str) -> tuple[str, bytes]:
    """(label, whole text of the block) of the first PEM block in `data`."""
    m = _PEM.search(data)
    if not m:
        raise RigError(f"{name} is not a PEM key file (no -----BEGIN ...----- block)")
    return m.group(1).decode("ascii"), m.group(0)


def _key_kind(key: object) -> str:
    if isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey):
        return f"an ECDSA {key.curve.name} key"
    if isinstance(key, ed25519.Ed25519PrivateKey | ed25519.Ed25519PublicKey):
        return "an Ed25519 key"
    if isinstance(key, ed448.Ed448PrivateKey | ed448.Ed448PublicKey):
        return "an Ed448 key"
    if isinstance(key, rsa.RSAPrivateKey | rsa.RSAPublicKey):
        return f"an RSA-{key.key_size} key"
    return f"a {type(key).__name__}"


def is_p256(key: object) -> bool:
    return isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey) and isinstance(
        key.curve, ec.SECP256R1
    )


def _require_p256(key: object, name: str):
    if not is_p256(key):
        raise RigError(f"{name} holds {_key_kind(key)}; rig signs and verifies with ECDSA P-256 keys only")
    return key


def _b64(value: object, what: str, name: str) -> bytes:
    if not isinstance(value, str):
        raise RigError(f"{name} is damaged: {what} is not a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise RigError(f"{name} is damaged: {what} is not valid base64") from None


def _int_param(params: dict, key: str, limit: int, name: str) -> int:
    v = params.get(key)
    if type(v) is not int or not 1 <= v <= limit:
        raise RigError(f"{name}: the scrypt parameter {key} is missing or out of range (at most {limit})")
    return v


def _derive(password: bytes, salt: bytes, n: int, r: int, p: int) -> bytes:
    return Scrypt(salt=salt, length=nacl.secret.SecretBox.KEY_SIZE, n=n, r=r, p=p).derive(password)


def _decrypt_cosign(body: bytes, password: bytes, name: str) -> bytes:
    """The PKCS#8 DER inside a cosign encrypted key (`body`: the PEM block's base64-decoded bytes)."""
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):
        raise RigError(f"{name} is damaged: its PEM body is not cosign's JSON key format") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("kdf"), dict) or not isinstance(
        doc.get("cipher"), dict
    ):
        raise RigError(f"{name} is damaged: expected the fields kdf, cipher and ciphertext")
    kdf, cipher = doc["kdf"], doc["cipher"]
    if kdf.get("name") != "scrypt":
        raise RigError(
            f"{name}: unsupported key derivation {str(kdf.get('name'))[:40]!r} (cosign uses scrypt)"
        )
    if cipher.get("name") != "nacl/secretbox":
        raise RigError(
            f"{name}: unsupported cipher {str(cipher.get('name'))[:40]!r} (cosign uses nacl/secretbox)"
        )
    params = kdf.get("params")
    if not isinstance(params, dict):
        raise RigError(f"{name} is damaged: the scrypt parameters are missing")
    n = _int_param(params, "N", _MAX_N, name)
    r = _int_param(params, "r", _MAX_R, name)
    p = _int_param(params, "p", _MAX_P, name)
    if n < 2 or n & (n - 1):
        raise RigError(f"{name}: the scrypt parameter N must be a power of 2")
    if 128 * n * r > _MAX_SCRYPT_MEMORY:
        raise RigError(f"{name}: the scrypt parameters N and r ask for more than 256 MiB of memory")
    salt = _b64(kdf.get("salt"), "the salt", name)
    nonce = _b64(cipher.get("nonce"), "the nonce", name)
    ciphertext = _b64(doc.get("ciphertext"), "the ciphertext", name)
    if len(nonce) != nacl.secret.SecretBox.NONCE_SIZE:
        raise RigError(f"{name} is damaged: the nonce is not {nacl.secret.SecretBox.NONCE_SIZE} bytes")
    if not salt:
        raise RigError(f"{name} is damaged: the salt is empty")
    key = _derive(password, salt, n, r, p)
    try:
        return nacl.secret.SecretBox(key).decrypt(ciphertext, nonce)
    except (nacl.exceptions.CryptoError, ValueError, TypeError):
        raise RigError(f"wrong password for {name} (or the file is damaged)") from None


def _is_encrypted_pem(label: str, block: bytes) -> bool:
    return label in COSIGN_LABELS or label == "ENCRYPTED PRIVATE KEY" or b"Proc-Type: 4,ENCRYPTED" in block


def is_encrypted(path: Path) -> bool:
    """Whether the private key file is protected by a password (cosign's format or an encrypted PEM)."""
    label, block = _first_pem(_read(path), str(path))
    return _is_encrypted_pem(label, block)


def load_private_key(path: Path, password: bytes | None) -> ec.EllipticCurvePrivateKey:
    """The P-256 private key in `path` (cosign's encrypted format or a plain PEM private key)."""
    name = str(path)
    label, block = _first_pem(_read(path), name)
    if label in COSIGN_LABELS:
        if password is None:
            raise RigError(f"{name} is an encrypted cosign key: a password is needed")
        body = b"".join(block.splitlines()[1:-1])
        try:
            raw = base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError):
            raise RigError(f"{name} is damaged: its PEM body is not base64") from None
        der = _decrypt_cosign(raw, password, name)
        try:
            key = serialization.load_der_private_key(der, password=None)
        except (ValueError, TypeError, UnsupportedAlgorithm):
            raise RigError(f"{name} is damaged: the decrypted key is not a PKCS#8 private key") from None
        return _require_p256(key, name)
    if "PRIVATE KEY" not in label:
        raise RigError(f"{name} is not a private key (its PEM block is {label!r})")
    encrypted = _is_encrypted_pem(label, block)
    if encrypted and not password:
        raise RigError(f"{name} is an encrypted private key: a password is needed")
    try:
        key = serialization.load_pem_private_key(block, password=password if encrypted else None)
    except (ValueError, TypeError):
        if encrypted:
            raise RigError(f"wrong password for {name} (or the file is damaged)") from None
        raise RigError(f"{name} is damaged: its {label} block cannot be read") from None
    except UnsupportedAlgorithm:
        raise RigError(f"{name} holds a key of a kind rig does not support (ECDSA P-256 only)") from None
    return _require_p256(key, name)


def _pem(label: str, der: bytes) -> bytes:
    """PEM as Go's encoding/pem writes it: 64-character lines."""
    b64 = base64.b64encode(der).decode("ascii")
    lines = [b64[i : i + 64] for i in range(0, len(b64), 64)]
    return ("\n".join([f"-----BEGIN {label}-----", *lines, f"-----END {label}-----"]) + "\n").encode()


def encrypt_private_key(key: ec.EllipticCurvePrivateKey, password: bytes) -> bytes:
    """`key` as a cosign encrypted PEM (`ENCRYPTED SIGSTORE PRIVATE KEY`)."""
    if not isinstance(password, bytes) or not password:
        raise RigError("an empty password is refused: the private key would be readable by anyone")
    _require_p256(key, "the key to encrypt")
    der = key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    salt = os.urandom(SALT_BYTES)
    nonce = os.urandom(nacl.secret.SecretBox.NONCE_SIZE)
    box_key = _derive(password, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
    ciphertext = nacl.secret.SecretBox(box_key).encrypt(der, nonce).ciphertext
    doc = {
        "kdf": {
            "name": "scrypt",
            "params": {"N": SCRYPT_N, "r": SCRYPT_R, "p": SCRYPT_P},
            "salt": base64.b64encode(salt).decode("ascii"),
        },
        "cipher": {"name": "nacl/secretbox", "nonce": base64.b64encode(nonce).decode("ascii")},
        "ciphertext": base64.b64encode(ciphertext).decode("ascii"),
    }
    return _pem(SIGSTORE_LABEL, json.dumps(doc, separators=(",", ":")).encode())


def public_pem(public_key: ec.EllipticCurvePublicKey) -> bytes:
    """`-----BEGIN PUBLIC KEY-----` SubjectPublicKeyInfo PEM, as cosign writes `cosign.pub`."""
    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return _pem("PUBLIC KEY", der)


def generate_encrypted(password: bytes) -> tuple[bytes, bytes]:
    """A new P-256 key: (cosign encrypted private key PEM, public key PEM)."""
    if not isinstance(password, bytes) or not password:
        raise RigError("an empty password is refused: the private key would be readable by anyone")
    key = ec.generate_private_key(ec.SECP256R1())
    return encrypt_private_key(key, password), public_pem(key.public_key())


def load_public_key_bytes(data: bytes, name: str) -> ec.EllipticCurvePublicKey:
    """The P-256 public key in PEM `data` (`name` says where it came from, for errors)."""
    if not isinstance(data, bytes):
        raise RigError(f"{name} is not a public key")
    label, block = _first_pem(data, name)
    if label != "PUBLIC KEY":
        raise RigError(f"{name} is not a public key (its PEM block is {label!r}, expected 'PUBLIC KEY')")
    try:
        key = serialization.load_pem_public_key(block)
    except ValueError:
        raise RigError(f"{name} is damaged: its PUBLIC KEY block cannot be read") from None
    except UnsupportedAlgorithm:
        raise RigError(f"{name} holds a key of a kind rig does not support (ECDSA P-256 only)") from None
    return _require_p256(key, name)


def load_public_key(path: Path) -> ec.EllipticCurvePublicKey:
    return load_public_key_bytes(_read(path), str(path))


def key_id(public_key: ec.EllipticCurvePublicKey) -> str:
    """`sha256:<hex>` of the public key's DER SubjectPublicKeyInfo."""
    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return "sha256:" + hashlib.sha256(der).hexdigest()


def short_id(public_key: ec.EllipticCurvePublicKey) -> str:
    """The first 12 hex characters of `key_id`, for messages ("signed by key <id>")."""
    return key_id(public_key).removeprefix("sha256:")[:12]
