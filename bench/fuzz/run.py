"""Run one coverage-guided fuzz target (``bench/fuzz/targets.py``) under atheris (libFuzzer).

    .venv/bin/python bench/fuzz/run.py TARGET [--seconds N] [--corpus DIR] [libFuzzer flags...]
    .venv/bin/python bench/fuzz/run.py --list
    make fuzz FUZZ_SECONDS=600 [TARGET=ysync]        # every target (or one) for that long each

The corpus directory (default ``.fuzz/<target>``, kept between runs) starts with the target's seeds and
gathers every input that reached new code; a finding is written beside it as ``crash-*``/``timeout-*``/
``oom-*`` and the run exits non-zero. Replay one with ``run.py TARGET path/to/crash-...`` (libFuzzer runs
the given files and stops). Our packages (hub, sync, channels) are instrumented for coverage; the
libraries they call (orjson, pycrdt, PyJWT) are run, not instrumented.

Defaults: ``-timeout=10`` (seconds per input: a slow input is a finding), ``-rss_limit_mb=1024`` (a
node that one small input takes past that is a finding; the targets idle at 80-200 MB),
``-max_len=65536`` (the hub's ``client_max_message_size``).

``--all --seconds N --corpus DIR`` runs every target in turn for N seconds each (the suite's smoke run,
tests/fuzz/test_atheris.py): the packages are instrumented once, in this process, and each target runs in
a child forked from it (libFuzzer exits its process at the end of a run), in ``DIR/<target>/`` (its
``corpus``, its findings, and its libFuzzer output in ``log``); a line per target tells its exit status,
and the exit status is non-zero if any target's was. ``--list`` imports the targets without instrumenting.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(Path(__file__).resolve().parent)]

import atheris  # noqa: E402 - after the path, before the instrumented imports

DEFAULTS = {"-timeout": "10", "-rss_limit_mb": "1024", "-max_len": "65536"}


def load_targets(*, instrument: bool) -> ModuleType:
    """``targets``, with our packages (hub, sync, channels) instrumented for coverage when asked (the
    instrumentation is what costs: seconds of start-up)."""
    if not instrument:
        return importlib.import_module("targets")
    with atheris.instrument_imports(include=["hub", "sync", "channels"]):
        return importlib.import_module("targets")


def fuzz(targets: ModuleType, name: str, seconds: int, corpus: Path, libfuzzer: list[str]) -> None:
    """Run target ``name`` under libFuzzer in this process; never returns (libFuzzer exits)."""
    target, seeds = targets.TARGETS[name]
    replay = [a for a in libfuzzer if not a.startswith("-")]
    flags = [a for a in libfuzzer if a.startswith("-")]
    if not replay:
        corpus.mkdir(parents=True, exist_ok=True)
        for n, seed in enumerate(seeds()):
            (corpus / f"seed-{n}").write_bytes(seed)
        os.chdir(corpus.parent)  # findings land beside the corpus
        flags = [f"-max_total_time={seconds}", "-print_final_stats=1", *flags, str(corpus)]
    for flag, value in DEFAULTS.items():
        if not any(a.startswith(flag + "=") for a in flags):
            flags.insert(0, f"{flag}={value}")
    atheris.Setup([sys.argv[0], *flags, *replay], target)
    atheris.Fuzz()


def fuzz_all(targets: ModuleType, seconds: int, root: Path, libfuzzer: list[str]) -> int:
    """Every target in turn, each in a child forked from this (instrumented) process, in ``root/<name>/``
    with its output in ``root/<name>/log``; the number of targets whose run failed."""
    failed = 0
    for name in sorted(targets.TARGETS):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the child: libFuzzer's output to the log, then fuzz until it exits
            try:
                log = os.open(folder / "log", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                os.dup2(log, 1)
                os.dup2(log, 2)
                fuzz(targets, name, seconds, folder / "corpus", libfuzzer)
            finally:
                os._exit(70)  # only if fuzz() raised
        _, wait_status, usage = os.wait4(pid, 0)
        status = os.waitstatus_to_exitcode(wait_status)
        failed += status != 0
        print(f"{name}: exit {status}, cpu {usage.ru_utime + usage.ru_stime:.1f} s", flush=True)
    return failed


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("target", nargs="?")
    parser.add_argument("--list", action="store_true", help="print the targets and exit")
    parser.add_argument("--all", action="store_true", help="run every target in turn (in DIR/<target>/)")
    parser.add_argument("--seconds", type=int, default=60, help="how long to run (default 60)")
    parser.add_argument("--corpus", type=Path, help="corpus directory (default .fuzz/<target>)")
    args, libfuzzer = parser.parse_known_args()
    if args.list or (args.target is None and not args.all):
        print("\n".join(sorted(load_targets(instrument=False).TARGETS)))
        return
    targets = load_targets(instrument=True)
    if args.all:
        if args.target is not None:
            parser.error("--all runs every target: name none")
        sys.exit(1 if fuzz_all(targets, args.seconds, args.corpus or ROOT / ".fuzz", libfuzzer) else 0)
    if args.target not in targets.TARGETS:
        parser.error(f"unknown target {args.target!r}: one of {', '.join(sorted(targets.TARGETS))}")
    fuzz(targets, args.target, args.seconds, args.corpus or ROOT / ".fuzz" / args.target, libfuzzer)


if __name__ == "__main__":
    main()
