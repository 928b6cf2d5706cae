"""Ed25519 keys for audit logs, as PEM files: a private key signs, its public key verifies."""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
    load_pem_private_key,
    load_pem_public_key,
)

from soberana.operator.audit.chain import Signer, public_bytes


class KeyFileError(ValueError):
    """A key file that cannot be used, with what to do about it."""


def load_signer(path: Path) -> Signer:
    """The signing key in ``path``: an unencrypted PKCS#8 PEM Ed25519 private key."""
    try:
        key = load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as error:
        raise KeyFileError(
            f"{path}: not an unencrypted PEM private key ({error}); make one with "
            f"'soberana audit keygen'"
        ) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(
            f"{path}: the audit signing key must be Ed25519, not {type(key).__name__}"
        )
    return Signer(key)


def load_public_key(path: Path) -> bytes:
    """The raw bytes of the Ed25519 public key in ``path`` (PEM), or of a private key's half."""
    data = path.read_bytes()
    try:
        public = load_pem_public_key(data)
    except ValueError:
        try:
            private = load_pem_private_key(data, password=None)
        except (ValueError, TypeError):
            raise KeyFileError(f"{path}: not a PEM Ed25519 public key") from None
        public = private.public_key()
    if not isinstance(public, Ed25519PublicKey):
        raise KeyFileError(f"{path}: the audit key must be Ed25519, not {type(public).__name__}")
    return public_bytes(public)


def generate(private_path: Path, public_path: Path) -> Signer:
    """A new key pair: the private key written readable by its owner only."""
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    descriptor = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as file:
        file.write(pem)
    public_path.write_bytes(
        key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    )
    return Signer(key)
