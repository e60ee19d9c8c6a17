"""Object versions the driver can compare across rotation polls without learning the content.

A version is an HMAC-SHA256 over the object's identity, its backend version id, its path and its
content, keyed per daemon (or by a key file shared across nodes for stable versions). A plain
hash would let anyone who sees versions (the driver's status objects, etcd) test guesses of a
low-entropy secret offline; the HMAC does not.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

from provider.errors import KeygateError

KEY_BYTES = 32


class Versioner:
    """Computes object versions with one secret key."""

    def __init__(self, key: bytes) -> None:
        if len(key) < 16:
            raise KeygateError("the version HMAC key must be at least 16 bytes")
        self._key = key

    @classmethod
    def random(cls) -> Versioner:
        return cls(secrets.token_bytes(KEY_BYTES))

    @classmethod
    def from_file(cls, path: str) -> Versioner:
        """Key from a file (e.g. a mounted Secret) so every node reports the same versions."""
        try:
            key = Path(path).read_bytes().strip()
        except OSError as exc:
            raise KeygateError(
                f"cannot read version key file {path}: {os.strerror(exc.errno or 0)}"
            ) from None
        return cls(key)

    def version(self, object_id: str, backend_version: str, path: str, contents: bytes) -> str:
        parts = [object_id.encode(), backend_version.encode(), path.encode()]
        message = b"".join(len(p).to_bytes(4, "big") + p for p in parts) + contents
        return hmac.digest(self._key, message, hashlib.sha256).hex()[:32]
