"""The recording signing key (Ed25519): files, loading, fingerprints.

The private key lives in ``state_dir/recording_ed25519.pem`` (PKCS#8 PEM, mode 0600)
unless configured; the public half is written beside it as ``*.pub.pem`` so auditors
can verify recordings without ever touching the private key.

Blocking file I/O: the recorder calls these from its writer thread, the CLI directly.
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
from pathlib import Path
from typing import Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

PRIVATE_KEY_NAME: Final = "recording_ed25519.pem"
PUBLIC_KEY_NAME: Final = "recording_ed25519.pub.pem"

log = logging.getLogger("gateway.recording")


class KeyFileError(Exception):
    pass


def public_key_path(private_key_path: Path) -> Path:
    """``x.pem`` -> ``x.pub.pem`` (any other name gets ``.pub.pem`` appended)."""
    name = private_key_path.name
    stem = name[: -len(".pem")] if name.endswith(".pem") else name
    return private_key_path.with_name(stem + ".pub.pem")


def fingerprint(public_key: Ed25519PublicKey) -> str:
    """``sha256:`` + hex SHA-256 of the raw 32-byte public key."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def _write_new(path: Path, data: bytes, mode: int) -> None:
    # O_EXCL: never overwrite a key (another replica may have just made one).
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def _public_pem(public_key: Ed25519PublicKey) -> bytes:
    return public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def load_or_create_signing_key(path: Path) -> Ed25519PrivateKey:
    """Load the private key at ``path``, generating it (0600) if absent."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        try:
            _write_new(path, pem, 0o600)
            log.info("generated recording signing key", extra={"path": str(path)})
        except FileExistsError:
            pass  # lost a race with another process: use theirs
    try:
        key_obj = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise KeyFileError(f"cannot load recording signing key {path}: {exc}") from None
    if not isinstance(key_obj, Ed25519PrivateKey):
        raise KeyFileError(f"recording signing key {path} is not an Ed25519 key")
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        log.warning(
            "recording signing key is readable by group or others",
            extra={"path": str(path), "mode": oct(mode)},
        )
    pub_path = public_key_path(path)
    if not pub_path.exists():
        try:
            _write_new(pub_path, _public_pem(key_obj.public_key()), 0o644)
        except FileExistsError:
            pass
        except OSError as exc:  # the public copy is a convenience; signing still works
            log.warning("cannot write recording public key", extra={"error": str(exc)})
    return key_obj


def load_public_key(path: Path) -> Ed25519PublicKey:
    """A public key PEM; a private key PEM is accepted too (its public half is used)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise KeyFileError(f"cannot read key file {path}: {exc.strerror}") from None
    try:
        if b"PRIVATE KEY" in data:
            private = serialization.load_pem_private_key(data, password=None)
            if isinstance(private, Ed25519PrivateKey):
                return private.public_key()
            raise KeyFileError(f"{path} is not an Ed25519 key")
        public = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        raise KeyFileError(f"cannot load key file {path}: {exc}") from None
    if not isinstance(public, Ed25519PublicKey):
        raise KeyFileError(f"{path} is not an Ed25519 public key")
    return public


def signature_valid(public_key: Ed25519PublicKey, signature: bytes, message: bytes) -> bool:
    try:
        public_key.verify(signature, message)
    except InvalidSignature:
        return False
    return True
