"""Live revocation: on a rotation, take back what upstream or the release policy no longer gives.

The driver's rotation Mount carries ``current_object_version`` (what the pod holds now) and
rewrites the volume from the files the Mount returns; a failed Mount leaves the old files. So:

- An object the pod holds (one of its ids is in ``current_object_version``) that its backend
  now definitely says is gone (:class:`provider.errors.Gone`) is *revoked*; one it does not
  hold yet fails the Mount as before (a missing secret on a first mount is a configuration
  error, not something to hide).
- On a rotation the release policy is asked again, after the pod is attested: objects it now
  refuses, or every object when the pod's images are no longer allowed, are revoked. Token and
  attestation *failures* are never revocations: the Mount fails and the old files stay.
- Outages never carry a ``Gone`` mark, so they always fail the Mount and remove nothing.
- Selectors (:mod:`provider.expand`): an expanded object is held when the backend's ``held``
  pattern matches one of the pod's ids; a refused one is revoked like the others. An id below a
  selector that this Mount no longer serves was listed before and is not now: no tombstone (a
  listing without it is no error), one ``not_found`` record (:func:`vanished`).

What a revoked object becomes (``remove``: no file; ``empty``: a zero-byte file at its path) is
the release policy rule's ``revocation`` when set, else the SPC parameter ``revocation``, else
``remove``.
"""

from __future__ import annotations

import bisect
import itertools
import logging
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from provider import metrics
from provider.attest import Attestor
from provider.attest.policy import REVOCATION_MODES, PolicyStore
from provider.attest.reasons import Denial, reason_of
from provider.domain import Fetched, PodIdentity, Revoked, SecretObject
from provider.errors import Gone, InvalidSPC, KeygateError, PermissionDenied, gone
from provider.request import MountContext
from provider.spc import MAX_OBJECTS
from provider.versions import Versioner

log = logging.getLogger("keygate.mount")

PARAMETER = "revocation"
REMOVE, EMPTY = REVOCATION_MODES
DEFAULT_MODE = REMOVE
PLACEHOLDER_VERSION = "revoked"
# Characters of held ids the "held" patterns of one Mount may examine; ids and objects both come
# from the request, so matching is bounded like everything else an attacker can size.
MATCH_BUDGET = 32 * 1024 * 1024
MAX_VANISHED = MAX_OBJECTS  # records of ids a selector no longer lists, per Mount
NEVER = re.compile(r"(?!)")  # the held pattern of an object whose ids cannot be told: never held
SKIPPED_WHEN_LISTED = frozenset({Gone.NOT_FOUND, Gone.DELETED, Gone.DISABLED})

# Refusals that come after the token and the Pod were verified: the policy saying no to a pod
# that is who it claims to be. Everything else (token, Pod, API, registry unreachable, a
# certificate that may only have expired) is an attestation failure and fails the Mount.
POLICY_DENIALS = frozenset(
    {
        Denial.IMAGE_NOT_ALLOWED,
        Denial.IMAGE_UNPINNED,
        Denial.SIGNATURE_MISSING,
        Denial.SIGNATURE_INVALID,
        Denial.SIGNATURE_DIGEST_MISMATCH,
        Denial.SIGNATURE_IDENTITY_MISMATCH,
    }
)


def spc_mode(parameters: Mapping[str, str]) -> str | None:
    """The SPC's ``revocation`` parameter, checked on every Mount so a typo shows at once."""
    raw = parameters.get(PARAMETER)
    if raw is None:
        return None
    value = raw.strip().lower()
    if value not in REVOCATION_MODES:
        raise InvalidSPC(
            f"SPC parameter {PARAMETER!r} must be one of {', '.join(REVOCATION_MODES)}, not {raw[:40]!r}"
        )
    return value


@dataclass(frozen=True, slots=True)
class Revocation:
    """One object withheld by this Mount: why, how, which of the pod's ids it had, and whether
    the pod still had its contents (``new``) or only the marker of an earlier revocation."""

    obj: SecretObject
    reason: Gone
    mode: str
    ids: tuple[str, ...]
    new: bool = True


