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
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(Path(__file__).resolve().parent)]

import atheris  # noqa: E402 - after the path, before the instrumented imports

with atheris.instrument_imports(include=["hub", "sync", "channels"]):
    import targets  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("target", nargs="?", choices=sorted(targets.TARGETS))
    parser.add_argument("--list", action="store_true", help="print the targets and exit")
    parser.add_argument("--seconds", type=int, default=60, help="how long to run (default 60)")
    parser.add_argument("--corpus", type=Path, help="corpus directory (default .fuzz/<target>)")
    args, libfuzzer = parser.parse_known_args()
    if args.list or args.target is None:
        print("\n".join(sorted(targets.TARGETS)))
        return
    target, seeds = targets.TARGETS[args.target]
    replay = [a for a in libfuzzer if not a.startswith("-")]
    flags = [a for a in libfuzzer if a.startswith("-")]
    corpus = args.corpus or ROOT / ".fuzz" / args.target
    if not replay:
        corpus.mkdir(parents=True, exist_ok=True)
        for n, seed in enumerate(seeds()):
            (corpus / f"seed-{n}").write_bytes(seed)
        os.chdir(corpus.parent)  # findings land beside the corpus
        flags = [f"-max_total_time={args.seconds}", "-print_final_stats=1", *flags, str(corpus)]
    defaults = {"-timeout": "10", "-rss_limit_mb": "1024", "-max_len": "65536"}
    for flag, value in defaults.items():
        if not any(a.startswith(flag + "=") for a in flags):
            flags.insert(0, f"{flag}={value}")
    atheris.Setup([sys.argv[0], *flags, *replay], target)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
