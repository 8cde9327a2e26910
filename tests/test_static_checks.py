"""Lint and types are part of green: ruff (lint and format) over every package, the examples, the tests and
the benchmarks (a test file is code the next person reads too), mypy strict over every package."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ["hub", "channels", "presence", "sync", "inbox", "workers"]
LINTED = [*PACKAGES, "examples", "tests", "bench"]


def test_ruff_clean() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "ruff", "check", *LINTED], cwd=ROOT, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_ruff_format_clean() -> None:
    """``ruff format`` has nothing to change (run it to fix what this lists)."""
    proc = subprocess.run(
        [sys.executable, "-m", "ruff", "format", "--check", *LINTED], cwd=ROOT, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_mypy_strict_clean() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "mypy", "--no-incremental", *PACKAGES],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_no_merge_conflict_markers() -> None:
    """A rebase whose conflicts were taken as they stood leaves its markers in a file no test parses (the
    README had three): none in any tracked file."""
    proc = subprocess.run(
        ["git", "grep", "-n", "-E", "^(<<<<<<<|>>>>>>>) ", "--", "."],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 1, proc.stdout  # 1: nothing found