@dataclass(frozen=True, slots=True)
class Decision:
    """Attestation's outcome for one Mount: who, what the policy refuses now, its chosen mode."""

    identity: PodIdentity
    refused: tuple[Revoked, ...] = ()
    policy_mode: str | None = None

    def allowed(self, objects: Sequence[SecretObject]) -> list[SecretObject]:
        refused = {item.obj.index for item in self.refused}
        return [obj for obj in objects if obj.index not in refused]

    def mode(self, spc: str | None) -> str:
        """The policy's mode when its rule sets one (it wins), else the SPC's, else remove."""
        return self.policy_mode or spc or DEFAULT_MODE


def _policy_of(attestor: Attestor) -> PolicyStore | None:
    store = getattr(attestor, "policy", None)
    return store if isinstance(store, PolicyStore) else None


async def attest(attestor: Attestor, ctx: MountContext, objects: Sequence[SecretObject]) -> Decision:
    """Attest the pod; on a rotation, also ask the release policy which held objects it refuses.

    A first mount is attested exactly as before (a refusal fails it). On a rotation the pod is
    attested without its objects first, so a refusal of the pod itself is told apart from a
    refusal of some objects; only refusals in :data:`POLICY_DENIALS` (the pod's images) or that
    the attestor marked ``Gone.POLICY`` (no rule covers the verified pod under ``default: deny``)
    revoke.
    """
    store = _policy_of(attestor)
    if not ctx.current_versions or store is None:
        return Decision(await attestor.attest(ctx, objects))
    pod = ctx.pod
    refusals: dict[int, PermissionDenied] | None = None
    try:
        identity = await attestor.attest(ctx, [])
    except PermissionDenied as exc:
        if reason_of(exc) not in POLICY_DENIALS and exc.gone is not Gone.POLICY:
            raise
        identity = PodIdentity(pod.namespace, pod.name, pod.uid, pod.service_account)
        refusals = {obj.index: exc for obj in objects}
    policy = store.current()
    if refusals is None:
        refusals = policy.refusals(identity.namespace, identity.service_account, objects)
    refused = tuple(
        Revoked(obj, Gone.POLICY, gone(refusals[obj.index], Gone.POLICY))
        for obj in objects
        if obj.index in refusals
    )
    return Decision(identity, refused, policy.revocation_for(identity.namespace, identity.service_account))


def held_pattern(backend: object, obj: SecretObject, parameters: Mapping[str, str]) -> re.Pattern[str] | None:
    """The backend's regular expression for the ids ``obj`` is served under (for a selector, the
    ids of anything it may list): its optional ``held``; None where it cannot tell without a read."""
    hook = getattr(backend, "held", None)
    if hook is None:
        return None
    try:
        raw = hook(obj, parameters)
        return re.compile(raw) if isinstance(raw, str) and raw else None
    except KeygateError:
        raise
    except Exception as exc:  # noqa: BLE001 - a plugin's bug: its objects count as not held
        log.error("backend held() failed", extra={"backend": obj.backend, "error_type": type(exc).__name__})
        return None


def refused_now(
    attestor: Attestor, identity: PodIdentity, objects: Sequence[SecretObject]
) -> list[tuple[SecretObject, PermissionDenied]] | None:
    """Each object the release policy refuses now, with why (a rotation's expanded objects, which
    share their selector's index); None when the attestor has no policy store to ask."""
    store = _policy_of(attestor)
    if store is None:
        return None
    policy = store.current()
    return [
        (obj, exc)
        for obj in objects
        for exc in policy.refusals(identity.namespace, identity.service_account, [obj]).values()
    ]


def expanded_refusals(
    refusals: Sequence[tuple[SecretObject, PermissionDenied]],
    backend_of: Callable[[str], object],
    parameters: Mapping[str, str],
) -> list[Revoked]:
    """Refused expanded objects as revocations, held when one of the pod's ids is theirs (by
    their backend's ``held``); a backend that cannot tell holds none, so the Mount fails."""
    return [
        Revoked(
            obj,
            Gone.POLICY,
            gone(exc, Gone.POLICY),
            held_pattern(backend_of(obj.backend), obj, parameters) or NEVER,
        )
        for obj, exc in refusals
    ]


