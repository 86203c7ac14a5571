"""Inside ROAD's CPU solver: compile and load times, and where one ROAD's solve time goes.

    python benchmarks/bench_road_solver.py [--repeats 5]

Compilation: `cpu_solver.warm_up` in a fresh process with an empty Numba cache (cold), then again
in another fresh process with that cache (cached). Split: one full ROAD of scikit-image's
chelsea (224 x 224, a Gaussian-blob map, the 14 masks of `bench_road.py`) through
`cpu_solver.solve` as `noisy_linear_impute` calls it, against the same call with no iterations
allowed (the set-up: hierarchy, right-hand sides, first residual and preconditioner of each
channel, results); the iteration counts come from the solver itself.
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_road import cpu_name, masks_of, photo, saliency

from ttame.metrics.road import cpu_solver, torch_solver

WARM_UP = (
    "import time; from ttame.metrics.road.cpu_solver import warm_up; "
    "t = time.perf_counter(); warm_up(); print(time.perf_counter() - t)"
)


def warm_up_seconds(cache: str) -> float:
    """Seconds of `cpu_solver.warm_up` (after the imports) in a fresh process with this cache."""
    env = {**os.environ, "NUMBA_CACHE_DIR": cache}
    out = subprocess.run(
        [sys.executable, "-c", WARM_UP], env=env, check=True, capture_output=True, text=True
    )
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    """Print the machine, the compile and load times, then the split of one ROAD's solve."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="median of this many solves")
    args = parser.parse_args()
    print(f"- date: {datetime.date.today()}")
    print(
        f"- machine: {cpu_name()}, {os.cpu_count()} cores, load average "
        f"{os.getloadavg()[0]:.2f} at start"
    )
    print(f"- command: `python {' '.join(sys.argv)}`")
    print()
    with tempfile.TemporaryDirectory() as cache:
        cold, cached = warm_up_seconds(cache), warm_up_seconds(cache)
    print(f"Compiling (empty cache): {cold:.1f} s; loading from the cache: {cached:.2f} s")

    image = photo("chelsea", 224)
    removed = masks_of(saliency("blob", 224, 0))
    groups = torch_solver.pairs(removed[:, None])
    table = np.full((len(groups), 2), -1, dtype=np.int64)
    for k, group in enumerate(groups):
        table[k, : len(group)] = group
    values = image[None].expand(len(removed), -1, -1, -1).contiguous().numpy()
    masks = removed.numpy()
    cpu_solver.warm_up()

    def solve_seconds(max_iter: int) -> tuple[float, np.ndarray]:
        times, iterations = [], None
        for _ in range(args.repeats):
            start = time.perf_counter()
            iterations = cpu_solver.solve(values, masks, table, 1e-3, max_iter)[3]
            times.append(time.perf_counter() - start)
        return statistics.median(times), iterations

    full, iterations = solve_seconds(100)
    setup, _ = solve_seconds(0)
    total = int(iterations.sum())
    print(
        f"One ROAD ({len(removed)} imputations, {len(groups)} systems): solve "
        f"{full * 1e3:.1f} ms, of which set-up {setup * 1e3:.1f} ms and {total} CG iterations "
        f"{(full - setup) * 1e3:.1f} ms ({(full - setup) / total * 1e3:.2f} ms each); "
        f"iterations per system: colour channels {iterations[:, :-1].mean():.1f}, the "
        f"||A^-1||_inf solve {iterations[:, -1].mean():.1f}"
    )


if __name__ == "__main__":
    main()
