"""``keygate demo``: runs :mod:`keygate_dev.demo` (the whole path, attestation included: a signed
image released, an unsigned one refused, a revoked secret leaving the pod's volume on rotation;
it prints the SPC, the release policy and the audit records, and ``--keep DIR`` keeps them).

The demo needs the development stand-ins (a Kubernetes API stand-in, an OCI registry, cosign-style
signing, a driver client), which are not part of the installed product or the daemon image. In a
source checkout installed with ``pip install -e .`` they sit beside this package and are found there.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType

CHECKOUT = Path(__file__).resolve().parent.parent
MISSING = (
    "keygate demo needs the development stand-ins (the keygate_dev package), which are not "
    "installed with the daemon; run it from a source checkout: git clone the keygate repository, "
    "then 'pip install -e .' and 'keygate demo' in it"
)


def _dev_demo() -> ModuleType | None:
    try:
        return importlib.import_module("keygate_dev.demo")
    except ModuleNotFoundError as exc:
        if exc.name not in ("keygate_dev", "keygate_dev.demo"):
            raise
    if not (CHECKOUT / "keygate_dev" / "demo.py").is_file():
        return None
    sys.path.append(str(CHECKOUT))
    return importlib.import_module("keygate_dev.demo")


def run_demo(show_values: bool = False, keep: str | None = None) -> int:
    demo = _dev_demo()
    if demo is None:
        print(f"error: {MISSING}", file=sys.stderr)
        return 2
    code: int = demo.run_demo(show_values=show_values, keep=keep)
    return code
