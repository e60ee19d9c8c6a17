"""Pod GETs: coalesced only among Mounts that arrived before the GET was sent, over a lean
keep-alive client, against the local API (real HTTPS, bearer token) and a raw HTTP server."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from provider.attest.kube import KubeAPI, PodInfo, PodReads
from provider.attest.kube_http import MAX_BODY_BYTES, KubeHTTP
from provider.attest.reasons import FIELD
from provider.errors import BackendUnavailable, PermissionDenied
from tests.kubeapi import API_TOKEN, DevCluster, make_pod


def _api(kube: DevCluster) -> KubeAPI:
    return KubeAPI(kube.url, str(kube.ca_file), str(kube.token_file))


def test_concurrent_reads_of_one_pod_share_gets(kube: DevCluster):
    spec = make_pod(kube)

    async def run() -> list[PodInfo]:
        api = _api(kube)
        assert api.http is not None  # the lean client serves this configuration
        try:
            return await asyncio.gather(*(api.get_pod("default", "app-0") for _ in range(50)))
        finally:
            await api.aclose()

    infos = asyncio.run(run())
    assert {i.uid for i in infos} == {spec.uid}
    assert infos[0].service_account == "app" and infos[0].node_name == "node-a"
    assert [c.image for c in infos[0].containers] == [spec.images["app"]]
    assert 1 <= kube.hits["pod"] <= 2  # one GET, or one plus the next for those who came later


def test_a_mount_arriving_during_a_get_waits_for_a_fresh_one():
    sent: list[asyncio.Event] = []
    answers = iter(["first", "second", "third"])

    async def fetch(namespace: str, name: str) -> PodInfo:
        release = asyncio.Event()
        sent.append(release)
        uid = next(answers)
        await release.wait()
        return PodInfo(namespace, name, uid, "app", "node-a", ())

    async def run() -> tuple[str, ...]:
        reads = PodReads(fetch, window=0)
        early = asyncio.ensure_future(reads.read("ns", "p"))
        joined = asyncio.ensure_future(reads.read("ns", "p"))  # before the GET is sent: shares it
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert len(sent) == 1
        late = [asyncio.ensure_future(reads.read("ns", "p")) for _ in range(3)]  # GET already on the wire
        await asyncio.sleep(0)
        assert len(sent) == 1  # at most one GET per pod on the wire
        sent[0].set()
        first = await early
        await asyncio.sleep(0)
        assert len(sent) == 2  # the late ones get their own read, sent after the first returned
        sent[1].set()
        results = [first.uid, (await joined).uid, *[(await t).uid for t in late]]
        assert reads.sent == 2 and reads.shared == 3 and not reads._pending
        return tuple(results)

    assert asyncio.run(run()) == ("first", "first", "second", "second", "second")


def test_a_refusal_reaches_every_waiter_as_its_own_error(kube: DevCluster):
    async def run() -> list[BaseException]:
        api = _api(kube)
        try:
            return await asyncio.gather(
                *(api.get_pod("default", "ghost") for _ in range(5)), return_exceptions=True
            )
        finally:
            await api.aclose()

    errors = asyncio.run(run())
    assert all(isinstance(e, PermissionDenied) and "does not exist" in e.message for e in errors)
    assert len({id(e) for e in errors}) == 5
    errors[0].log_fields["spc"] = "mine"  # type: ignore[attr-defined]
    assert "spc" not in errors[1].log_fields  # type: ignore[attr-defined]
    assert errors[1].log_fields[FIELD] == "pod_not_found"  # type: ignore[attr-defined]


def test_connections_are_kept_alive_and_the_token_reread_on_401(kube: DevCluster):
    make_pod(kube)

    async def run() -> None:
        api = _api(kube)
        http = api.http
        assert http is not None
        try:
            await api.get_pod("default", "app-0")
            conn = http._idle[0]
            for _ in range(5):
                await api.get_pod("default", "app-0")
            assert http._idle == [conn]  # one TLS connection for every GET
            kube.api_token = "rotated-token"
            kube.token_file.write_text("rotated-token")  # the kubelet rotates the daemon's token
            assert (await api.get_pod("default", "app-0")).name == "app-0"
        finally:
            await api.aclose()
            kube.api_token = API_TOKEN

    asyncio.run(run())


def test_wrong_credentials_and_unreadable_token_file_fail_closed(kube: DevCluster, short_tmp: Path):
    make_pod(kube)
    wrong = short_tmp / "wrong"
    wrong.write_text("nope")

    async def run(token_file: str) -> BaseException:
        api = KubeAPI(kube.url, str(kube.ca_file), token_file)
        try:
            await api.get_pod("default", "app-0")
        except BackendUnavailable as exc:
            return exc
        finally:
            await api.aclose()
        raise AssertionError("not refused")

    assert "may not read pod default/app-0 (HTTP 401)" in str(asyncio.run(run(str(wrong))))
    wrong.unlink()
    message = str(asyncio.run(run(str(wrong))))
    assert "token file" in message and "FileNotFoundError" in message and "nope" not in message


async def _serve_raw(responses: list[bytes]) -> tuple[asyncio.Server, int, list[int]]:
    """A raw HTTP server: one canned response per request; closes each connection after one."""
    served: list[int] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        served.append(1)
        writer.write(responses[min(len(served), len(responses)) - 1])
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1], served


def _response(body: bytes, status: str = "200 OK") -> bytes:
    head = f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    return head.encode() + body


def test_a_connection_the_server_closed_is_replaced_transparently():
    pod = b'{"metadata":{"name":"p","namespace":"ns","uid":"u"},"spec":{"containers":[]}}'

    async def run() -> None:
        server, port, served = await _serve_raw([_response(pod)])
        http = KubeHTTP(f"http://127.0.0.1:{port}", timeout=5)
        try:
            for _ in range(3):  # each kept-alive connection was closed by the server meanwhile
                status, body = await http.get_json("/api/v1/namespaces/ns/pods/p")
                assert status == 200 and body["metadata"]["uid"] == "u"
                await asyncio.sleep(0.05)
            assert len(served) == 3
        finally:
            await http.aclose()
            server.close()

    asyncio.run(run())


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % (MAX_BODY_BYTES + 1), "larger than"),
        (b"garbage\r\n\r\n", "RemoteProtocolError"),
        (_response(b"[1, 2]"), "not a JSON object"),
        (_response(b'{"metadata":{"uid":7},"spec":{}}'), "metadata.uid"),
        (_response(b'{"metadata":{},"spec":{"containers":{"a":1}}}'), "not a list of containers"),
        (_response(b'{"kind":"Status"}', "500 Internal Server Error"), "failed with HTTP 500"),
    ],
)
def test_hostile_answers_are_refused_with_a_reason(response: bytes, expected: str, short_tmp: Path):
    body = response + b"x" * (MAX_BODY_BYTES + 1) if b"larger" in expected.encode() else response

    async def run() -> str:
        server, port, _ = await _serve_raw([body])
        api = KubeAPI(f"http://127.0.0.1:{port}")
        try:
            await api.get_pod("ns", "p")
        except (BackendUnavailable, PermissionDenied) as exc:
            return exc.message
        finally:
            await api.aclose()
            server.close()
        raise AssertionError("accepted")

    assert expected in asyncio.run(run())


def test_a_hung_api_times_out_closed():
    async def run() -> str:
        async def hang(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await asyncio.sleep(10)

        server = await asyncio.start_server(hang, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        api = KubeAPI(f"http://127.0.0.1:{port}", timeout=0.2)
        try:
            await api.get_pod("ns", "p")
        except BackendUnavailable as exc:
            return exc.message
        finally:
            await api.aclose()
            server.close()
        raise AssertionError("accepted")

    message = asyncio.run(run())
    assert "unreachable (TimeoutError)" in message and "fail closed" in message


def test_a_client_used_from_a_new_event_loop_reconnects(kube: DevCluster):
    make_pod(kube)
    api = _api(kube)
    try:
        for _ in range(2):  # e.g. a daemon restarted in the same process: its connections stay behind
            assert asyncio.run(api.get_pod("default", "app-0")).name == "app-0"
    finally:
        asyncio.run(api.aclose())


def test_the_next_get_gathers_mounts_for_a_short_window():
    sent: list[asyncio.Event] = []

    async def fetch(namespace: str, name: str) -> PodInfo:
        release = asyncio.Event()
        sent.append(release)
        await release.wait()
        return PodInfo(namespace, name, f"uid-{len(sent)}", "app", "node-a", ())

    async def run() -> list[str]:
        reads = PodReads(fetch, window=0.05)
        first = asyncio.ensure_future(reads.read("ns", "p"))
        await asyncio.sleep(0.01)
        late = [asyncio.ensure_future(reads.read("ns", "p"))]
        sent[0].set()
        await first
        await asyncio.sleep(0.01)  # within the window: still the same pending read
        late.append(asyncio.ensure_future(reads.read("ns", "p")))
        await asyncio.sleep(0)
        assert len(sent) == 1
        while len(sent) < 2:
            await asyncio.sleep(0.005)
        late.append(asyncio.ensure_future(reads.read("ns", "p")))  # the second GET is out: a third
        sent[1].set()
        await asyncio.sleep(0.07)
        sent[2].set()
        uids = [(await t).uid for t in late]
        assert reads.sent == 3 and reads.shared == 1
        return uids

    assert asyncio.run(run()) == ["uid-2", "uid-2", "uid-3"]


def test_an_uncontended_read_is_not_delayed(kube: DevCluster):
    make_pod(kube)

    async def run() -> float:
        api = _api(kube)
        api._reads.window = 5.0  # would show if a lone Mount waited for it
        try:
            await api.get_pod("default", "app-0")
            started = asyncio.get_running_loop().time()
            await api.get_pod("default", "app-0")
            return asyncio.get_running_loop().time() - started
        finally:
            await api.aclose()

    assert asyncio.run(run()) < 2.0
