"""Load test of the app on loopback: many /explain calls at once, good and bad files mixed.

    PYTHONPATH=. python benchmarks/load_app.py [--requests 500] [--concurrency 8]

Starts ``app.py`` (the default backbone) in its own process on a free loopback port, offline,
and sends ``--requests`` /explain calls from ``--concurrency`` client threads through
``gradio_client``, each its own session: three in four with a photo that must be explained
(the bundled examples and the corpus files of ``tests/badcorpus.py`` that must be), one in four
with a corpus file that must be refused. Every call has a time limit, and so has the run.
Reports the calls that went wrong (a good photo not explained, a bad one without its clean
message), p50/p95 latency of each kind, and the server's resident memory before (after one
warm-up call per file), after each quarter of the calls, and at its peak.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import tempfile
from datetime import date
from pathlib import Path

from tests.loadgen import corpus_inputs, free_port, run_load, schedule


def main() -> int:
    """Run the load test against ``app.py``; print the record for docs/reliability.md."""
    import torch

    from benchmarks.bench_app import cpu_name, start_app

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per call")
    parser.add_argument("--budget", type=float, default=1800.0, help="seconds for the run")
    parser.add_argument("--threads", type=int, default=1, help="the app's torch threads")
    parser.add_argument("--json", default=None, help="also write the summary here")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as folder:
        good, bad = corpus_inputs(Path(folder))
        inputs = schedule(good, bad, args.requests)
        port = free_port()
        process = start_app(port, args.threads)
        try:
            url = f"http://127.0.0.1:{port}/"
            report = run_load(url, inputs, args.concurrency, process.pid, args.timeout, args.budget)
        finally:
            process.terminate()
            process.wait(timeout=30)
    summary = report.summary()
    print(
        f"Machine: {cpu_name()} ({os.cpu_count()} cores), torch {torch.__version__}, "
        f"{args.threads} torch thread(s) in the app; {date.today().isoformat()}."
    )
    print(f"Command: PYTHONPATH=. python benchmarks/load_app.py {shlex.join(sys.argv[1:])}")
    print(json.dumps(summary, indent=1))
    for line in report.problems()[:20]:
        print("problem:", line)
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=1) + "\n")
    return 1 if report.problems() else 0


if __name__ == "__main__":
    sys.exit(main())
