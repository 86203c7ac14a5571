"""Speed of ROAD's noisy linear imputation: ours against pytorch-grad-cam's NoisyLinearImputer.

    python benchmarks/bench_road.py [--device cpu|cuda] [--threads N] [--repeats 3]

One full ROAD of one image is 14 imputations (MoRF and LeRF, fractions 0.1 ... 0.9): ours in
one batched call, the reference one sparse solve per mask on the CPU; the two alternate image by
image so that machine noise hits both alike. Only the imputation is timed, not the classifier.
Accuracy: the max abs difference between the two fills without noise (ours certifies 1e-3).
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from pytorch_grad_cam.metrics.road import NoisyLinearImputer
from skimage import data, transform

from ttame.metrics.road import noisy_linear_impute, removal_masks

FRACTIONS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.7, 0.9)
PHOTOS = {"astronaut": data.astronaut, "coffee": data.coffee, "chelsea": data.chelsea}


def cpu_name() -> str:
    """The processor's model name, for the record."""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def photo(name: str, size: int) -> torch.Tensor:
    """A scikit-image photo as 3 x size x size in [0, 1]."""
    image = transform.resize(PHOTOS[name](), (size, size), anti_aliasing=True)
    return torch.from_numpy(image).permute(2, 0, 1).float().contiguous()


def saliency(kind: str, size: int, seed: int) -> torch.Tensor:
    """A smooth map like a real one: one Gaussian blob, or a 7x7 random map upsampled."""
    g = torch.Generator().manual_seed(seed)
    if kind == "blob":
        cy, cx = (0.25 + 0.5 * torch.rand(2, generator=g)) * size
        yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
        return torch.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * (0.15 * size) ** 2))
    coarse = torch.rand(1, 1, 7, 7, generator=g)
    return F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False)[0, 0]


def masks_of(saliency_map: torch.Tensor) -> torch.Tensor:
    """The 14 removal masks of a full ROAD (MoRF then LeRF), 14 x H x W."""
    g = torch.Generator().manual_seed(0)
    return torch.cat(
        [removal_masks(saliency_map[None], FRACTIONS, order, g)[:, 0] for order in ("MoRF", "LeRF")]
    )


def ours(image: torch.Tensor, removed: torch.Tensor, device: str, noise: float) -> torch.Tensor:
    """All 14 imputations in one call on the device; returned on the CPU."""
    images = image[None].expand(len(removed), -1, -1, -1).to(device)
    g = torch.Generator(device=device).manual_seed(0)
    out = noisy_linear_impute(images, removed.to(device), noise=noise, generator=g)
    return out.cpu()


def reference(image: torch.Tensor, removed: torch.Tensor, noise: float) -> torch.Tensor:
    """The 14 imputations by pytorch-grad-cam, one image and mask at a time (its mask: 1 = kept)."""
    imputer = NoisyLinearImputer(noise=noise)
    return torch.stack([imputer(image, (~mask).float()) for mask in removed])


def timed(fn, *args) -> float:
    """Seconds of one call, synchronising the GPU."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn(*args)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    """Print the machine, then one markdown row per photo and map, then the overall ratio."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--threads",
        type=int,
        default=torch.get_num_threads(),
        help="torch CPU threads (on the CPU ours imputes on one thread whatever "
        "this is, as the reference's SciPy solve does)",
    )
    parser.add_argument("--repeats", type=int, default=3, help="median of this many runs")
    parser.add_argument("--size", type=int, default=224)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    print(f"- date: {datetime.date.today()}")
    print(
        f"- machine: {cpu_name()}, {os.cpu_count()} cores, load average "
        f"{os.getloadavg()[0]:.2f} at start; torch {torch.__version__}, "
        f"torch threads set to {args.threads}; ours on {args.device}"
    )
    print(f"- command: `python {' '.join(sys.argv)}`")
    print()
    print("| photo | map | ours (ms) | reference (ms) | speed-up | max abs diff (noise off) |")
    print("|---|---|---:|---:|---:|---:|")
    ours(photo("chelsea", args.size), masks_of(saliency("blob", args.size, 0)), args.device, 0.01)
    totals = [0.0, 0.0]
    for seed, name in enumerate(PHOTOS):
        image = photo(name, args.size)
        for kind in ("blob", "upsampled"):
            removed = masks_of(saliency(kind, args.size, seed))
            times = [], []
            for _ in range(args.repeats):
                times[0].append(timed(ours, image, removed, args.device, 0.01))
                times[1].append(timed(reference, image, removed, 0.01))
            ours_s, ref_s = (statistics.median(t) for t in times)
            diff = ours(image, removed, args.device, 0.0) - reference(image, removed, 0.0)
            totals[0] += ours_s
            totals[1] += ref_s
            print(
                f"| {name} | {kind} | {ours_s * 1e3:.0f} | {ref_s * 1e3:.0f} | "
                f"{ref_s / ours_s:.1f}x | {diff.abs().max().item():.1e} |",
                flush=True,
            )
    print()
    print(
        f"Overall: reference {totals[1]:.2f} s, ours {totals[0]:.2f} s for "
        f"{2 * len(PHOTOS)} full ROADs; speed-up {totals[1] / totals[0]:.1f}x "
        f"(load average {os.getloadavg()[0]:.2f} at the end)."
    )


if __name__ == "__main__":
    main()
