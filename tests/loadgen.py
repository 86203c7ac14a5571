"""Many /explain calls at once against a running app, good and bad files mixed.

Shared by the app's small load test (``tests/test_app.py``) and the full load test
(``benchmarks/load_app.py``): three calls in four send a photo that must be explained (the
bundled examples and the corpus files of ``tests/badcorpus.py`` that must be), one in four a
corpus file that must be refused. Every call has a time limit, and so has the run.
"""

from __future__ import annotations

import itertools
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError

from tests.badcorpus import CASES

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


@dataclass(frozen=True)
class Input:
    """One file to send, and the words its refusal must contain (None: it must be explained)."""

    path: Path
    refusal: str | None = None


@dataclass(frozen=True)
class Outcome:
    """One call: its input, its seconds, and what went wrong (None: as it should)."""

    input: Input
    seconds: float
    problem: str | None


@dataclass
class Report:
    """Every call of a run, its wall time and the server's memory."""

    outcomes: list[Outcome]
    seconds: float
    memory: dict[str, int] = field(default_factory=dict)

    def problems(self) -> list[str]:
        """What went wrong, one line per call."""
        return [f"{o.input.path.name}: {o.problem}" for o in self.outcomes if o.problem]

    def summary(self) -> dict[str, Any]:
        """Counts, errors and latency percentiles of the good and the bad calls, and memory."""
        result: dict[str, Any] = {"requests": len(self.outcomes), "seconds": self.seconds}
        for kind, good in (("good", True), ("bad", False)):
            chosen = [o for o in self.outcomes if (o.input.refusal is None) == good]
            times = [o.seconds for o in chosen]
            result[kind] = {
                "requests": len(chosen),
                "errors": sum(o.problem is not None for o in chosen),
                "p50_s": percentile(times, 50),
                "p95_s": percentile(times, 95),
            }
        return result | {"memory_mib": {k: v / 2**20 for k, v in self.memory.items()}}


def percentile(values: list[float], q: float) -> float:
    """The nearest-rank ``q``-th percentile (NaN for no values)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(q / 100 * len(ordered)) - 1))]


def memory(pid: int) -> dict[str, int]:
    """The process's resident memory now and at its peak, in bytes (Linux ``/proc``)."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in {"VmRSS", "VmHWM"}:
            fields[{"VmRSS": "rss", "VmHWM": "peak"}[key]] = int(value.split()[0]) * 1024
    return fields


def corpus_inputs(folder: Path) -> tuple[list[Input], list[Input]]:
    """The good and the bad files: the example photos and the corpus, written into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    good = [Input(p) for p in sorted(EXAMPLES.glob("*.jpg"))]
    bad = []
    for number, case in enumerate(CASES):
        path = folder / f"case{number:02d}{case.suffix}"
        path.write_bytes(case.make())
        if case.expected == "explained":
            good.append(Input(path))
        else:
            bad.append(Input(path, case.message))
    return good, bad


def schedule(good: list[Input], bad: list[Input], count: int) -> list[Input]:
    """``count`` inputs, every fourth one bad (if any are), each list cycled through in order."""
    goods, bads = itertools.cycle(good), itertools.cycle(bad)
    return [next(bads) if bad and i % 4 == 3 else next(goods) for i in range(count)]


def call(client: Any, item: Input, timeout: float) -> Outcome:
    """One /explain call with the app's defaults, judged against what ``item`` expects."""
    start = time.perf_counter()
    problem: str | None
    try:
        job = client.submit(
            handle_file(str(item.path)), "", "", "top-1", 0.5, "jet", api_name="/explain"
        )
        job.result(timeout=timeout)
        problem = None if item.refusal is None else "explained, but must be refused"
    except AppError as exc:
        message = str(exc)
        if item.refusal is None:
            problem = f"refused: {message}"
        elif item.refusal not in message or "Traceback" in message:
            problem = f"unclear refusal: {message}"
        else:
            problem = None
    except Exception as exc:  # noqa: BLE001 - any other failure is what the test reports
        problem = f"{type(exc).__name__}: {exc}"
    return Outcome(item, time.perf_counter() - start, problem)


def run_load(
    url: str,
    inputs: list[Input],
    concurrency: int,
    pid: int,
    timeout: float = 60.0,
    budget: float = 1800.0,
    warm_up: bool = True,
) -> Report:
    """Send every input at ``concurrency`` at once; calls not started within ``budget`` fail.

    ``warm_up``: one call per distinct file first, so that the memory "before" already holds
    what any call loads once (the backbone, the decoders and encoders of the pictures).
    """
    local = threading.local()

    def session() -> Any:
        if not hasattr(local, "client"):
            local.client = Client(url, verbose=False)
        return local.client

    for item in dict.fromkeys(inputs) if warm_up else ():
        call(session(), item, timeout)
    before = memory(pid)
    deadline = time.monotonic() + budget

    done = itertools.count(1)
    quarters = {max(1, len(inputs) * q // 4): f"rss_{25 * q}%" for q in (1, 2, 3)}
    samples: dict[str, int] = {}

    def send(item: Input) -> Outcome:
        if time.monotonic() > deadline:
            return Outcome(item, 0.0, "not sent: the run's time budget was spent")
        outcome = call(session(), item, timeout)
        name = quarters.get(next(done))
        if name:  # memory along the way: a leak grows steadily, a warm-up levels off
            samples[name] = memory(pid)["rss"]
        return outcome

    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        outcomes = list(pool.map(send, inputs))
    seconds = time.perf_counter() - start
    after = memory(pid)
    return Report(
        outcomes,
        seconds,
        {"before": before["rss"], **samples, "after": after["rss"], "peak": after["peak"]},
    )


def free_port() -> int:
    """A free loopback port."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
