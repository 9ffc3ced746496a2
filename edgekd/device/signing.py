"""Signed bundles: an Ed25519 signature over the exact bytes of ``manifest.json``.

The manifest carries every artifact's (and the calibration file's) sha256, so one
signature over its bytes covers the whole bundle: a flipped weight byte breaks a
hash, and a re-hashed manifest breaks the signature. The signature lives beside
the manifest in ``signature.json`` (algorithm, key id, base64 signature).

Keys are PEM files made by ``edgekd bundle keygen``: the private key signs on the
host (``edgekd bundle sign``), the public key is all a board needs. Where a key is
configured (``--key``, a target profile's ``trusted_key``, or ``EDGEKD_TRUSTED_KEY``)
an unsigned bundle or one signed by another key is refused.

DEVICE SIDE: the ``cryptography`` package (in ``edgekd[device]``) does the
cryptography; it is imported only when a signature is made or checked.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from edgekd.device.errors import EdgekdError
from edgekd.device.io import atomic_write_json

SIGNATURE_NAME = "signature.json"
ALGORITHM = "ed25519"
ENV_TRUSTED_KEY = "EDGEKD_TRUSTED_KEY"

__all__ = ["ALGORITHM", "ENV_TRUSTED_KEY", "SIGNATURE_NAME", "generate_key_pair", "key_id", "load_private_key",
           "load_public_key", "read_signature", "sign_manifest_bytes", "trusted_key_path", "verify_manifest_bytes",
           "write_signature"]


def _serialization() -> Any:
    try:
        from cryptography.hazmat.primitives import serialization
    except ImportError:
        raise EdgekdError("signing and verifying bundles needs the 'cryptography' package", field="--key",
                          fix='pip install "edgekd[device]"') from None
    return serialization


def trusted_key_path(explicit: str | os.PathLike | None = None) -> Path | None:
    """The public key bundles must be signed with: ``explicit``, else ``$EDGEKD_TRUSTED_KEY``, else None."""
    value = explicit if explicit not in (None, "") else os.environ.get(ENV_TRUSTED_KEY) or None
    return None if value is None else Path(value)


def generate_key_pair(private_path: str | os.PathLike, public_path: str | os.PathLike) -> str:
    """Write a new Ed25519 key pair (private key mode 0600, never overwritten); returns the key id."""
    serialization = _serialization()
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    private_path, public_path = Path(private_path), Path(public_path)
    for path in (private_path, public_path):
        if path.exists():
            raise EdgekdError("key file already exists", file=path, field="--out",
                              fix="choose another --out; a key is never overwritten")
    key = Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
    public_pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
    private_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(private_pem)
    public_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(public_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    with os.fdopen(fd, "wb") as handle:
        handle.write(public_pem)
    return key_id(key.public_key())


def key_id(public_key: Any) -> str:
    """A short fingerprint of a public key: sha256 of its raw 32 bytes, first 16 hex digits."""
    serialization = _serialization()
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def _read_key_file(path: str | os.PathLike, what: str) -> bytes:
    path = Path(path)
    if not path.is_file():
        raise EdgekdError(f"no such {what} file", file=path, field="--key",
                          fix="make a key pair with `edgekd bundle keygen --out KEYNAME`")
    return path.read_bytes()


def load_private_key(path: str | os.PathLike) -> Any:
    """The Ed25519 private key in PEM file ``path``."""
    serialization = _serialization()
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    try:
        key = serialization.load_pem_private_key(_read_key_file(path, "private key"), password=None)
    except (ValueError, TypeError) as exc:
        raise EdgekdError(f"not an unencrypted PEM private key ({exc})", file=path, field="--key",
                          fix="pass the .key file written by `edgekd bundle keygen`") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise EdgekdError(f"the key is {type(key).__name__}, not Ed25519", file=path, field="--key",
                          fix="make an Ed25519 key pair with `edgekd bundle keygen`")
    return key


def load_public_key(path: str | os.PathLike) -> Any:
    """The Ed25519 public key in PEM file ``path``."""
    serialization = _serialization()
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        key = serialization.load_pem_public_key(_read_key_file(path, "public key"))
    except (ValueError, TypeError) as exc:
        raise EdgekdError(f"not a PEM public key ({exc})", file=path, field="--key",
                          fix="pass the .pub file written by `edgekd bundle keygen` (not the private .key)") from None
    if not isinstance(key, Ed25519PublicKey):
        raise EdgekdError(f"the key is {type(key).__name__}, not Ed25519", file=path, field="--key",
                          fix="pass the Ed25519 .pub file written by `edgekd bundle keygen`")
    return key


def sign_manifest_bytes(manifest_bytes: bytes, private_key_path: str | os.PathLike) -> dict:
    """The signature record of ``manifest_bytes`` made with the private key in ``private_key_path``."""
    key = load_private_key(private_key_path)
    return {"algorithm": ALGORITHM, "key_id": key_id(key.public_key()),
            "manifest_sha256": hashlib.sha256(manifest_bytes).hexdigest(),
            "signature": base64.b64encode(key.sign(manifest_bytes)).decode("ascii")}


def write_signature(bundle_dir: str | os.PathLike, record: dict) -> Path:
    return atomic_write_json(Path(bundle_dir) / SIGNATURE_NAME, record)


def read_signature(bundle_dir: str | os.PathLike) -> dict | None:
    """The bundle's signature record, or None when it is unsigned; a malformed record is an error."""
    path = Path(bundle_dir) / SIGNATURE_NAME
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise EdgekdError(f"signature is not valid JSON ({exc})", file=path,
                          fix="sign the bundle again with `edgekd bundle sign`") from None
    if not isinstance(record, dict) or not isinstance(record.get("signature"), str):
        raise EdgekdError("signature record has no 'signature' string", file=path, field="signature",
                          fix="sign the bundle again with `edgekd bundle sign`")
    if record.get("algorithm") != ALGORITHM:
        raise EdgekdError(f"unsupported signature algorithm {record.get('algorithm')!r}", file=path,
                          field="algorithm", fix=f"sign the bundle with `edgekd bundle sign` ({ALGORITHM})")
    return record


def verify_manifest_bytes(bundle_dir: str | os.PathLike, manifest_bytes: bytes,
                          public_key_path: str | os.PathLike) -> str:
    """Check the bundle's signature over ``manifest_bytes`` with the trusted key; returns the key id.

    Raises :class:`EdgekdError` for an unsigned bundle, a signature by another key, or a
    manifest changed after signing (a re-hashed tampered artifact included).
    """
    from cryptography.exceptions import InvalidSignature

    key = load_public_key(public_key_path)
    trusted = key_id(key)
    path = Path(bundle_dir) / SIGNATURE_NAME
    record = read_signature(bundle_dir)
    if record is None:
        raise EdgekdError(f"bundle is not signed and a trusted key is configured ({public_key_path})", file=path,
                          fix="sign it on the host with `edgekd bundle sign BUNDLE --key KEY.key`, "
                              "or load only bundles you signed")
    try:
        signature = base64.b64decode(record["signature"], validate=True)
        key.verify(signature, manifest_bytes)
    except (InvalidSignature, ValueError):
        other = record.get("key_id")
        cause = (f"it was signed by another key ({other}, trusted: {trusted})" if other and other != trusted
                 else "manifest.json changed after it was signed (an edited or re-hashed bundle)")
        raise EdgekdError(f"bundle signature does not verify: {cause}", file=path, field="signature",
                          fix="re-export and sign the bundle; never edit a signed bundle") from None
    return trusted
