#!/usr/bin/env bash
# The whole test suite: installs keygate with its test dependencies, checks lint and types,
# then runs pytest (the tests start their own local servers: OpenBao, moto, fakes).
set -euo pipefail
cd "$(dirname "$0")"
python3 -m pip install --quiet --disable-pip-version-check -e '.[dev]'
python3 -m ruff check provider providers keygate_dev tests bench
python3 -m ruff format --check provider providers keygate_dev tests bench
python3 -m mypy provider providers keygate_dev
python3 -m pytest -q "$@"
