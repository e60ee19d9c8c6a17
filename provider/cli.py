"""The ``keygate`` command: serve, demo, keygen, seal, lint, version."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from provider import RUNTIME_NAME, __version__, logs
from provider import config as config_mod
from provider.errors import KeygateError

log = logging.getLogger("keygate")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="keygate",
        description="Secrets Store CSI Driver provider that attests pods before releasing secrets.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser(
        "serve",
        help="run the provider daemon on a Unix socket",
        description="Run the provider daemon. Every flag can also be set by "
        "its KEYGATE_* environment variable or a key in --config.",
    )
    config_mod.add_flags(serve)

    demo = sub.add_parser("demo", help="seal a sample secret, mount it through a live daemon, show the files")
    demo.add_argument(
        "--show-values", action="store_true", help="print file contents instead of masking them"
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
        "Prints every problem with file:line; exits 1 on any error.",
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
    lint.add_argument("--strict", action="store_true", help="treat warnings as errors")

    sub.add_parser("version", help="print name and version")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "serve":
            return _serve(args)
        if args.command == "demo":
            from provider.demo import run_demo

            return run_demo(show_values=args.show_values)
        if args.command == "keygen":
            return _keygen(args)
        if args.command == "seal":
            return _seal(args)
        if args.command == "lint":
            from provider.lint import main as lint_main

            return lint_main(
                args.spc, args.pod, namespace=args.namespace, recipients=args.recipient, strict=args.strict
            )
        print(f"{RUNTIME_NAME} {__version__}")
        return 0
    except KeygateError as exc:
        print(f"keygate: {exc.message}", file=sys.stderr)
        return 2


def _serve(args: argparse.Namespace) -> int:
    from provider.app import build_mounter
    from provider.server import Daemon

    config = config_mod.load(args)
    logs.setup(config.log_level, config.log_format)
    mounter = build_mounter(config)
    daemon = Daemon.from_config(mounter, config)
    asyncio.run(daemon.run_until_signal())
    return 0


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
