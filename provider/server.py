"""The gRPC face of keygate: ``v1alpha1.CSIDriverProvider`` on a Unix socket.

It converts wire messages to :class:`provider.request.MountInput`, calls the mount pipeline, and
turns a :class:`KeygateError` into a gRPC status whose message starts with the machine code
(``[PermissionDenied] ...``) and whose trailing metadata carries ``keygate-error-code``. It knows
nothing of any backend.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import gc
import logging
import os
import signal
import socket
import stat
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from provider import RUNTIME_NAME, __version__, metrics
from provider.config import Config
from provider.errors import Code, KeygateError
from provider.health import OpsServer, Readiness, grpc_health_servicer
from provider.logs import REQUEST_ID
from provider.mount import Mounter
from provider.request import MountInput
from provider.wire import service_pb2 as pb
from provider.wire import service_pb2_grpc as pb_grpc

log = logging.getLogger("keygate.server")

STATUS_BY_CODE: dict[Code, grpc.StatusCode] = {
    Code.INVALID_REQUEST: grpc.StatusCode.INVALID_ARGUMENT,
    Code.INVALID_SPC: grpc.StatusCode.INVALID_ARGUMENT,
    Code.UNAUTHENTICATED: grpc.StatusCode.UNAUTHENTICATED,
    Code.PERMISSION_DENIED: grpc.StatusCode.PERMISSION_DENIED,
    Code.SECRET_NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    Code.BACKEND_UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
    Code.DEADLINE_EXCEEDED: grpc.StatusCode.DEADLINE_EXCEEDED,
    Code.RESOURCE_EXHAUSTED: grpc.StatusCode.RESOURCE_EXHAUSTED,
    Code.UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
    Code.INTERNAL: grpc.StatusCode.INTERNAL,
}
MAX_MESSAGE = 4 * 1024 * 1024
PROVIDER_SERVICE = "v1alpha1.CSIDriverProvider"
ERROR_CODE_KEY = "keygate-error-code"
MAX_ERROR_CHARS = 2000  # gRPC drops responses whose metadata exceeds 8 KiB
ABORT_MARGIN = 1.0  # after the grace period: time for the coded aborts to reach the driver


def to_input(request: pb.MountRequest) -> MountInput:
    return MountInput(
        attributes=request.attributes,
        secrets=request.secrets,
        target_path=request.target_path,
        permission=request.permission,
        current_object_version={v.id: v.version for v in request.current_object_version},
    )


class ProviderServicer(pb_grpc.CSIDriverProviderServicer):
    """Answers Version and Mount; every Mount logs exactly one line and never a value."""

    def __init__(self, mounter: Mounter, max_inflight: int = 0) -> None:
        self.mounter = mounter
        self.max_inflight = max_inflight
        self.inflight = 0
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closing = ""  # set when shutdown cancels the Mounts still running

    async def drain(self, grace: float) -> int:
        """Wait up to ``grace`` seconds for in-flight Mounts, then end the rest with a coded error.

        gRPC would cancel them with a bare UNAVAILABLE the driver cannot tell from a crash; each
        straggler instead answers ``[Unavailable] keygate is shutting down ...`` with the
        ``keygate-error-code`` trailer. Returns how many Mounts were cut short.
        """
        deadline = time.monotonic() + grace
        while self._tasks and (left := deadline - time.monotonic()) > 0:
            await asyncio.wait(set(self._tasks), timeout=left)
        stragglers = set(self._tasks)
        if not stragglers:
            return 0
        self._closing = (
            f"keygate is shutting down and this mount did not finish within the {grace:g}s grace "
            "period; the driver will retry it"
        )
        for task in stragglers:
            task.cancel()
        await asyncio.wait(stragglers, timeout=ABORT_MARGIN)
        return len(stragglers)

    async def Version(  # noqa: N802 - gRPC method name
        self,
        request: pb.VersionRequest,
        context: grpc.aio.ServicerContext[pb.VersionRequest, pb.VersionResponse],
    ) -> pb.VersionResponse:
        return pb.VersionResponse(version="v1alpha1", runtime_name=RUNTIME_NAME, runtime_version=__version__)

    async def Mount(  # noqa: N802 - gRPC method name
        self, request: pb.MountRequest, context: grpc.aio.ServicerContext[pb.MountRequest, pb.MountResponse]
    ) -> pb.MountResponse:
        started = time.perf_counter()
        request_id = os.urandom(8).hex()
        fields: dict[str, object] = {"request_id": request_id}
        if self.max_inflight and self.inflight >= self.max_inflight:
            return await self._fail(
                context,
                Code.RESOURCE_EXHAUSTED,
                f"keygate is at its limit of {self.max_inflight} concurrent mounts; the driver will retry",
                fields,
                started,
            )
        token = REQUEST_ID.set(request_id)
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        self.inflight += 1
        metrics.MOUNTS_IN_FLIGHT.inc()
        try:
            return await self._mount(request, context, fields, started)
        finally:
            self.inflight -= 1
            metrics.MOUNTS_IN_FLIGHT.dec()
            REQUEST_ID.reset(token)
            if task is not None:
                self._tasks.discard(task)

    async def _mount(
        self,
        request: pb.MountRequest,
        context: grpc.aio.ServicerContext[pb.MountRequest, pb.MountResponse],
        fields: dict[str, object],
        started: float,
    ) -> pb.MountResponse:
        try:
            mount_input = to_input(request)
            result = await self.mounter.mount(mount_input, str(fields["request_id"]))
        except KeygateError as exc:
            fields.update(exc.log_fields)
            return await self._fail(context, exc.code, exc.message, fields, started)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if self._closing and task is not None:
                task.uncancel()
                return await self._fail(context, Code.UNAVAILABLE, self._closing, fields, started)
            self._log(fields, started, "cancelled", Code.DEADLINE_EXCEEDED)
            raise
        except Exception as exc:  # noqa: BLE001 - the daemon must survive any request
            log.error("unexpected error in mount", extra={**fields, "error_type": type(exc).__name__})
            return await self._fail(
                context,
                Code.INTERNAL,
                f"internal error ({type(exc).__name__}); see the keygate log",
                fields,
                started,
            )
        fields.update(
            pod=f"{result.identity.namespace}/{result.identity.name}",
            spc=result.spc_name,
            objects=len(result.objects),
            files=len(result.files),
        )
        self._log(fields, started, "ok", None)
        response = pb.MountResponse(
            object_version=[pb.ObjectVersion(id=i, version=v) for i, v in result.versions],
        )
        response.files.extend(pb.File(path=f.path, mode=f.mode, contents=f.contents) for f in result.files)
        return response

    async def _fail(
        self,
        context: grpc.aio.ServicerContext[pb.MountRequest, pb.MountResponse],
        code: Code,
        message: str,
        fields: dict[str, object],
        started: float,
    ) -> pb.MountResponse:
        self._log(fields, started, "error", code)
        context.set_trailing_metadata(((ERROR_CODE_KEY, code.value),))
        if len(message) > MAX_ERROR_CHARS:
            message = message[: MAX_ERROR_CHARS - 1] + "…"
        await context.abort(STATUS_BY_CODE[code], f"[{code.value}] {message}")
        raise AssertionError("unreachable")  # pragma: no cover - abort raises

    @staticmethod
    def _log(fields: dict[str, object], started: float, outcome: str, code: Code | None) -> None:
        elapsed = time.perf_counter() - started
        metrics.record_mount(outcome, "" if code is None else code.value, elapsed)
        if not log.isEnabledFor(logging.INFO):
            return
        duration_ms = round(elapsed * 1000, 3)
        extra = {**fields, "outcome": outcome, "duration_ms": duration_ms}
        if code is not None:
            extra["code"] = code.value
        log.info("mount", extra=extra)


def prepare_socket(path: str) -> None:
    """Remove a stale socket left by a crashed daemon; refuse if another daemon still listens."""
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, exist_ok=True)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise KeygateError(f"{path} exists and is not a socket; refusing to replace it")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(1.0)
        probe.connect(path)
    except OSError as exc:
        if exc.errno not in (errno.ECONNREFUSED, errno.ENOENT):
            raise KeygateError(f"cannot probe existing socket {path}: {exc.strerror}") from None
        os.unlink(path)
        log.info("removed stale socket", extra={"socket": path})
        return
    finally:
        probe.close()
    raise KeygateError(f"another process is serving on {path}; stop it first")


class Daemon:
    """A running gRPC server on a Unix socket; ``stop`` drains in-flight mounts.

    The same socket serves ``grpc.health.v1.Health`` (SERVING once started, NOT_SERVING while
    draining). With ``metrics_addr`` set, ``/metrics``, ``/healthz`` and ``/readyz`` are served
    over HTTP there; readiness requires the ``socket`` condition set here plus whatever the
    mounter's other parts registered (``keys``, and ``policy`` when attestation loads one).
    """

    def __init__(
        self,
        mounter: Mounter,
        socket_path: str,
        grace_period: float = 30.0,
        *,
        metrics_addr: str = "",
        readiness: Readiness | None = None,
        max_inflight: int = 0,
    ) -> None:
        self.mounter = mounter
        self.max_inflight = max_inflight
        self.socket_path = socket_path
        self.grace_period = grace_period
        self.metrics_addr = metrics_addr
        self.readiness = readiness if readiness is not None else mounter.readiness
        self.server: grpc.aio.Server | None = None
        self.servicer: ProviderServicer | None = None
        self.health: Any = None
        self.ops: OpsServer | None = None

    @classmethod
    def from_config(cls, mounter: Mounter, config: Config) -> Daemon:
        return cls(
            mounter,
            config.socket,
            config.grace_period,
            metrics_addr=config.metrics_addr,
            max_inflight=config.max_inflight,
        )

    async def start(self) -> None:
        self.readiness.set("socket", False, "starting")
        metrics.BUILD_INFO.labels(version=__version__).set(1)
        prepare_socket(self.socket_path)
        if self.metrics_addr:
            self.ops = OpsServer(self.metrics_addr, self.readiness, asyncio.get_running_loop())
            self.ops.start()
        try:
            await self._start_grpc()
        except BaseException:
            if self.ops is not None:
                self.ops.stop()
                self.ops = None
            raise
        await self.health.set("", health_pb2.HealthCheckResponse.SERVING)
        await self.health.set(PROVIDER_SERVICE, health_pb2.HealthCheckResponse.SERVING)
        self.readiness.set("socket", True)
        log.info("serving", extra={"socket": self.socket_path, "version": __version__})

    async def _start_grpc(self) -> None:
        server = grpc.aio.server(
            options=[
                ("grpc.max_send_message_length", MAX_MESSAGE),
                ("grpc.max_receive_message_length", MAX_MESSAGE),
            ]
        )
        self.servicer = ProviderServicer(self.mounter, self.max_inflight)
        pb_grpc.add_CSIDriverProviderServicer_to_server(self.servicer, server)
        self.health = grpc_health_servicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        old_umask = os.umask(0o177)
        try:
            if server.add_insecure_port(f"unix:{self.socket_path}") == 0:
                raise KeygateError(f"cannot listen on {self.socket_path}")
            await server.start()
        finally:
            os.umask(old_umask)
        os.chmod(self.socket_path, 0o600)
        self.server = server

    async def stop(self) -> None:
        self.readiness.set("socket", False, "draining")
        if self.health is not None:
            await self.health.enter_graceful_shutdown()
        if self.server is not None:
            # stop() refuses new RPCs at once; the servicer ends stragglers before gRPC would.
            stopping = asyncio.ensure_future(self.server.stop(self.grace_period + ABORT_MARGIN))
            if self.servicer is not None:
                cut = await self.servicer.drain(self.grace_period)
                if cut:
                    log.warning("grace period over; in-flight mounts ended", extra={"mounts": cut})
            await stopping
            self.server = None
        if self.ops is not None:
            self.ops.stop()
            self.ops = None
        await self.mounter.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.socket_path)
        log.info("stopped", extra={"socket": self.socket_path})

    async def run_until_signal(self) -> None:
        """Serve until SIGTERM or SIGINT, then finish in-flight mounts and exit."""
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await self.start()
        # What exists now (modules, config, clients) lives as long as the daemon: frozen, it is
        # no longer walked by every full collection (the heap trimmer's), a 50 ms pause otherwise.
        gc.collect()
        gc.freeze()
        await stop.wait()
        log.info("signal received; draining in-flight mounts", extra={"grace_seconds": self.grace_period})
        await self.stop()


@contextlib.asynccontextmanager
async def running(mounter: Mounter, socket_path: str) -> AsyncIterator[Daemon]:
    daemon = Daemon(mounter, socket_path)
    await daemon.start()
    try:
        yield daemon
    finally:
        await daemon.stop()
