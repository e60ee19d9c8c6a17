"""docs/local.md works as written: its blocks run in order in a fresh directory.

```bash blocks run with bash -e (the one starting ``keygate serve`` in the background, as the page
says "in a second terminal"); ```python blocks starting ``# file: NAME`` are written to NAME. The
install block (marked "once") is skipped: the test already runs in an environment with keygate.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGE = REPO / "docs" / "local.md"
BLOCK = re.compile(r"^```(bash|python)\n(.*?)^```$", re.MULTILINE | re.DOTALL)


def blocks() -> list[tuple[str, str]]:
    return [
        (lang, body) for lang, body in BLOCK.findall(PAGE.read_text()) if "once" not in body.split("\n")[0]
    ]


@pytest.mark.skipif(shutil.which("openssl") is None, reason="the recipe uses openssl")
def test_local_recipe_runs_as_written():
    work = Path(tempfile.mkdtemp(prefix="kg-"))
    daemon: subprocess.Popen[str] | None = None
    outputs: list[str] = []
    try:
        for lang, body in blocks():
            if lang == "python":
                first, _, rest = body.partition("\n")
                assert first.startswith("# file: "), first
                (work / first.removeprefix("# file: ").strip()).write_text(rest)
                continue
            if body.lstrip().startswith("keygate serve"):
                daemon = subprocess.Popen(
                    ["bash", "-ec", body], cwd=work, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
                )
                deadline = time.monotonic() + 30
                while not (work / "keygate.sock").exists():
                    assert daemon.poll() is None, daemon.communicate()[1]
                    assert time.monotonic() < deadline, "the daemon did not start"
                    time.sleep(0.05)
                continue
            done = subprocess.run(
                ["bash", "-ec", body], cwd=work, capture_output=True, text=True, timeout=120
            )
            assert done.returncode == 0, (body, done.stdout, done.stderr)
            outputs.append(done.stdout)
        assert daemon is not None, "the page has no keygate serve block"
        text = "\n".join(outputs)
        assert "db-password 0644 28 bytes" in text
        assert "DENIED UNAUTHENTICATED" in text  # the stolen token
        decisions = [json.loads(line)["decision"] for line in (work / "audit.jsonl").read_text().splitlines()]
        assert decisions == ["release", "deny"]
        daemon.send_signal(signal.SIGINT)
        _, err = daemon.communicate(timeout=30)
        assert daemon.returncode == 0, err
        assert "sealed keys loaded" in err and "Traceback" not in err
    finally:
        if daemon is not None and daemon.poll() is None:
            daemon.kill()
            daemon.wait(timeout=10)
        shutil.rmtree(work, ignore_errors=True)
