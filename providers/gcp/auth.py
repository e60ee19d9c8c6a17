"""Which Google identity a GCP Mount reads as, chosen as the GCP provider chooses:

* a ``key.json`` in the nodePublishSecretRef: that service-account key (only ``service_account``
  keys, only towards the configured OAuth token endpoint, so a key file cannot make the daemon
  read node files or call arbitrary URLs);
* ``auth: provider-adc``: the daemon's own Application Default Credentials (the node's identity,
  shared by every pod), refused unless the release policy grants the pod ``nodeIdentity: [gcp]``;
* otherwise the pod's workload identity: the pod's own token exchanged at STS for a federated
  token, then optionally traded for a service account's token (``gcpServiceAccount``).
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from provider.attest.policy import node_identity_refused
from provider.domain import FetchContext
from provider.errors import InvalidRequest, InvalidSPC, KeygateError, PermissionDenied, Unauthenticated
from providers.common.runtime import Retryable
from providers.common.schema import Values
from providers.common.tokens import pod_token
from providers.gcp.oauth import CLOUD_SCOPE, TokenSource, oauth_reason, retryable
from providers.gcp.params import AUTH_PROVIDER, PROVIDER_ADC_WHAT, delegates
from providers.gcp.settings import GCPSettings

if TYPE_CHECKING:
    from google.auth.transport.requests import Request

JWT_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:jwt"  # noqa: S105 - a token type name
NODE_KEY = "key.json"
IMPERSONATION_LIFETIME = 3600


class Identities:
    """Builds the :class:`TokenSource` of a Mount; holds the daemon's ADC once loaded."""

    def __init__(self, settings: GCPSettings) -> None:
        self.settings = settings
        self._adc: Any = None
        self._adc_lock = threading.Lock()

    def choose(self, ctx: FetchContext, values: Values) -> TokenSource:
        """Pick the identity as the GCP provider does: key.json, else ``auth``, else the pod."""
        auth = values.text("auth")
        key_json = ctx.node_secrets.get(NODE_KEY)
        if key_json is not None:
            if auth:
                raise InvalidSPC(
                    f"the nodePublishSecretRef holds {NODE_KEY} and the SPC sets auth: {auth}; "
                    "use one or the other (as the GCP provider requires)"
                )
            if not self.settings.allow_node_publish_secret:
                raise PermissionDenied(
                    f"the nodePublishSecretRef holds {NODE_KEY}, but static keys are disabled on this "
                    "cluster (backends.gcp.allow_node_publish_secret: false); use workload identity"
                )
            return self._key_auth(key_json)
        if auth == AUTH_PROVIDER:
            pod = ctx.pod
            if "gcp" not in pod.node_identity:
                raise node_identity_refused("gcp", PROVIDER_ADC_WHAT, pod.namespace, pod.service_account)
            return TokenSource(
                "provider-adc", ("provider-adc",), "the keygate daemon's own credentials", self._adc_token
            )
        return self._workload_auth(ctx, values)

    def _workload_auth(self, ctx: FetchContext, values: Values) -> TokenSource:
        pool = values.text("workloadIdentityPool")
        provider = values.text("identityProvider")
        audience = values.text("workloadIdentityAudience")
        if not audience and pool and provider:
            audience = f"identitynamespace:{pool}:{provider}"
        if not audience:
            raise InvalidSPC(
                "GCP workload identity is not configured: set backends.gcp.workload_identity_pool and "
                "identity_provider (or workload_identity_audience) in the keygate config, or the SPC "
                "parameters workloadIdentityPool and identityProvider"
            )
        candidates = [a for a in (pool, audience) if a]
        if audience.startswith("//"):
            candidates.append("https:" + audience)
        subject = pod_token(ctx, candidates)
        gsa = values.text("gcpServiceAccount")
        chain = delegates(values.text("gcpServiceAccountDelegates"), "gcpServiceAccountDelegates")
        who = f"workload identity {ctx.pod.namespace}/{ctx.pod.service_account}"
        describe = f"{who} impersonating {gsa}" if gsa else f"{who} (pool {pool or audience})"
        key = (
            "pod-adc",
            audience,
            ctx.pod.namespace,
            ctx.pod.service_account,
            ctx.pod.uid,
            gsa,
            ",".join(chain),
            hashlib.sha256(subject.encode()).hexdigest(),
        )

        def build(request: Request) -> tuple[str, datetime | None]:
            return self._exchange(request, subject, audience, gsa, chain, describe)

        return TokenSource("pod-adc", key, describe, build)

    def _exchange(
        self,
        request: Request,
        subject: str,
        audience: str,
        gsa: str,
        delegates: tuple[str, ...],
        describe: str,
    ) -> tuple[str, datetime | None]:
        """STS token exchange with the pod's token, then IAM impersonation if a GSA is named."""
        from google.auth import identity_pool, impersonated_credentials

        class _PodToken(identity_pool.SubjectTokenSupplier):
            def get_subject_token(self, context: Any, request: Any) -> str:
                return subject

        federated = identity_pool.Credentials(
            audience=audience,
            subject_token_type=JWT_TOKEN_TYPE,
            token_url=self.settings.sts_endpoint,
            subject_token_supplier=_PodToken(),
            scopes=[CLOUD_SCOPE],
        )
        _refresh(
            federated,
            request,
            "the GCP STS endpoint",
            lambda reason: Unauthenticated(
                f"GCP STS refused the pod's token for {describe} (audience {audience}): {reason}"
            ),
            f" for {describe}",
        )
        if not gsa:
            return str(federated.token), federated.expiry
        impersonated = impersonated_credentials.Credentials(
            source_credentials=federated,
            target_principal=gsa,
            target_scopes=[CLOUD_SCOPE],
            delegates=[f"projects/-/serviceAccounts/{d}" for d in delegates],
            lifetime=IMPERSONATION_LIFETIME,
            iam_endpoint_override=(
                f"{self.settings.iam_endpoint.rstrip('/')}/v1/projects/-/serviceAccounts/{gsa}:generateAccessToken"
            ),
        )
        _refresh(
            impersonated,
            request,
            "the GCP IAM Credentials endpoint",
            lambda reason: PermissionDenied(
                f"GCP IAM refused {describe}: {reason}; grant the pod's principal "
                f"roles/iam.workloadIdentityUser (or serviceAccountTokenCreator) on {gsa}"
            ),
            f" for {describe}",
        )
        return str(impersonated.token), impersonated.expiry

    def _key_auth(self, key_json: str) -> TokenSource:
        """Static service-account key from the nodePublishSecretRef (the pod namespace's Secret)."""
        try:
            info = json.loads(key_json)
        except ValueError:
            raise InvalidRequest(f"the nodePublishSecretRef {NODE_KEY} is not valid JSON") from None
        if not isinstance(info, dict) or info.get("type") != "service_account":
            raise InvalidRequest(
                f"the nodePublishSecretRef {NODE_KEY} must be a service-account key "
                '("type": "service_account"); other credential types are not accepted'
            )
        token_uri = info.get("token_uri") or self.settings.token_endpoint
        if token_uri != self.settings.token_endpoint:
            raise PermissionDenied(
                f"the nodePublishSecretRef {NODE_KEY} names token_uri {str(token_uri)[:100]!r}; keygate "
                f"only sends key assertions to {self.settings.token_endpoint}"
            )
        email = str(info.get("client_email", ""))[:200]
        describe = f"the service-account key of {email or 'an unnamed account'} (nodePublishSecretRef)"
        key = ("node-publish-secret", hashlib.sha256(key_json.encode()).hexdigest())

        def build(request: Request) -> tuple[str, datetime | None]:
            from google.auth import exceptions as aexc
            from google.oauth2 import service_account

            try:
                creds = service_account.Credentials.from_service_account_info(
                    {**info, "token_uri": self.settings.token_endpoint}, scopes=[CLOUD_SCOPE]
                )
            except (ValueError, KeyError, aexc.GoogleAuthError) as exc:
                raise InvalidRequest(
                    f"the nodePublishSecretRef {NODE_KEY} is not a usable service-account key "
                    f"({type(exc).__name__})"
                ) from None
            _refresh(
                creds,
                request,
                "the GCP OAuth token endpoint",
                lambda reason: Unauthenticated(f"GCP refused {describe}: {reason}"),
            )
            return str(creds.token), creds.expiry

        return TokenSource("node-publish-secret", key, describe, build)

    def _adc_token(self, request: Request) -> tuple[str, datetime | None]:
        """The daemon's Application Default Credentials, loaded once and refreshed on demand."""
        import google.auth
        from google.auth import exceptions as aexc

        with self._adc_lock:
            try:
                if self._adc is None:
                    self._adc, _ = google.auth.default(scopes=[CLOUD_SCOPE])
            except aexc.DefaultCredentialsError:
                raise KeygateError(
                    "auth: provider-adc, but the keygate daemon has no Application Default Credentials"
                ) from None
            _refresh(
                self._adc,
                request,
                "the token endpoint of the daemon's own credentials",
                lambda reason: Unauthenticated(f"the daemon's own credentials were refused: {reason}"),
            )
            return str(self._adc.token), self._adc.expiry


def _refresh(
    credentials: Any,
    request: Request,
    endpoint: str,
    refused: Callable[[str], KeygateError],
    subject: str = "",
) -> None:
    """Refresh Google credentials: unreachable, busy or garbled endpoints are retried, refusals
    are not. ``subject`` (" for <identity>") names whose token was asked for."""
    from google.auth import exceptions as aexc

    try:
        credentials.refresh(request)
    except aexc.TransportError:
        raise Retryable(f"{endpoint} could not be reached{subject}") from None
    except (ValueError, KeyError):
        # google-auth parses the answer with json.loads and indexes it; a garbled or cut body
        # surfaces as these, never with the body in our message.
        raise Retryable(f"{endpoint} sent an unreadable answer{subject}") from None
    except (aexc.RefreshError, aexc.OAuthError) as exc:
        if retryable(exc):
            raise Retryable(f"{endpoint} is busy ({oauth_reason(exc)})") from None
        raise refused(oauth_reason(exc)) from None
