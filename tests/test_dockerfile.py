"""The Dockerfile agrees with pyproject: Python version, entry point, package; base pinned by digest.

No container engine runs here, so the build is checked by what can run: the Dockerfile's
structure, and the same wheel-then-install steps it performs, done in a throw-away venv.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import venv
from pathlib import Path

import pytest

from provider import __version__

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = (ROOT / "Dockerfile").read_text()
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with continuation lines joined and comments dropped."""
    joined = re.sub(r"\\\n\s*", " ", DOCKERFILE)
    out = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def args() -> dict[str, str]:
    return dict(rest.split("=", 1) for word, rest in instructions() if word == "ARG" and "=" in rest)


def test_base_image_is_pinned_by_digest_and_matches_requires_python():
    base = args()["PYTHON_IMAGE"]
    match = re.fullmatch(r"python:(\d+)\.(\d+)-slim@sha256:[0-9a-f]{64}", base)
    assert match, f"base image {base!r} must be python:X.Y-slim pinned by @sha256 digest"
    image_version = (int(match.group(1)), int(match.group(2)))
    required = re.fullmatch(r">=\s*(\d+)\.(\d+)", PYPROJECT["project"]["requires-python"])
    assert required, "requires-python is expected as '>=X.Y'"
    assert image_version == (int(required.group(1)), int(required.group(2)))
    assert PYPROJECT["tool"]["mypy"]["python_version"] == "{}.{}".format(*image_version)


def test_multi_stage_wheel_build_then_install():
    froms = [rest for word, rest in instructions() if word == "FROM"]
    assert froms == ["${PYTHON_IMAGE} AS build", "${PYTHON_IMAGE}"]
    runs = [rest for word, rest in instructions() if word == "RUN"]
    assert any(r.startswith("pip wheel --wheel-dir /wheels") for r in runs)
    install = next(r for r in runs if "pip install" in r)
    assert "--no-index" in install and "--find-links=/wheels" in install
    assert f'"{PYPROJECT["project"]["name"]}[' in install
    copied = [rest.split()[:-1] for word, rest in instructions() if word == "COPY"]
    for sources in copied:
        for source in sources:
            if not source.endswith("*"):
                assert (ROOT / source).exists(), f"COPY {source}: not in the repository"
    packages = {p.split("*")[0] for p in PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]}
    assert {s.rstrip("/") for src in copied for s in src} >= packages


def test_entrypoint_is_the_console_script_serve():
    (entry,) = [rest for word, rest in instructions() if word == "ENTRYPOINT"]
    assert entry == '["keygate", "serve"]'
    assert PYPROJECT["project"]["scripts"]["keygate"] == "provider.cli:main"
    from provider.cli import _parser

    assert _parser().parse_args(["serve"]).command == "serve"


def test_labels_user_and_version():
    labels = " ".join(rest for word, rest in instructions() if word == "LABEL")
    for key in ("title", "description", "version", "licenses", "source"):
        assert f"org.opencontainers.image.{key}=" in labels
    assert args()["VERSION"] == __version__ == PYPROJECT["project"]["version"]
    (user,) = [rest for word, rest in instructions() if word == "USER"]
    assert user == "0:0"
    assert "Root, on purpose" in DOCKERFILE  # the decision is documented where it is made
    extras = set(args()["KEYGATE_EXTRAS"].split(","))
    assert extras == {"vault", "azure", "gcp", "aws", "signatures"}


@pytest.mark.timeout(120)
def test_the_wheel_installs_and_runs_like_in_the_image(tmp_path):
    """Stage 1's wheel, built from exactly the COPYed files and installed as stage 2 does, works."""
    context = tmp_path / "src"
    context.mkdir()
    for word, rest in instructions():
        if word == "COPY" and "--from" not in rest:
            for source in rest.split()[:-1]:
                for path in ROOT.glob(source.rstrip("/")):
                    if path.is_dir():
                        shutil.copytree(
                            path, context / path.name, ignore=shutil.ignore_patterns("__pycache__")
                        )
                    else:
                        shutil.copy(path, context / path.name)
    wheels = tmp_path / "wheels"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(wheels),
            ".",
        ],
        cwd=context,
        check=True,
        timeout=120,
    )
    (wheel,) = wheels.glob("keygate-*.whl")
    assert wheel.name.startswith(f"keygate-{__version__}-")
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    py = env_dir / "bin" / "python"
    # The image installs the dependencies beside the wheel; here they come from the interpreter
    # running the tests. system_site_packages would mean the *base* interpreter's packages when
    # the tests run inside a venv, so the running environment's site-packages are added by a
    # .pth line instead (a plain path line: its own .pth files, such as our editable install's
    # finder, are not processed, so the new venv's keygate is the one imported).
    (purelib,) = {
        Path(p)
        for p in subprocess.run(
            [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        ).stdout.split()
    }
    (purelib / "keygate-test-deps.pth").write_text(
        "\n".join(sorted({sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]})) + "\n"
    )
    pip_args = [
        "-m",
        "pip",
        "install",
        "-q",
        "--no-deps",
        "--no-index",
        "--find-links",
        str(wheels),
        "keygate",
    ]
    subprocess.run(
        [str(py), *pip_args, "--force-reinstall", "--ignore-installed"],
        check=True,
        timeout=120,
        cwd=tmp_path,
    )
    out = subprocess.run(
        [str(env_dir / "bin" / "keygate"), "version"],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"keygate {__version__}"
    where = subprocess.run(
        [str(py), "-c", "import provider.lint, provider.health; print(provider.__file__)"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin"},
        timeout=30,
    )
    assert str(env_dir) in where.stdout, (where.stdout, where.stderr, shlex.join(pip_args))
