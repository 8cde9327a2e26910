"""The coverage-guided fuzz targets of ``bench/fuzz`` (atheris), each run for a few seconds from fresh seeds.

A short budget in CI catches a target that broke (an import, a seed that no longer decodes) and, now and
then, a shallow finding; the long runs are ``make fuzz FUZZ_SECONDS=...``. atheris is a test dependency:
if it cannot be imported this fails rather than skips.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RUN = ROOT / "bench" / "fuzz" / "run.py"
SECONDS = 2
TARGETS = subprocess.run(
    [sys.executable, str(RUN), "--list"], capture_output=True, text=True, check=True, cwd=ROOT
).stdout.split()


def test_every_target_is_listed() -> None:
    assert TARGETS == sorted(
        ["json_commands", "protobuf_commands", "ysync", "yupdate", "awareness", "room", "sse_resume_id"]
        + ["jwt", "api_body"]
    )


@pytest.mark.parametrize("target", TARGETS)
def test_target_runs_without_a_finding(target: str, tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(RUN), target, "--seconds", str(SECONDS), "--corpus", str(tmp_path / target)],
        capture_output=True,
        text=True,
        timeout=SECONDS + 60,
        cwd=ROOT,
    )
    tail = proc.stderr[-4000:]
    assert proc.returncode == 0, tail
    runs = re.search(r"Done (\d+) runs", proc.stderr)
    assert runs is not None and int(runs.group(1)) > 100, tail
    assert not list(tmp_path.glob("crash-*")), tail
