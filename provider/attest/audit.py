"""Audit: one JSON line per release and per refused Mount; who, what, which version, why.

Records carry object ids, backends and the HMAC object versions the driver also sees, never a
value, a token or a sealed blob. The sink is stdout (collected with the pod's logs) or a file
opened in append mode with mode 0600.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
from collections.abc import Sequence
from typing import IO, TYPE_CHECKING, Any

from provider.attest.reasons import FIELD as DENIAL_FIELD
from provider.domain import Fetched, PodIdentity, SecretObject
from provider.errors import Code, KeygateError
from provider.request import MountContext

if TYPE_CHECKING:
    from provider.revocation import Revocation

log = logging.getLogger("keygate.audit")

DENIAL_CODES = frozenset({Code.UNAUTHENTICATED, Code.PERMISSION_DENIED})
IMAGE_FIELDS = ("container", "image")  # set by image signature refusals (which image, in which container)


def _now() -> str:
    now = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z"


def release_reason(served: int, revoked: Sequence[Revocation]) -> str:
    """The ``release`` record's reason: what this Mount handed over and what it withheld (counts
    and revocation categories only, so the record says a rotation took something back)."""
    if not revoked:
        return "attested; release policy allows every object"
    counts: dict[str, int] = {}
    for item in revoked:
        counts[item.reason.value] = counts.get(item.reason.value, 0) + 1
    why = ", ".join(f"{reason} {n}" for reason, n in sorted(counts.items()))
    return f"attested; {served} of {served + len(revoked)} objects released, {len(revoked)} revoked ({why})"


class AuditLog:
    """Writes audit records to a stream; thread-safe, one ``write`` + flush per record."""

    def __init__(self, sink: str = "stdout", node_name: str = "") -> None:
        self.sink = sink or "stdout"
        self.node_name = node_name
        self._lock = threading.Lock()
        self._stream: IO[str]
        self._owned = False
        if self.sink == "stdout":
            self._stream = sys.stdout
        elif self.sink == "stderr":
            self._stream = sys.stderr
        else:
            try:
                fd = os.open(self.sink, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            except OSError as exc:
                raise KeygateError(
                    f"cannot open audit_sink {self.sink}: {os.strerror(exc.errno or 0)}"
                ) from None
            self._stream = os.fdopen(fd, "a", buffering=1, encoding="utf-8")
            self._owned = True

    def _base(self, request_id: str, ctx: MountContext | None, decision: str, reason: str) -> dict[str, Any]:
        record: dict[str, Any] = {
            "time": _now(),
            "kind": "keygate.audit/v1",
            "decision": decision,
            "reason": reason,
            "request_id": request_id,
            "node": self.node_name,
        }
        if ctx is not None:
            record.update(
                pod={"namespace": ctx.pod.namespace, "name": ctx.pod.name, "uid": ctx.pod.uid},
                service_account=ctx.pod.service_account,
                spc=ctx.spc_name,
            )
        return record

    def released(
        self,
        request_id: str,
        ctx: MountContext,
        identity: PodIdentity,
        fetched: Sequence[Fetched],
        versions: Sequence[tuple[str, str]],
        revoked: Sequence[Revocation] = (),
    ) -> None:
        record = self._base(request_id, ctx, "release", release_reason(len(fetched), revoked))
        record["pod"] = {"namespace": identity.namespace, "name": identity.name, "uid": identity.uid}
        record["service_account"] = identity.service_account
        version_of = dict(versions)
        record["objects"] = [
            {
                "id": item.object_id,
                "name": item.obj.name,
                "backend": item.obj.backend,
                "version": version_of.get(item.object_id, ""),
                **({"node_identity": item.node_identity} if item.node_identity else {}),
            }
            for item in fetched
        ]
        record["backends"] = sorted({item.obj.backend for item in fetched})
        node = sorted({item.obj.backend for item in fetched if item.node_identity})
        if node:
            record["node_identity"] = node
        self.write(record)

    def refused(
        self,
        request_id: str,
        ctx: MountContext | None,
        objects: Sequence[SecretObject],
        error: BaseException,
    ) -> None:
        if isinstance(error, KeygateError):
            code, reason = error.code, error.message
        else:
            code, reason = Code.INTERNAL, f"internal error ({type(error).__name__})"
        decision = "deny" if code in DENIAL_CODES else "error"
        record = self._base(request_id, ctx, decision, reason)
        record["code"] = code.value
        if isinstance(error, KeygateError) and error.log_fields.get(DENIAL_FIELD):
            record["denial_reason"] = error.log_fields[DENIAL_FIELD]
        if isinstance(error, KeygateError):
            for key in IMAGE_FIELDS:
                if isinstance(error.log_fields.get(key), str):
                    record[key] = error.log_fields[key]
        record["objects"] = [{"name": o.name, "backend": o.backend} for o in objects]
        record["backends"] = sorted({o.backend for o in objects})
        self.write(record)

    def revoked(
        self,
        request_id: str,
        ctx: MountContext,
        identity: PodIdentity,
        revoked: Sequence[Revocation],
    ) -> None:
        """One ``revoke`` record per object a rotation took back: ids, reason category, outcome."""
        for item in revoked:
            record = self._base(request_id, ctx, "revoke", item.reason.value)
            record["pod"] = {"namespace": identity.namespace, "name": identity.name, "uid": identity.uid}
            record["service_account"] = identity.service_account
            record["object"] = {
                "name": item.obj.name,
                "backend": item.obj.backend,
                "path": item.obj.path,
                "ids": list(item.ids),
            }
            record["outcome"] = "removed" if item.mode == "remove" else "emptied"
            self.write(record)

    def write(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, separators=(",", ":"), sort_keys=False)
        try:
            with self._lock:
                self._stream.write(line + "\n")
                self._stream.flush()
        except (OSError, ValueError) as exc:
            log.error(
                "cannot write audit record", extra={"sink": self.sink, "error_type": type(exc).__name__}
            )

    def close(self) -> None:
        if self._owned:
            self._stream.close()
