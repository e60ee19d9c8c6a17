"""The Kubernetes API calls keygate makes, with lightkube: Pod GET and TokenReview (attestation),
and Node GET (a backend's region from the node's labels).

By default the daemon uses its own in-cluster service account (token, CA and the
``KUBERNETES_SERVICE_*`` address); ``kube_api_url`` / ``kube_ca`` / ``kube_token_file`` point it
elsewhere (tests, out-of-cluster runs). Every failure fails closed with a message naming the API,
never the token. lightkube is imported here only, so the daemon's import stays light.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from provider.attest.kube_http import KubeCredentialsError, KubeHTTP, KubeTransportError
from provider.attest.reasons import Denial, tag
from provider.errors import BackendUnavailable, KeygateError, PermissionDenied

if TYPE_CHECKING:
    from lightkube import AsyncClient
    from lightkube.config.kubeconfig import SingleConfig

log = logging.getLogger("keygate.attest")


@dataclass(frozen=True, slots=True)
class Container:
    kind: str  # container | initContainer | ephemeralContainer
    name: str
    image: str


@dataclass(frozen=True, slots=True)
class PodInfo:
    """The parts of a Pod object attestation looks at."""

    namespace: str
    name: str
    uid: str
    service_account: str
    node_name: str
    containers: tuple[Container, ...]


class KubeAPI:
    """A lazily created lightkube AsyncClient (it binds to the event loop of its first use)."""

    def __init__(
        self,
        api_url: str = "",
        ca_file: str = "",
        token_file: str = "",
        timeout: float = 5.0,
        *,
        watch_node: str = "",
    ) -> None:
        self.api_url = api_url
        self.timeout = timeout
        self._config = self._load_config(api_url, ca_file, token_file)
        self._client: AsyncClient | None = None
        self.http = self._lean_client(self._config, timeout)
        self.watch = PodWatch(self, watch_node) if watch_node else None
        self._reads = PodReads(self._get_pod)

    @staticmethod
    def _load_config(api_url: str, ca_file: str, token_file: str) -> SingleConfig:
        from lightkube import ConfigError, KubeConfig
        from lightkube.config.models import Cluster, User

        if api_url:
            user = User(token_file=token_file) if token_file else None
            config = KubeConfig.from_one(
                cluster=Cluster(server=api_url, certificate_auth=ca_file or None), user=user
            )
        else:
            try:
                config = KubeConfig.from_service_account()
            except (ConfigError, KeyError):
                from provider.config import describe, local_alternatives

                raise KeygateError(
                    "no in-cluster Kubernetes configuration (service-account token or "
                    "KUBERNETES_SERVICE_HOST missing), and keygate reads Pods from the API: set "
                    f"{describe('kube_api_url', 'kube_ca', 'kube_token_file')}; {local_alternatives()}"
                ) from None
        single = config.get()
        assert single is not None
        return single

    @staticmethod
    def _lean_client(config: SingleConfig, timeout: float) -> KubeHTTP | None:
        """The lean GET client when the configuration is one it speaks (CA file, bearer token)."""
        cluster, user = config.cluster, config.user
        if cluster.insecure or cluster.certificate_auth_data:
            return None
        token_file = token = ""
        if user is not None:
            if user.exec or user.client_cert or user.client_cert_data or user.username or user.auth_provider:
                return None
            token_file, token = user.token_file or "", user.token or ""
        try:
            return KubeHTTP(
                str(cluster.server),
                ca_file=str(cluster.certificate_auth or ""),
                token_file=token_file,
                token=token,
                timeout=timeout,
            )
        except (ValueError, OSError, ssl.SSLError):
            return None  # lightkube then reports the problem on the first call, as it always did

    @property
    def server(self) -> str:
        return str(self._config.cluster.server)

    @property
    def ca_file(self) -> str:
        """The cluster CA in use (in-cluster: the service account's ca.crt)."""
        return str(self._config.cluster.certificate_auth or "")

    @property
    def token_file(self) -> str:
        """The daemon's own token file in use (in-cluster: the service account's token)."""
        user = self._config.user
        return str(user.token_file or "") if user is not None else ""

    def _api(self) -> AsyncClient:
        if self._client is None:
            import httpx2
            from lightkube import AsyncClient

            self._client = AsyncClient(self._config, timeout=httpx2.Timeout(self.timeout), trust_env=False)
        return self._client

    def _unreachable(self, what: str, exc: BaseException) -> BackendUnavailable:
        return BackendUnavailable(
            f"cannot {what}: the Kubernetes API at {self.server} is unreachable "
            f"({type(exc).__name__}); refusing to release secrets (fail closed)"
        )

    async def get_pod(self, namespace: str, name: str) -> PodInfo:
        """The pod from this node's watch cache when it has it, else from one Pod GET."""
        if self.watch is not None:
            cached = self.watch.lookup(namespace, name)
            if cached is not None:
                return cached
        return await self._reads.read(namespace, name)

    async def _get_pod(self, namespace: str, name: str) -> PodInfo:
        if self.http is not None:
            return await self._get_pod_http(self.http, namespace, name)
        return await self._get_pod_lightkube(namespace, name)

    async def _get_pod_http(self, http: KubeHTTP, namespace: str, name: str) -> PodInfo:
        what = f"read pod {namespace}/{name}"
        try:
            code, body = await http.get_json(
                f"/api/v1/namespaces/{quote(namespace, safe='')}/pods/{quote(name, safe='')}"
            )
        except KubeCredentialsError as exc:
            raise BackendUnavailable(
                f"cannot {what}: keygate's API token file {self.token_file} cannot be read ({exc})"
            ) from None
        except KubeTransportError as exc:
            raise BackendUnavailable(
                f"cannot {what}: the Kubernetes API at {self.server} is unreachable "
                f"({exc}); refusing to release secrets (fail closed)"
            ) from None
        if code != 200:
            raise _pod_status_error(namespace, name, code)
        if not isinstance(body, dict):
            raise BackendUnavailable(
                f"reading pod {namespace}/{name} returned a body that is not a JSON object"
            )
        info = pod_info_json(body, namespace, name)
        if info is None:
            raise PermissionDenied(f"pod {namespace}/{name} has no metadata or spec in the API")
        return info

    async def _get_pod_lightkube(self, namespace: str, name: str) -> PodInfo:
        import httpx2
        from lightkube import ApiError
        from lightkube.resources.core_v1 import Pod

        try:
            pod = await self._api().get(Pod, name, namespace=namespace)
        except ApiError as exc:
            raise _pod_status_error(namespace, name, exc.status.code or 0) from None
        except httpx2.HTTPError as exc:
            raise self._unreachable(f"read pod {namespace}/{name}", exc) from None
        info = pod_info(pod, namespace, name)
        if info is None:
            raise PermissionDenied(f"pod {namespace}/{name} has no metadata or spec in the API")
        return info

    async def node_labels(self, name: str) -> dict[str, str]:
        """The labels of Node ``name`` (one GET; needs ``get`` on nodes)."""
        import httpx2
        from lightkube import ApiError
        from lightkube.resources.core_v1 import Node

        try:
            node = await self._api().get(Node, name)
        except ApiError as exc:
            raise _read_error(f"node {name!r}", "nodes", exc.status.code or 0, " (check node_name)") from None
        except httpx2.HTTPError as exc:
            raise self._unreachable(f"read node {name!r}", exc) from None
        labels = node.metadata.labels if node.metadata is not None else None
        return {str(k): str(v) for k, v in (labels or {}).items()}

    async def service_account_annotations(self, namespace: str, name: str) -> dict[str, str]:
        """The annotations of ServiceAccount ``namespace/name`` (one GET; needs ``get`` on
        serviceaccounts), e.g. ``eks.amazonaws.com/role-arn`` for a backend's IAM role."""
        import httpx2
        from lightkube import ApiError
        from lightkube.resources.core_v1 import ServiceAccount

        where = f"service account {namespace}/{name}"
        try:
            account = await self._api().get(ServiceAccount, name, namespace=namespace)
        except ApiError as exc:
            raise _read_error(where, "serviceaccounts", exc.status.code or 0) from None
        except httpx2.HTTPError as exc:
            raise self._unreachable(f"read {where}", exc) from None
        annotations = account.metadata.annotations if account.metadata is not None else None
        return {str(k): str(v) for k, v in (annotations or {}).items()}

    async def token_review(self, token: str, audience: str) -> dict[str, Any]:
        """POST a TokenReview for ``audience``; returns its status as plain data."""
        import httpx2
        from lightkube import ApiError
        from lightkube.models.authentication_v1 import TokenReviewSpec
        from lightkube.resources.authentication_v1 import TokenReview

        try:
            review = await self._api().create(
                TokenReview(spec=TokenReviewSpec(token=token, audiences=[audience]))
            )
        except ApiError as exc:
            raise BackendUnavailable(
                f"the TokenReview at {self.server} failed with HTTP {exc.status.code}; keygate's service "
                "account needs 'create' on tokenreviews (system:auth-delegator)"
            ) from None
        except httpx2.HTTPError as exc:
            raise self._unreachable("review the token", exc) from None
        status = review.status
        if status is None:
            return {"authenticated": False, "error": "empty TokenReview status"}
        user: dict[str, Any] = {}
        if status.user is not None:
            user = {
                "username": status.user.username or "",
                "uid": status.user.uid or "",
                "extra": dict(status.user.extra or {}),
            }
        return {
            "authenticated": bool(status.authenticated),
            "audiences": list(status.audiences or []),
            "error": status.error or "",
            "user": user,
        }

    async def aclose(self) -> None:
        if self.watch is not None:
            await self.watch.stop()
        await self._reads.stop()
        if self.http is not None:
            await self.http.aclose()
        if self._client is not None:
            await self._client.close()
            self._client = None


def _pod_status_error(namespace: str, name: str, code: int) -> KeygateError:
    if code == 404:
        return tag(
            PermissionDenied(
                f"pod {namespace}/{name} does not exist in the Kubernetes API; refusing to release"
            ),
            Denial.POD_NOT_FOUND,
        )
    return _read_error(f"pod {namespace}/{name}", "pods", code)


def _read_error(where: str, resource: str, code: int, missing: str = "") -> BackendUnavailable:
    """A failed GET of ``where`` as the operator fixes it: absent, or the RBAC grant to add."""
    if code == 404:
        return BackendUnavailable(f"{where} does not exist in the Kubernetes API{missing}")
    if code in (401, 403):
        return BackendUnavailable(
            f"keygate may not read {where} (HTTP {code}); grant its service account 'get' on "
            f"{resource} (see the DaemonSet's ClusterRole)"
        )
    return BackendUnavailable(f"reading {where} failed with HTTP {code}")


def _str(value: Any, where: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise PermissionDenied(f"{where} in the Kubernetes API is not a string; refusing to release")
    return value


def pod_info_json(pod: dict[str, Any], namespace: str, name: str) -> PodInfo | None:
    """The attestation-relevant view of a Pod as JSON (None when it lacks metadata or spec).

    The same fields and defaults as :func:`pod_info`; a field of the wrong type is refused.
    """
    meta, spec = pod.get("metadata"), pod.get("spec")
    if not isinstance(meta, dict) or not isinstance(spec, dict):
        return None
    where = f"pod {namespace}/{name}"
    containers: list[Container] = []
    for kind, key in (
        ("container", "containers"),
        ("initContainer", "initContainers"),
        ("ephemeralContainer", "ephemeralContainers"),
    ):
        items = spec.get(key) or []
        if not isinstance(items, list) or not all(isinstance(c, dict) for c in items):
            raise PermissionDenied(f"{where}: spec.{key} in the Kubernetes API is not a list of containers")
        containers += [
            Container(
                kind,
                _str(c.get("name"), f"{where} spec.{key}[].name"),
                _str(c.get("image"), f"{where} image"),
            )
            for c in items
        ]
    return PodInfo(
        namespace=_str(meta.get("namespace"), f"{where} metadata.namespace") or namespace,
        name=_str(meta.get("name"), f"{where} metadata.name") or name,
        uid=_str(meta.get("uid"), f"{where} metadata.uid"),
        service_account=_str(spec.get("serviceAccountName"), f"{where} spec.serviceAccountName")
        or _str(spec.get("serviceAccount"), f"{where} spec.serviceAccount")
        or "default",
        node_name=_str(spec.get("nodeName"), f"{where} spec.nodeName"),
        containers=tuple(containers),
    )


def pod_info(pod: Any, namespace: str = "", name: str = "") -> PodInfo | None:
    """The attestation-relevant view of a lightkube Pod (None when it lacks metadata or spec)."""
    meta, spec = pod.metadata, pod.spec
    if meta is None or spec is None:
        return None
    containers = [Container("container", c.name, c.image or "") for c in spec.containers]
    containers += [Container("initContainer", c.name, c.image or "") for c in spec.initContainers or []]
    containers += [
        Container("ephemeralContainer", c.name, c.image or "") for c in spec.ephemeralContainers or []
    ]
    return PodInfo(
        namespace=meta.namespace or namespace,
        name=meta.name or name,
        uid=meta.uid or "",
        service_account=spec.serviceAccountName or spec.serviceAccount or "default",
        node_name=spec.nodeName or "",
        containers=tuple(containers),
    )


class _Read:
    """One Pod GET shared by the Mounts that arrived before it was sent."""

    __slots__ = ("sent", "task")

    def __init__(self) -> None:
        self.sent = False
        self.task: asyncio.Task[PodInfo | BaseException] | None = None


class PodReads:
    """Concurrent Pod GETs for one pod coalesced into one, without serving an old answer.

    A hundred Mounts of one pod (a rotation poll of many volumes, or a retry storm) would each
    send a GET. Here a Mount joins a GET only if that GET has not been sent yet, and at most one
    GET per pod is on the wire: Mounts arriving while one is in flight wait for the next one,
    which is sent when the first returns. So every Mount is checked against a read of the pod
    that started after the Mount arrived, exactly as if it had sent its own, and nothing is kept
    once a GET returns (the pod's UID, service account, node and images are checked against the
    token by each Mount). Entries exist only while a GET is pending, so there are at most two per
    pod being mounted. A refusal is copied for each Mount so their log fields stay their own.

    The GET that waits for another also waits ``window`` seconds after it returns, so a pod mounted
    over and over sends one GET per few milliseconds rather than one per round trip; a Mount of a
    pod no other Mount is reading is never delayed.
    """

    WINDOW = 0.003

    def __init__(self, fetch: Callable[[str, str], Awaitable[PodInfo]], window: float = WINDOW) -> None:
        self._fetch = fetch
        self.window = window
        self._pending: dict[tuple[str, str], _Read] = {}
        self.sent = 0  # GETs sent
        self.shared = 0  # Mounts that joined a GET another Mount had asked for

    async def read(self, namespace: str, name: str) -> PodInfo:
        key = (namespace, name)
        read = self._pending.get(key)
        if read is None or read.sent:
            ahead = read
            read = self._pending[key] = _Read()
            read.task = asyncio.get_running_loop().create_task(self._send(key, read, ahead))
        else:
            self.shared += 1
        assert read.task is not None
        outcome = await asyncio.shield(read.task)
        if isinstance(outcome, KeygateError):
            clone = copy.copy(outcome)
            clone.log_fields = dict(outcome.log_fields)
            raise clone
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    async def _send(self, key: tuple[str, str], read: _Read, ahead: _Read | None) -> PodInfo | BaseException:
        try:
            if (
                ahead is not None
                and ahead.task is not None
                and ahead.task.get_loop() is asyncio.get_running_loop()
            ):
                await asyncio.wait((ahead.task,))
                await asyncio.sleep(self.window)
            read.sent = True
            self.sent += 1
            return await self._fetch(*key)
        except Exception as exc:  # noqa: BLE001 - handed to every waiting Mount, which raises it
            return exc
        finally:
            if self._pending.get(key) is read:
                del self._pending[key]

    async def stop(self) -> None:
        tasks = [r.task for r in self._pending.values() if r.task is not None]
        self._pending.clear()
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)


class PodWatch:
    """This node's pods, kept current by one watch, so most Mounts need no Pod GET.

    After a node reboot a hundred pods mount at once; one watch replaces a hundred GETs (and
    every rotation poll's GET). The cache only ever answers with what the watch last delivered:
    a change (an ephemeral container added, a pod replaced under the same name) arrives as an
    event and replaces the entry. When the watch breaks, the cache is emptied and Mounts fall
    back to a Pod GET until the watch is re-established, so a stale entry is never used. A pod
    not yet seen is always read with a GET. Needs ``list`` and ``watch`` on pods.
    """

    RETRY_SECONDS = 1.0

    def __init__(self, api: KubeAPI, node_name: str) -> None:
        self.api = api
        self.node_name = node_name
        self._pods: dict[tuple[str, str], PodInfo] = {}
        self._task: asyncio.Task[None] | None = None
        self.events = 0

    def lookup(self, namespace: str, name: str) -> PodInfo | None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="keygate-pod-watch")
        return self._pods.get((namespace, name))

    async def _run(self) -> None:
        from lightkube.resources.core_v1 import Pod

        while True:
            try:
                stream = self.api._api().watch(Pod, namespace="*", fields={"spec.nodeName": self.node_name})
                async for kind, pod in stream:
                    info = pod_info(pod)
                    if info is None:
                        continue
                    self.events += 1
                    if kind == "DELETED":
                        self._pods.pop((info.namespace, info.name), None)
                    else:
                        self._pods[(info.namespace, info.name)] = info
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - any break means: distrust the cache, retry
                log.warning(
                    "pod watch broke; using Pod GET until it is back",
                    extra={"error_type": type(exc).__name__, "node": self.node_name},
                )
            self._pods.clear()
            await asyncio.sleep(self.RETRY_SECONDS)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
        self._pods.clear()
