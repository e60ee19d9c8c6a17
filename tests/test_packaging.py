"""The dev stand-ins (Kubernetes API stand-in, driver client, the demo's body) are not part of the
installed product: not in the wheel, not copied into the daemon image; ``keygate demo`` finds
them in a source checkout and says what to do without one."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

from setuptools import find_packages

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_wheel_packages_exclude_the_dev_stand_ins():
    include = PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = find_packages(where=str(ROOT), include=include)
    assert "provider" in packages and "providers.vault" in packages and "providers.common" in packages
    assert not [p for p in packages if p.startswith("keygate_dev")]
    assert not (ROOT / "provider" / "devcluster.py").exists()
    assert not (ROOT / "provider" / "driver_client.py").exists()
    assert not (ROOT / "provider" / "embedded.py").exists()


def test_daemon_image_does_not_copy_the_dev_stand_ins():
    copies = [line for line in (ROOT / "Dockerfile").read_text().splitlines() if line.startswith("COPY")]
    assert copies and not [line for line in copies if "keygate_dev" in line or line.split()[1] == "."]


def test_demo_without_a_checkout_says_what_to_do(tmp_path):
    shutil.copytree(ROOT / "provider", tmp_path / "provider")
    shutil.copytree(ROOT / "providers", tmp_path / "providers")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    code = "import sys; from provider.cli import main; sys.exit(main(['demo']))"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 2, out.stdout + out.stderr
    assert "keygate_dev" in out.stderr and "pip install -e ." in out.stderr
    assert "Traceback" not in out.stderr
