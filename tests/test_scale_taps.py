"""scripts/scale_taps.py: the earlier taps' part of every map scaled, the last tap's untouched."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import torch

from tests.helpers import tiny_explainer

ROOT = Path(__file__).resolve().parent.parent


def _load_script():
    path = ROOT / "scripts" / "scale_taps.py"
    spec = importlib.util.spec_from_file_location("scale_taps", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["scale_taps"] = module
    spec.loader.exec_module(module)
    return module


def test_the_finer_taps_part_of_the_map_scales_linearly(tmp_path):
    script = _load_script()
    explainer = tiny_explainer(seed=5)
    head = explainer.head
    assert len(head.in_channels) > 1
    image = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        maps = explainer.backbone.forward_features(image)[1]
        before = head(maps)
    folder = explainer.save_pretrained(tmp_path / "head")
    with torch.no_grad():
        scaled = {f: script.scale_earlier_taps(script.read_head(folder), f)(maps) for f in (0, 2)}
    torch.testing.assert_close(scaled[2] - before, before - scaled[0], atol=1e-5, rtol=1e-4)
    assert (scaled[2] - before).abs().max() > 1e-3  # the earlier taps do contribute
    last = head.in_channels[-1]
    untouched = script.read_head(folder).fuser.weight[:, -last:]
    zeroed = script.scale_earlier_taps(script.read_head(folder), 0).fuser.weight
    assert torch.equal(zeroed[:, -last:], untouched) and not zeroed[:, :-last].any()
