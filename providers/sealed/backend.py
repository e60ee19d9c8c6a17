"""The sealed backend: values encrypted in CI, carried in the SPC, opened only on the node.

SPC object fields: ``objectName`` (bound into the ciphertext), ``sealed`` (the text printed by
``keygate seal``), plus the usual ``objectAlias`` / ``filePermission``. Node keys are read once
from the configured files or directories (``settings["keys"]``); several keys may be loaded at
once so a value sealed for the old or the new key opens during a rotation.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from provider.domain import FetchContext, Fetched, SecretObject
from provider.errors import KeygateError, PermissionDenied
from providers.common.schema import Schema
from providers.sealed.envelope import NodeKeys, OpenedEnvelopes, SealError, load_private
from providers.sealed.params import SCHEMA

KEY_SUFFIXES = (".pem", ".key")


def load_keys(paths: Sequence[str]) -> list[X25519PrivateKey]:
    """Private keys from files, or from every ``*.pem``/``*.key`` file in a directory."""
    keys: list[X25519PrivateKey] = []
    for raw in paths:
        path = Path(raw)
        files = (
            sorted(p for p in path.iterdir() if p.suffix in KEY_SUFFIXES and p.is_file())
            if path.is_dir()
            else [path]
        )
        for file in files:
            try:
                pem = file.read_bytes()
            except OSError as exc:
                raise KeygateError(f"cannot read sealing key {file}: {os.strerror(exc.errno or 0)}") from None
            try:
                keys.append(load_private(pem, str(file)))
            except SealError as exc:
                raise KeygateError(str(exc)) from None
    return keys


class SealedBackend:
    """Opens sealed values with the node's private key(s); needs no network."""

    name: ClassVar[str] = "sealed"
    schema: ClassVar[Schema | None] = SCHEMA

    def __init__(self, settings: Mapping[str, Any]) -> None:
        raw_paths = settings.get("keys") or []
        paths = [raw_paths] if isinstance(raw_paths, str) else [str(p) for p in raw_paths]
        self._keys = NodeKeys(load_keys(paths))
        self._opened = OpenedEnvelopes()
        self.key_sources = paths

    @property
    def key_count(self) -> int:
        return len(self._keys)

    @property
    def key_ids(self) -> list[str]:
        """Ids of the loaded node keys (public-key fingerprints), for start-up logs."""
        return self._keys.kids()

    def validate(self, obj: SecretObject, parameters: Mapping[str, str]) -> None:
        return None

    async def fetch(self, objects: Sequence[SecretObject], ctx: FetchContext) -> list[Fetched]:
        if not self._keys:
            raise KeygateError("the sealed backend has no node key; start keygate with --sealed-key PATH")
        out: list[Fetched] = []
        for obj in objects:
            text = str(obj.field("sealed"))
            try:
                envelope, value = self._opened.open(text, ctx.pod.namespace, obj.name, self._keys)
            except SealError as exc:
                raise PermissionDenied(f"objects[{obj.index}] {obj.name!r}: {exc}") from None
            out.append(
                Fetched(obj=obj, object_id=f"sealed/{obj.name}", contents=value, version=envelope.digest)
            )
        return out

    async def close(self) -> None:
        self._keys.clear()
        self._opened.clear()
