"""The coverage-guided fuzz targets of ``bench/fuzz`` (atheris), each run for a few seconds from fresh seeds.

A short budget in CI catches a target that broke (an import, a seed that no longer decodes) and, now and
then, a shallow finding; the long runs are ``make fuzz FUZZ_SECONDS=...``. atheris is a test dependency:
if it cannot be imported this fails rather than skips.

One ``run.py --all`` process runs every target in turn (the instrumentation of our packages, seconds of
start-up, is paid once, not once per target); each target's test reads its exit status, its libFuzzer
output and its folder from that run.
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


@pytest.fixture(scope="module")
def fuzz_all(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """Every target for SECONDS each in one instrumented process: its folder, each target's status line."""
    root = tmp_path_factory.mktemp("fuzz")
    proc = subprocess.run(
        [sys.executable, str(RUN), "--all", "--seconds", str(SECONDS), "--corpus", str(root)],
        capture_output=True,
        text=True,
        timeout=len(TARGETS) * (SECONDS + 60),
        cwd=ROOT,
    )
    status = dict(line.split(": ", 1) for line in proc.stdout.splitlines() if ": " in line)
    assert sorted(status) == TARGETS, f"{proc.stdout}\n{proc.stderr[-4000:]}"
    return root, status


@pytest.mark.parametrize("target", TARGETS)
def test_target_runs_without_a_finding(target: str, fuzz_all: tuple[Path, dict[str, str]]) -> None:
    root, status = fuzz_all
    log = (root / target / "log").read_text(errors="replace")
    tail = f"{status[target]}\n{log[-4000:]}"
    assert status[target].startswith("exit 0,"), tail
    runs = re.search(r"Done (\d+) runs", log)
    assert runs is not None and int(runs.group(1)) > 100, tail
    assert not list((root / target).glob("crash-*")), tail
