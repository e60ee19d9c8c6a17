"""A lean HTTP/1.1 GET client for the Kubernetes API: keep-alive connections, no per-call handshake.

The Pod GET runs on every Mount without the pod watch. Through lightkube and httpx2 one GET
costs about a millisecond of CPU, more than the rest of an attested sealed Mount; here it is
a few hundred microseconds: h11 frames the messages, asyncio streams carry them, TLS sessions
stay open between calls, and the JSON is read as plain data (no typed model is built).

Only what the API calls need: GET with a bearer token (from a file, re-read on a 401 as
client-go does, or a fixed one), the cluster CA, a whole-call timeout and a cap on the body.
Transport failures raise :class:`KubeTransportError`; callers map statuses and failures to
their own messages. Reusable for any GET of a small object (``get_json``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import h11

MAX_BODY_BYTES = 4 * 1024 * 1024  # etcd keeps at most 1.5 MiB per object
MAX_IDLE = 8
READ_CHUNK = 65536


class KubeTransportError(Exception):
    """The API could not be reached or answered outside HTTP/1.1; the message names no secret."""


class KubeCredentialsError(KubeTransportError):
    """The daemon's own token file could not be read."""


class _Conn:
    __slots__ = ("http", "reader", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.http = h11.Connection(h11.CLIENT, max_incomplete_event_size=64 * 1024)

    def usable(self) -> bool:
        return not self.writer.is_closing() and not self.reader.at_eof()

    def close(self) -> None:
        self.writer.close()


class KubeHTTP:
    """GETs against one API server; safe for concurrent use on one event loop."""

    def __init__(
        self, server: str, *, ca_file: str = "", token_file: str = "", token: str = "", timeout: float = 5.0
    ) -> None:
        parts = urlsplit(server)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise ValueError(f"unsupported API server URL scheme {parts.scheme!r}")
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.prefix = parts.path.rstrip("/")
        self.authority = parts.netloc.rpartition("@")[2]
        self.timeout = timeout
        self._ssl: ssl.SSLContext | None = None
        if parts.scheme == "https":
            self._ssl = ssl.create_default_context(cafile=ca_file or None)
        self._token_file = token_file
        self._token = token
        self._bearer: str | None = None
        self._idle: list[_Conn] = []
        self._loop: asyncio.AbstractEventLoop | None = None

    def _authorization(self, reread: bool = False) -> str:
        if self._token_file and (reread or self._bearer is None):
            try:
                self._bearer = Path(self._token_file).read_text().strip()
            except OSError as exc:
                raise KubeCredentialsError(type(exc).__name__) from None
        return self._bearer if self._token_file and self._bearer is not None else self._token

    async def get_json(self, path: str) -> tuple[int, Any]:
        """``(status, parsed JSON body)``; the body is None when it is not JSON."""
        try:
            async with asyncio.timeout(self.timeout):
                status, body = await self._get(path, self._authorization())
                if status == 401 and self._token_file:
                    status, body = await self._get(path, self._authorization(reread=True))
        except TimeoutError:
            raise KubeTransportError("TimeoutError") from None
        except h11.ProtocolError as exc:
            raise KubeTransportError(type(exc).__name__) from None
        try:
            return status, json.loads(body)
        except (ValueError, RecursionError):
            return status, None

    async def _get(self, path: str, bearer: str) -> tuple[int, bytes]:
        headers = [("Host", self.authority), ("Accept", "application/json"), ("User-Agent", "keygate")]
        if bearer:
            headers.append(("Authorization", f"Bearer {bearer}"))
        request = h11.Request(method="GET", target=self.prefix + path, headers=headers)
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # connections belong to the loop that opened them
            self._idle, self._loop = [], loop
        while self._idle:
            conn = self._idle.pop()
            if not conn.usable():
                conn.close()
                continue
            try:
                return await self._exchange(conn, request)
            except _Stale:
                continue  # the server closed the idle connection first; use another one
        return await self._exchange(await self._connect(), request, fresh=True)

    async def _connect(self) -> _Conn:
        try:
            reader, writer = await asyncio.open_connection(
                self.host, self.port, ssl=self._ssl, limit=READ_CHUNK * 2
            )
        except (OSError, ssl.SSLError) as exc:
            raise KubeTransportError(type(exc).__name__) from None
        return _Conn(reader, writer)

    async def _exchange(self, conn: _Conn, request: h11.Request, *, fresh: bool = False) -> tuple[int, bytes]:
        received = False
        try:
            http = conn.http
            conn.writer.write((http.send(request) or b"") + (http.send(h11.EndOfMessage()) or b""))
            await conn.writer.drain()
            status = 0
            body: list[bytes] = []
            size = 0
            while True:
                event = http.next_event()
                if event is h11.NEED_DATA:
                    data = await conn.reader.read(READ_CHUNK)
                    if data:
                        received = True
                    elif not received and not fresh:
                        raise _Stale
                    http.receive_data(data)
                elif isinstance(event, h11.Response):
                    status = event.status_code
                elif isinstance(event, h11.Data):
                    size += len(event.data)
                    if size > MAX_BODY_BYTES:
                        raise KubeTransportError(f"response larger than {MAX_BODY_BYTES // 1024} KiB")
                    body.append(bytes(event.data))
                elif isinstance(event, h11.EndOfMessage):
                    break
                elif isinstance(event, h11.ConnectionClosed):
                    raise KubeTransportError("connection closed mid-response")
        except _Stale:
            conn.close()
            raise
        except (OSError, ssl.SSLError, h11.ProtocolError) as exc:
            conn.close()
            if not received and not fresh:
                raise _Stale from None
            raise KubeTransportError(type(exc).__name__) from None
        except BaseException:
            conn.close()
            raise
        self._release(conn)
        return status, b"".join(body)

    def _release(self, conn: _Conn) -> None:
        http = conn.http
        if http.our_state is h11.DONE and http.their_state is h11.DONE and len(self._idle) < MAX_IDLE:
            with contextlib.suppress(h11.ProtocolError):
                http.start_next_cycle()
                self._idle.append(conn)
                return
        conn.close()

    async def aclose(self) -> None:
        idle, self._idle = self._idle, []
        if self._loop is not asyncio.get_running_loop():
            return  # another loop's connections: that loop closed them
        for conn in idle:
            conn.close()
        for conn in idle:
            with contextlib.suppress(Exception):
                await conn.writer.wait_closed()


class _Stale(Exception):
    """A kept-alive connection the server had already closed; the request is sent again."""
