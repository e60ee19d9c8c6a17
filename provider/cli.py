"""The ``keygate`` command: serve, demo, keygen, seal, lint, version.

:func:`main` is the one guard around every subcommand: a :class:`KeygateError` prints its
message, a missing optional SDK prints the extra to install, anything else prints one line
with a hint to rerun with ``--debug``; each has its own exit status (:class:`ExitCode`) and
none prints a traceback unless asked.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from provider import RUNTIME_NAME, __version__, logs
from provider import config as config_mod
from provider.errors import KeygateError
from provider.exit_codes import ExitCode

if TYPE_CHECKING:
    from provider.mount import Mounter
    from provider.selector_preview import SelectorPreview

DEBUG_ENV = "KEYGATE_DEBUG"

log = logging.getLogger("keygate")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="keygate",
        description="Secrets Store CSI Driver provider that attests pods before releasing secrets.",
        epilog="Exit status: 0 ok, 1 problems found (lint errors, demo failed), 2 usage, configuration "
        "or input error, 3 a backend's optional SDK is missing (pip install 'keygate[<backend>]'), "
        "4 unexpected error (rerun with --debug), 130 interrupted. See docs/cli.md.",
    )
    parser.add_argument("--version", action="version", version=f"{RUNTIME_NAME} {__version__}")
    parser.add_argument(
        "--debug",
        action="store_true",
        help=f"print the traceback of an unexpected error (also: {DEBUG_ENV}=1)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser(
        "serve",
        help="run the provider daemon on a Unix socket",
        description="Run the provider daemon. Every flag can also be set by "
        "its KEYGATE_* environment variable or a key in --config.",
    )
    config_mod.add_flags(serve)

    demo = sub.add_parser(
        "demo",
        help="attested mounts via a live daemon: signed image released, unsigned refused, live revocation",
        description="Run a daemon with attestation on against in-process stand-ins (a Kubernetes API "
        "minting real pod tokens, an HTTPS OCI registry) and send the driver's Mounts for two sealed "
        "secrets: a pod running a cosign-signed image is released; one running an unsigned image "
        "(signature_missing), one running a tag and one presenting another pod's token are refused; "
        "then the release policy stops allowing api-token and the rotation Mount takes it out of "
        "the pod's volume (a revoke audit record). Prints the SPC, the policy and the audit "
        "records; values are masked. Needs a source checkout (the keygate_dev package).",
    )
    demo.add_argument(
        "--show-values", action="store_true", help="print file contents instead of masking them"
    )
    demo.add_argument(
        "--keep",
        metavar="DIR",
        help="copy the demo's SPC (spc.yaml), release policy (policy.yaml, cosign.pub) and audit file "
        "(audit.jsonl) to DIR",
    )

    keygen = sub.add_parser("keygen", help="make a node key pair for the sealed backend")
    keygen.add_argument("--out", default=".", help="directory for node.key (0600) and node.pub (default: .)")
    keygen.add_argument("--name", default="node", help="file name stem (default: node)")
    keygen.add_argument("--force", action="store_true", help="overwrite existing files")

    seal = sub.add_parser("seal", help="encrypt a value from stdin for a namespace and object name")
    seal.add_argument("--namespace", required=True, help="namespace of the pods that may open it")
    seal.add_argument("--name", required=True, help="objectName it will have in the SecretProviderClass")
    seal.add_argument(
        "--recipient",
        required=True,
        action="append",
        help="node public key PEM file; repeat to seal for several keys (rotation)",
    )

    lint = sub.add_parser(
        "lint",
        help="check a SecretProviderClass (and optionally its pod) offline",
        description="Check a SecretProviderClass the way the daemon reads it, plus what only the "
        "manifest shows: parameter and field names, object list syntax, paths, modes, duplicate "
        "files, sealed values bound to the right namespace and name, pod volumes and image digests. "
        "Prints every problem with file:line. Exit status: 1 on any error (or warning with --strict), "
        "else 3 when a backend's SDK is not installed (its own checks were skipped), else 0.",
    )
    lint.add_argument("spc", help="YAML file with one or more SecretProviderClass documents")
    lint.add_argument("pod", nargs="?", help="optional Pod (or Deployment, Job...) manifest that mounts it")
    lint.add_argument("--namespace", help="namespace of the pods, when neither file says it")
    lint.add_argument(
        "--recipient",
        action="append",
        default=[],
        metavar="PEM",
        help="node public key; check every sealed value can be opened by one of these keys",
    )
    lint.add_argument(
        "--policy",
        metavar="FILE",
        help="release policy file: report the rule covering each pod, image allowlist refusals, "
        "the images that need signatures, and unreadable keys or trusted roots",
    )
    lint.add_argument("--strict", action="store_true", help="treat warnings as errors")
    online = lint.add_argument_group(
        "listing selectors (online)",
        "With --list, each selector is expanded as the daemon would for a pod with this token: the "
        "same login, listing, caps, file names and (with --policy) release policy. No secret value is read.",
    )
    online.add_argument(
        "--list", action="store_true", help="list what each selector expands to (needs --token)"
    )
    online.add_argument(
        "--token",
        action="append",
        default=[],
        metavar="[AUDIENCE=]FILE",
        help="a service-account token of the pod's identity (kubectl create token SA -n NS "
        "--audience AUD > FILE), offered under AUDIENCE or its 'aud' claim; repeat for several audiences",
    )
    online.add_argument("--service-account", help="service account to act as, when the token does not say it")
    online.add_argument(
        "--config",
        metavar="FILE",
        help="the daemon's config file (backends: section, endpoints, rate limits)",
    )

    sub.add_parser("version", help="print name and version")
    return parser


def _listing(args: argparse.Namespace) -> SelectorPreview | None:
    """``lint --list``'s online part, or None; its flags mean nothing without it."""
    if not args.list:
        stray = [
            flag
            for flag, value in (
                ("--token", args.token),
                ("--service-account", args.service_account),
                ("--config", args.config),
            )
            if value
        ]
        if stray:
            raise KeygateError(f"{', '.join(stray)} only apply with --list")
        return None
    if not args.token:
        raise KeygateError(
            "--list needs a service-account token of the pod's identity: --token FILE "
            "(kubectl create token SA -n NS --audience AUD > FILE)"
        )
    from provider.selector_preview import SelectorPreview

    return SelectorPreview(
        token_specs=args.token,
        config_path=args.config,
        namespace=args.namespace,
        service_account=args.service_account,
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    debug = bool(args.debug) or os.environ.get(DEBUG_ENV, "").strip().lower() in ("1", "true", "yes", "on")
    try:
        return int(_run(args))
    except KeygateError as exc:
        if debug:
            traceback.print_exc()
        print(f"keygate: {exc.message}", file=sys.stderr)
        return ExitCode.MISSING_EXTRA if _is_missing_extra(exc) else ExitCode.USAGE
    except ImportError as exc:
        return _import_failed(exc, args.command, debug)
    except KeyboardInterrupt:
        print("keygate: interrupted", file=sys.stderr)
        return ExitCode.INTERRUPTED
    except BrokenPipeError:
        _silence_stdout()
        return ExitCode.OK
    except Exception as exc:  # noqa: BLE001 - the one place that turns a bug into one line
        if debug:
            traceback.print_exc()
        print(f"keygate: {_unexpected(exc, args.command, debug)}", file=sys.stderr)
        return ExitCode.INTERNAL


def _run(args: argparse.Namespace) -> int:
    if args.command == "serve":
        return _serve(args)
    if args.command == "demo":
        from provider.demo import run_demo

        return run_demo(show_values=args.show_values, keep=args.keep)
    if args.command == "keygen":
        return _keygen(args)
    if args.command == "seal":
        return _seal(args)
    if args.command == "lint":
        from provider.lint import main as lint_main

        return lint_main(
            args.spc,
            args.pod,
            namespace=args.namespace,
            recipients=args.recipient,
            strict=args.strict,
            policy=args.policy,
            listing=_listing(args),
        )
    print(f"{RUNTIME_NAME} {__version__}")
    return ExitCode.OK


def _is_missing_extra(exc: KeygateError) -> bool:
    from providers.registry import MissingExtra

    return isinstance(exc, MissingExtra)


def _import_failed(exc: ImportError, command: str, debug: bool) -> int:
    """An SDK import that escaped its backend: the extra's message if it is one, else a bug."""
    from providers.registry import MissingExtra, extra_for_module

    if debug:
        traceback.print_exc()
    backend = extra_for_module(exc.name)
    if backend is not None:
        print(f"keygate: {MissingExtra(backend, exc.name or backend).message}", file=sys.stderr)
        return ExitCode.MISSING_EXTRA
    print(f"keygate: {_unexpected(exc, command, debug)}", file=sys.stderr)
    return ExitCode.INTERNAL


def _unexpected(exc: BaseException, command: str, debug: bool) -> str:
    """One line naming the error type and where it happened; never the exception's text, which
    may quote a value (an OS error's reason and file name are shown, they hold no content)."""
    frames = traceback.extract_tb(exc.__traceback__)
    ours = [f for f in frames if "/provider/" in f.filename or "/providers/" in f.filename]
    where = ""
    if ours or frames:
        frame = (ours or frames)[-1]
        parts = Path(frame.filename).parts
        where = f" at {'/'.join(parts[-2:])}:{frame.lineno}"
    detail = ""
    if isinstance(exc, OSError) and exc.strerror:
        detail = f": {exc.strerror}" + (f": {exc.filename}" if exc.filename else "")
    hint = "" if debug else f"; rerun with --debug (or {DEBUG_ENV}=1) for the traceback"
    return f"unexpected error in '{command}' ({type(exc).__name__}{where}){detail}{hint}"


def _silence_stdout() -> None:
    """After the reader of our output went away (``keygate lint x | head``), exit quietly."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def _serve(args: argparse.Namespace) -> int:
    from provider.app import build_mounter
    from provider.memory import tune_malloc
    from provider.server import Daemon

    tune_malloc()
    config = config_mod.load(args)
    logs.setup(config.log_level, config.log_format)
    try:
        mounter = build_mounter(config)
        _log_sealed_keys(mounter, config)
        daemon = Daemon.from_config(mounter, config)
        asyncio.run(daemon.run_until_signal())
    except KeygateError as exc:
        exc.args = (config_mod.attribute(exc.message, config), *exc.args[1:])
        raise
    return 0


def _log_sealed_keys(mounter: Mounter, config: config_mod.Config) -> None:
    """Say at start-up which node keys the sealed backend holds (key ids only, never keys)."""
    sources = config.backend_settings()["sealed"]["keys"]
    if not sources:
        log.info(
            "no sealed key loaded; sealed objects will be refused",
            extra={"hint": f"set {config_mod.describe('sealed_key')}"},
        )
        return
    sealed = mounter.registry.get("sealed")
    log.info(
        "sealed keys loaded",
        extra={"key_ids": list(getattr(sealed, "key_ids", [])), "sources": [str(s) for s in sources]},
    )


def _keygen(args: argparse.Namespace) -> int:
    from providers.sealed.envelope import generate_key, key_id, private_pem, public_pem

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    private_path, public_path = out / f"{args.name}.key", out / f"{args.name}.pub"
    for path in (private_path, public_path):
        if path.exists() and not args.force:
            raise KeygateError(f"{path} exists; pass --force to overwrite")
    key = generate_key()
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    fd = os.open(private_path, flags, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(private_pem(key))
    os.chmod(private_path, 0o600)
    public_path.write_bytes(public_pem(key.public_key()))
    print(f"private key: {private_path} (mode 0600; mount it only into the keygate DaemonSet)")
    print(f"public key:  {public_path} (key id {key_id(key.public_key())}; give it to CI for 'keygate seal')")
    return 0


def _seal(args: argparse.Namespace) -> int:
    from providers.sealed.envelope import SealError, load_public, seal

    recipients = []
    for path in args.recipient:
        try:
            pem = Path(path).read_bytes()
        except OSError as exc:
            raise KeygateError(f"cannot read recipient key {path}: {os.strerror(exc.errno or 0)}") from None
        try:
            recipients.append(load_public(pem, path))
        except SealError as exc:
            raise KeygateError(str(exc)) from None
    value = sys.stdin.buffer.read()
    if not value:
        raise KeygateError("nothing to seal: pipe the secret value on standard input")
    try:
        print(seal(value, args.namespace, args.name, recipients))
    except SealError as exc:
        raise KeygateError(str(exc)) from None
    return 0


if __name__ == "__main__":
    sys.exit(main())
