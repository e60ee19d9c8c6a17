"""Find backends by name, importing each only when a Mount first needs it.

Built-in backends are listed here with the module of their declared schema
(:mod:`providers.common.schema`): the schema's markers select a backend when an SPC does not say
``backend:`` explicitly (so a peer provider's manifest works with only ``spec.provider``
changed), and schemas load without any cloud SDK, so ``keygate lint`` never needs one.
Third-party backends register under the ``keygate.backends`` entry-point group, or are named in
the daemon config (``backends: {mine: {class: "pkg.module:Class"}}``), and are selected by name;
their schema is the class attribute ``schema``. Backend imports are lazy because cloud SDKs cost
hundreds of milliseconds to load. Each built-in backend also lists the SDK modules of its extra;
they are looked up (never imported) before the backend loads, so a missing extra is the one
:class:`MissingExtra` message for the daemon, lint and the CLI alike.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from importlib.metadata import entry_points
from typing import Any, cast

from provider.errors import BackendUnavailable, InvalidSPC, KeygateError
from providers.base import Backend
from providers.common.schema import Schema

ENTRY_POINT_GROUP = "keygate.backends"


@dataclass(frozen=True, slots=True)
class BackendInfo:
    """How to load a built-in backend, and where its schema is declared."""

    name: str
    target: str
    schema_module: str
    sdk: str = ""  # what the extra brings, for the missing-extra message ("the AWS SDK")
    requires: tuple[str, ...] = ()  # modules of the extra ``keygate[<name>]`` the backend imports


class MissingExtra(BackendUnavailable):
    """A backend's optional SDK is not installed: ``pip install 'keygate[<extra>]'`` fixes it.

    The one place that words this message, so every backend, lint and the CLI say the same.
    """

    def __init__(self, backend: str, module: str) -> None:
        info = BUILTIN.get(backend)
        sdk = info.sdk if info and info.sdk else "its optional dependencies"
        super().__init__(
            f"backend {backend!r} needs {sdk} ({module} is not installed): pip install 'keygate[{backend}]'"
        )
        self.backend = backend
        self.module = module


def _provides(info: BackendInfo, module: str | None) -> bool:
    """Whether ``module`` (or a package or submodule of it) comes with ``info``'s extra."""
    return bool(module) and any(
        module == req or f"{module}.".startswith(f"{req}.") or req.startswith(f"{module}.")
        for req in info.requires
    )


def extra_for_module(module: str | None) -> str | None:
    """The built-in backend whose extra provides ``module`` (e.g. ``jmespath`` -> ``aws``)."""
    return next((info.name for info in BUILTIN.values() if _provides(info, module)), None)


def check_extra(name: str) -> None:
    """Raise :class:`MissingExtra` if a built-in backend's SDK modules cannot be found.

    Only looks the modules up (no import), so lint stays fast and the daemon fails with the
    same message on the first Mount rather than deep inside an SDK call.
    """
    info = BUILTIN.get(name)
    for module in info.requires if info else ():
        try:
            found = importlib.util.find_spec(module) is not None
        except ImportError:
            found = False
        if not found:
            raise MissingExtra(name, module)


BUILTIN: dict[str, BackendInfo] = {
    info.name: info
    for info in (
        BackendInfo("sealed", "providers.sealed.backend:SealedBackend", "providers.sealed.params"),
        BackendInfo(
            "vault",
            "providers.vault.backend:VaultBackend",
            "providers.vault.params",
            sdk="the Vault client",
            requires=("aiohttp", "yarl"),
        ),
        BackendInfo(
            "azure",
            "providers.azure.backend:AzureBackend",
            "providers.azure.params",
            sdk="the Azure SDK",
            requires=(
                "azure.core",
                "azure.identity",
                "azure.keyvault.secrets",
                "azure.keyvault.keys",
                "azure.keyvault.certificates",
            ),
        ),
        BackendInfo(
            "gcp",
            "providers.gcp.backend:GCPBackend",
            "providers.gcp.params",
            sdk="the Google Cloud SDK",
            requires=(
                "google.cloud.secretmanager_v1",
                "google.api_core",
                "google.auth",
                "google_crc32c",
                "requests",
            ),
        ),
        BackendInfo(
            "aws",
            "providers.aws.backend:AWSBackend",
            "providers.aws.params",
            sdk="the AWS SDK",
            requires=("boto3", "botocore", "jmespath"),
        ),
    )
}


