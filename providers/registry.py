"""Find backends by name, importing each only when a Mount first needs it.

Built-in backends are listed here with the SPC markers that select them when an SPC does not say
``backend:`` explicitly (so a peer provider's manifest works with only ``spec.provider``
changed). Third-party backends register under the ``keygate.backends`` entry-point group, or are named
in the daemon config (``backends: {mine: {class: "pkg.module:Class"}}``), and are selected by
name. Imports are lazy because cloud SDKs cost hundreds of milliseconds to load.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any, cast

from provider.errors import BackendUnavailable, InvalidSPC, KeygateError
from providers.base import Backend

ENTRY_POINT_GROUP = "keygate.backends"
_AWS_ARN = re.compile(r"^arn:[A-Za-z0-9-]+:(secretsmanager|ssm):")


@dataclass(frozen=True, slots=True)
class BackendInfo:
    """How to load a backend and how to recognise an SPC or object written for it."""

    name: str
    target: str
    object_markers: frozenset[str] = frozenset()
    spc_markers: frozenset[str] = frozenset()


BUILTIN: dict[str, BackendInfo] = {
    info.name: info
    for info in (
        BackendInfo("sealed", "providers.sealed:SealedBackend", frozenset({"sealed"})),
        BackendInfo(
            "vault",
            "providers.vault:VaultBackend",
            frozenset({"secretPath"}),
            frozenset({"vaultAddress", "roleName"}),
        ),
        BackendInfo("azure", "providers.azure:AzureBackend", spc_markers=frozenset({"keyvaultName"})),
        BackendInfo("gcp", "providers.gcp:GCPBackend", frozenset({"resourceName"})),
        BackendInfo(
            "aws",
            "providers.aws:AWSBackend",
            spc_markers=frozenset({"region", "failoverRegion", "pathTranslation"}),
        ),
    )
}


def _plugin_targets() -> dict[str, str]:
    return {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}


class Registry:
    """Creates each backend once, on first use, with its section of the daemon configuration."""

    def __init__(self, settings: Mapping[str, Mapping[str, Any]] | None = None) -> None:
        self._settings = dict(settings or {})
        self._targets = {name: info.target for name, info in BUILTIN.items()}
        for name, target in _plugin_targets().items():
            self._targets.setdefault(name, target)
        for name, section in self._settings.items():
            custom = section.get("class")
            if isinstance(custom, str) and custom:
                self._targets[name] = custom
        self._backends: dict[str, Backend] = {}

    def names(self) -> list[str]:
        return sorted(self._targets)

    def known(self, name: str) -> bool:
        return name in self._targets

    def infer_for_object(self, item: Mapping[str, Any]) -> str | None:
        """The backend an SPC object names by its fields (e.g. ``sealed:`` or ``secretPath:``)."""
        for info in BUILTIN.values():
            if info.object_markers & item.keys():
                return info.name
        object_type = str(item.get("objectType", "")).lower()
        if object_type in ("secretsmanager", "ssmparameter") or _AWS_ARN.match(
            str(item.get("objectName", ""))
        ):
            return "aws"
        if object_type in ("secret", "key", "cert"):
            return "azure"
        return None

    def infer_for_spc(self, parameters: Mapping[str, str]) -> str | None:
        """The backend a whole SPC names by its parameters (e.g. ``vaultAddress``)."""
        for info in BUILTIN.values():
            if info.spc_markers & parameters.keys():
                return info.name
        return None

    def get(self, name: str) -> Backend:
        """The live backend instance; created synchronously on first use."""
        backend = self._backends.get(name)
        if backend is None:
            target = self._targets.get(name)
            if target is None:
                raise InvalidSPC(f"unknown backend {name!r}; known backends: {', '.join(self.names())}")
            module_name, _, attr = target.partition(":")
            try:
                factory = getattr(importlib.import_module(module_name), attr)
            except KeygateError as exc:
                raise BackendUnavailable(f"backend {name!r} cannot be loaded: {exc.message}") from None
            except (ImportError, AttributeError) as exc:
                raise BackendUnavailable(
                    f"backend {name!r} cannot be loaded ({type(exc).__name__}: {exc}); install it, "
                    f"e.g. pip install 'keygate[{name}]'"
                ) from None
            backend = cast(Backend, factory(self._settings.get(name, {})))
            self._backends[name] = backend
        return backend

    async def close(self) -> None:
        for backend in list(self._backends.values()):
            await backend.close()
        self._backends.clear()