def vanished(
    ctx: MountContext,
    domains: Sequence[tuple[SecretObject, re.Pattern[str]]],
    served: Iterable[str],
    versioner: Versioner,
) -> list[Revocation]:
    """The pod's ids below a selector that this Mount no longer serves: objects the listing no
    longer returns. Their files go (the driver removes what is not returned); each is recorded
    once as ``not_found`` (its id is not sent back, so the next rotation no longer holds it).
    The ids come from the request, so at most :data:`MAX_VANISHED` are recorded per Mount."""
    if not domains or not ctx.current_versions:
        return []
    keep = set(served)
    dropped = _HeldIds({i: v for i, v in ctx.current_versions.items() if i not in keep})
    out: list[Revocation] = []
    claimed: set[str] = set()
    for obj, pattern in domains:
        for object_id in dropped.matching(pattern):
            if object_id in claimed:
                continue
            claimed.add(object_id)
            new = ctx.current_versions[object_id] not in _markers(versioner, object_id, obj.path)
            out.append(Revocation(obj, Gone.NOT_FOUND, REMOVE, (object_id,), new))
            if len(out) >= MAX_VANISHED:
                return out
    return out


def settle(
    ctx: MountContext,
    items: Sequence[Fetched | Revoked],
    mode: str,
    versioner: Versioner,
    listed: frozenset[int] = frozenset(),
) -> tuple[list[Fetched], list[Revocation], set[int]]:
    """Split a fetch into files to return, revocations, and skipped objects; a Revoked object the
    pod does not hold fails the Mount with its backend's error (the first such object, in SPC
    order), except an expanded one (its ``id()`` in ``listed``) that reads as not found, deleted
    or disabled: a listing can name what no longer reads (a kv v2 key whose latest version is
    deleted, a secret disabled since it was listed), and such an object is as absent as one the
    listing left out, rather than a reason to refuse the pod its other files. The ``id()`` of
    each skipped object is returned.

    When no file would be left, every revoked object is emptied instead of removed: the driver
    reads a response without files as "the provider wrote them itself" and would keep the old.
    """
    held_ids = _HeldIds(ctx.current_versions)
    fetched: list[Fetched] = []
    found: list[tuple[Revoked, tuple[str, ...]]] = []
    unheld: list[Revoked] = []
    skipped: set[int] = set()
    for item in items:
        if isinstance(item, Fetched):
            fetched.append(item)
            continue
        ids = _held(held_ids, item)
        if ids is not None:
            found.append((item, ids))
        elif id(item.obj) in listed and item.reason in SKIPPED_WHEN_LISTED:
            skipped.add(id(item.obj))
            log.info(
                "a listed object reads as gone; skipped",
                extra={"backend": item.obj.backend, "object": item.obj.name, "reason": item.reason.value},
            )
        else:
            unheld.append(item)
    if unheld:
        raise min(unheld, key=lambda r: r.obj.index).error
    chosen = mode if fetched else EMPTY
    revoked = []
    for r, ids in found:
        marked = ids or (f"revoked/{r.obj.path}",)
        new = any(ctx.current_versions.get(i) not in _markers(versioner, i, r.obj.path) for i in marked)
        revoked.append(Revocation(r.obj, r.reason, chosen, ids, new))
    return fetched, sorted(revoked, key=lambda r: r.obj.index), skipped


def _held(held_ids: _HeldIds, item: Revoked) -> tuple[str, ...] | None:
    """The pod's ids ``item`` is held under (empty when its backend cannot tell), None if unheld."""
    ids = held_ids.matching(item.held) if item.held is not None else ()
    if not held_ids.ids or (item.held is not None and not ids):
        return None
    return ids