@cache
def builtin_schema(name: str) -> Schema:
    """A built-in backend's schema, without importing the backend (or its SDK)."""
    schema: Schema = importlib.import_module(BUILTIN[name].schema_module).SCHEMA
    return schema


def builtin_schemas() -> list[Schema]:
    return [builtin_schema(name) for name in BUILTIN]


def _plugin_targets() -> dict[str, str]:
    return {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}


class Registry:
    """Creates each backend once, on first use, with its section of the daemon configuration.

    ``known_settings=False`` means the daemon's configuration is unknown (``keygate lint``):
    values a setting could provide are then warnings, not errors.
    """

    def __init__(
        self, settings: Mapping[str, Mapping[str, Any]] | None = None, *, known_settings: bool = True
    ) -> None:
        self.configured = known_settings
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

    def is_builtin(self, name: str) -> bool:
        return name in BUILTIN and self._targets.get(name) == BUILTIN[name].target

    def settings(self, name: str) -> Mapping[str, Any] | None:
        """The daemon settings of one backend; None when unknown (lint)."""
        return self._settings.get(name, {}) if self.configured else None

    def schema(self, name: str) -> Schema | None:
        """The declared schema of a backend: built-in ones without loading them."""
        if self.is_builtin(name):
            return builtin_schema(name)
        return self.get(name).schema

    def infer_for_object(self, item: Mapping[str, Any]) -> str | None:
        """The backend an SPC object names by its fields (e.g. ``sealed:`` or ``secretPath:``).

        A field only one backend uses wins over a value several could use (``objectType``).
        """
        for by_presence in (True, False):
            for schema in builtin_schemas():
                if schema.marks_object(item, by_presence):
                    return schema.backend
        return None

    def infer_for_spc(self, parameters: Mapping[str, str]) -> str | None:
        """The backend a whole SPC names by its parameters (e.g. ``vaultAddress``)."""
        return next((s.backend for s in builtin_schemas() if s.marks_spc(parameters)), None)

    def get(self, name: str) -> Backend:
        """The live backend instance; created synchronously on first use.

        A built-in backend's SDK modules are looked up first (:func:`check_extra`), so a missing
        extra is one clear :class:`MissingExtra` rather than an ImportError from deep inside.
        """
        backend = self._backends.get(name)
        if backend is None:
            target = self._targets.get(name)
            if target is None:
                raise InvalidSPC(f"unknown backend {name!r}; known backends: {', '.join(self.names())}")
            module_name, _, attr = target.partition(":")
            builtin = self.is_builtin(name)
            if builtin:
                check_extra(name)
            try:
                factory = getattr(importlib.import_module(module_name), attr)
            except KeygateError as exc:
                raise BackendUnavailable(f"backend {name!r} cannot be loaded: {exc.message}") from None
            except ImportError as exc:
                if builtin and _provides(BUILTIN[name], exc.name):
                    raise MissingExtra(name, exc.name or module_name) from None
                raise BackendUnavailable(
                    f"backend {name!r} cannot be loaded ({type(exc).__name__}: {exc}); "
                    f"install the package that provides {module_name}"
                ) from None
            except AttributeError as exc:
                raise BackendUnavailable(
                    f"backend {name!r} cannot be loaded ({type(exc).__name__}: {exc})"
                ) from None
            backend = cast(Backend, factory(self._settings.get(name, {})))
            self._backends[name] = backend
        return backend

    async def close(self) -> None:
        for backend in list(self._backends.values()):
            await backend.close()
        self._backends.clear()
