"""Find backends by name, importing each only when a Mount first needs it.

Built-in backends are listed here with the SPC markers that select them when an SPC does not say
``backend:`` explicitly (so a peer provider's manifest works with only ``spec.provider``
changed). Third-party backends register under the ``keygate.backends`` entry-point group, or are named
in the daemon config (``backends: {mine: {class: "pkg.module:Class"}}``), and are selected by
name. Imports are lazy because cloud SDKs cost hundreds of milliseconds to load.
"""

from __future__ import annotations

import importlib
import importlib.util
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
        BackendInfo("sealed", "providers.sealed:SealedBackend", frozenset({"sealed"})),
        BackendInfo(
            "vault",
            "providers.vault:VaultBackend",
            frozenset({"secretPath"}),
            frozenset({"vaultAddress", "roleName"}),
            sdk="the Vault client",
            requires=("hvac", "requests"),
        ),
        BackendInfo(
            "azure",
            "providers.azure:AzureBackend",
            spc_markers=frozenset({"keyvaultName"}),
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
            "providers.gcp:GCPBackend",
            frozenset({"resourceName"}),
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
            "providers.aws:AWSBackend",
            spc_markers=frozenset({"region", "failoverRegion", "pathTranslation"}),
            sdk="the AWS SDK",
            requires=("boto3", "botocore", "jmespath"),
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

    def get(self, name: str, *, require_extra: bool = True) -> Backend:
        """The live backend instance; created synchronously on first use.

        ``require_extra=False`` (lint only) loads a built-in backend even when its SDK is not
        installed, for the checks that need no SDK; the first SDK import then raises ImportError.
        """
        backend = self._backends.get(name)
        if backend is None:
            target = self._targets.get(name)
            if target is None:
                raise InvalidSPC(f"unknown backend {name!r}; known backends: {', '.join(self.names())}")
            module_name, _, attr = target.partition(":")
            builtin = name in BUILTIN and target == BUILTIN[name].target
            if builtin and require_extra:
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