class _HeldIds:
    """The pod's ids, sorted so a pattern with a literal start looks only at ids that share it."""

    def __init__(self, versions: Mapping[str, str]) -> None:
        self.ids = sorted(versions)
        self.budget = MATCH_BUDGET

    def matching(self, pattern: re.Pattern[str]) -> tuple[str, ...]:
        """The ids ``pattern`` fully matches, shortest first; none once the budget is spent
        (the object then counts as not held: the Mount fails and nothing is removed)."""
        prefix = _literal_prefix(pattern.pattern)
        start = bisect.bisect_left(self.ids, prefix)
        out: list[str] = []
        for object_id in itertools.islice(self.ids, start, None):
            if not object_id.startswith(prefix):
                break
            self.budget -= len(object_id) + 1
            if self.budget < 0:
                return ()
            if pattern.fullmatch(object_id):
                out.append(object_id)
        return tuple(sorted(out, key=lambda i: (len(i), i)))


def _literal_prefix(pattern: str) -> str:
    """The literal text every match of ``pattern`` starts with ("" if unsure): the escaped stem
    of ``re.escape(stem) + "(?:...)?"``."""
    chars: list[str] = []
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\" and i + 1 < len(pattern) and not pattern[i + 1].isalnum():
            chars.append(pattern[i + 1])
            i += 2
            continue
        if c == "\\" or c in ".^$*+?{}[]|()":
            break
        chars.append(c)
        i += 1
    if i < len(pattern) and pattern[i] in "*?{" and chars:
        chars.pop()
    return "" if _alternation_at_top(pattern) else "".join(chars)


def _alternation_at_top(pattern: str) -> bool:
    depth, i, in_class = 0, 0, False
    while i < len(pattern):
        c = pattern[i]
        if c == "\\":
            i += 2
            continue
        if in_class:
            in_class = c != "]"
        elif c == "[":
            in_class = True
        elif c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
        elif c == "|" and depth == 0:
            return True
        i += 1
    return False


def kept(objects: Sequence[SecretObject], revoked: Sequence[Revocation]) -> list[SecretObject]:
    """The objects still to be served (a revoked one's file is either absent or a placeholder)."""
    taken = {(r.obj.index, r.obj.name, r.obj.path) for r in revoked}
    return [obj for obj in objects if (obj.index, obj.name, obj.path) not in taken]


def _markers(versioner: Versioner, object_id: str, path: str) -> frozenset[str]:
    """The versions keygate gives a revoked object's id: a placeholder file's, or a tombstone's."""
    return frozenset(
        {
            versioner.version(object_id, PLACEHOLDER_VERSION, path, b""),
            versioner.version(object_id, PLACEHOLDER_VERSION, "", b""),
        }
    )


def _primary(item: Revocation) -> str:
    return item.ids[0] if item.ids else f"revoked/{item.obj.path}"


def placeholders(revoked: Sequence[Revocation]) -> list[Fetched]:
    """The zero-byte files of objects revoked with ``empty``, under the id the pod held."""
    return [Fetched(r.obj, _primary(r), b"", PLACEHOLDER_VERSION) for r in revoked if r.mode == EMPTY]


def tombstones(
    revoked: Sequence[Revocation], versioner: Versioner, taken: Iterable[str]
) -> list[tuple[str, str]]:
    """Versions without a file for the other ids of revoked objects (all of them when removed).

    The driver sends them back on the next rotation, so an object still gone is still held and
    stays revoked rather than failing that Mount as a first mount; once it is back it is served.
    """
    seen = set(taken)
    out: list[tuple[str, str]] = []
    for item in revoked:
        ids = item.ids or (_primary(item),)
        for object_id in ids:
            if object_id in seen or (item.mode == EMPTY and object_id == _primary(item)):
                continue
            seen.add(object_id)
            out.append((object_id, versioner.version(object_id, PLACEHOLDER_VERSION, "", b"")))
    return out


def record(revoked: Sequence[Revocation]) -> list[Revocation]:
    """Count each new revocation once its Mount has succeeded; returns those (for the audit).

    An object revoked earlier and still gone is withheld again on every rotation, but counted
    and audited only when it actually left the pod."""
    new = [item for item in revoked if item.new]
    for item in new:
        metrics.record_revocation(item.obj.backend, item.reason.value)
    return new
