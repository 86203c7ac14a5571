"""The paper's explainers from a backbone's name alone, through a loopback Hub and the real client.

The loopback Hub (:class:`tests.test_hub.FakeHub`) serves checkpoints laid out as the authors'
are: a PyTorch Lightning checkpoint whose ``generic.body.`` is the state of a torchvision
``create_feature_extractor`` graph (so the tensor names are the graph's own) and whose head is
under ``generic.attn_mech.`` (``generic.attn_mech.1.`` for the ViT, after its adapter). ResNet-50
is the real architecture with random weights; the VGG and ViT layouts use tiny stand-ins of the
same shape (torchvision's own ``VisionTransformer`` class for the ViT).
"""

from __future__ import annotations

import io
import json
import threading
import time
from pathlib import Path

import pytest
import torch
from torch import nn
from torchvision.models import VisionTransformer
from torchvision.models.feature_extraction import create_feature_extractor

from tests.test_hub import (
    CNN_PREFIX,
    EXAMPLE,
    VIT_PREFIX,
    FakeHub,
    _HubHandler,
    fake_hub,  # noqa: F401 - a fixture, used by hub
    go_offline,
    reference_head,
    reference_maps,
)
from ttame.cli import main
from ttame.errors import HeadError
from ttame.explainer import Explainer
from ttame.hub import cache, known
from ttame.hub.convert import convert_checkpoint
from ttame.hub.known import AUTHORS_REPO, KNOWN_HEADS, KnownHead
from ttame.model import registry
from ttame.model.backbones import BackboneSpec, build_classifier
from ttame.model.registry import get_spec
from ttame.model.weights import WeightsSource

CLASSES = 10


class TinyVGG(nn.Module):
    """VGG's layout (``features.N``, ``avgpool``, ``classifier.N``), a few channels wide."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            *(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)),
            *(nn.Conv2d(4, 6, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)),
            *(nn.Conv2d(6, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)),
        )
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(), nn.Linear(8, CLASSES))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.avgpool(self.features(x)).flatten(1))


def tiny_torchvision_vit() -> nn.Module:
    return VisionTransformer(32, 8, 3, 2, 16, 32, num_classes=CLASSES)


def _no_download() -> dict:
    raise OSError("the model library's download was asked for")


def _spec(name: str, build, taps: tuple[str, ...], kind: str, prefix_tokens: int) -> BackboneSpec:
    return BackboneSpec(
        name=name,
        build=build,
        taps=taps,
        kind=kind,  # type: ignore[arg-type]
        categories=lambda: [f"thing {i}" for i in range(CLASSES)],
        weights=WeightsSource(download=_no_download),
        input_size=32,
        resize_size=36,
        num_prefix_tokens=prefix_tokens,
    )


VIT_TAPS = tuple(f"encoder.layers.encoder_layer_{i}.ln_1" for i in range(3))
TINY = {
    "tiny_vgg": _spec("tiny_vgg", TinyVGG, ("features.2", "features.5", "features.8"), "cnn", 0),
    "tiny_tvvit": _spec("tiny_tvvit", tiny_torchvision_vit, VIT_TAPS, "vit", 1),
}
TINY_OUTPUT = {"tiny_vgg": "classifier.1", "tiny_tvvit": "heads.head"}


def authors_source(backbone: str) -> str:
    return f"hf://{AUTHORS_REPO}/checkpoints/{backbone}_TTAME.ckpt"


def graph_nodes(backbone: str) -> list[str]:
    """The authors' names of the taps: nodes of torchvision's feature-extractor graph.

    In torchvision's ViT graph ``ln_1``'s output is the node ``ln`` (``ln_1`` is ``ln_2``'s).
    """
    taps = list(get_spec(backbone).taps)
    return [t.replace(".ln_1", ".ln") for t in taps] if backbone == "tiny_tvvit" else taps


def authors_checkpoint(
    backbone: str, output: str, seed: int = 0, classes: int = 1000, version: str = "TAME"
) -> tuple[bytes, dict, dict]:
    """A checkpoint laid out like the authors': (its bytes, the body's state, the head's)."""
    spec = get_spec(backbone)
    torch.manual_seed(seed)
    model = build_classifier(spec, pretrained=False)
    graph = create_feature_extractor(model, return_nodes=[*graph_nodes(backbone), output])
    body = {k: v.clone() for k, v in graph.state_dict().items()}
    prefix = VIT_PREFIX if spec.kind == "vit" else CNN_PREFIX
    head = reference_head(backbone, prefix, seed=seed + 1, classes=classes)
    hyper_parameters = {
        "model_name": backbone,
        "layers": graph_nodes(backbone),
        "attention_version": version,
        "train_method": "new",
    }
    buffer = io.BytesIO()
    state = {**{f"generic.body.{k}": v for k, v in body.items()}, **head}
    torch.save({"state_dict": state, "hyper_parameters": hyper_parameters, "epoch": 7}, buffer)
    return buffer.getvalue(), body, head


@pytest.fixture
def hub(fake_hub: FakeHub, monkeypatch: pytest.MonkeyPatch) -> FakeHub:  # noqa: F811
    """The loopback Hub with empty caches, the tiny stand-ins registered with known heads."""
    monkeypatch.delenv(cache.LIMIT_ENV, raising=False)
    for name, spec in TINY.items():
        monkeypatch.setitem(registry.REGISTRY, name, lambda spec=spec: spec)
        entry = KnownHead(name, authors_source(name), "academic-non-commercial", 1, "terms")
        monkeypatch.setitem(KNOWN_HEADS, name, entry)
    return fake_hub


def publish(hub: FakeHub, backbone: str, data: bytes) -> str:
    filename = f"checkpoints/{backbone}_TTAME.ckpt"
    hub.publish(AUTHORS_REPO, {filename: data})
    return filename


def file_requests(hub: FakeHub, filename: str) -> list[str]:
    return [r for r in hub.requests if r.split("?")[0].endswith(filename)]


def class_maps(explainer: Explainer, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        logits, maps = explainer.backbone.forward_features(x)
        return logits, explainer.head(maps)


# --- The real ResNet-50 architecture, from the known-heads table alone ------------------------


@pytest.fixture(scope="module")
def resnet50_files() -> tuple[bytes, dict, dict]:
    return authors_checkpoint("resnet50", "fc")


@pytest.mark.integration
def test_explain_with_only_the_backbone_name(hub, resnet50_files, tmp_path, monkeypatch, capsys):
    data, body, head_state = resnet50_files
    filename = publish(hub, "resnet50", data)
    asked = []
    monkeypatch.setattr("ttame.model.backbones.tvm.get_weight", lambda name: asked.append(name))

    assert main(["explain", str(EXAMPLE), "--backbone", "resnet50", "--json"]) == 0
    out, err = capsys.readouterr()
    report = json.loads(out)
    assert report["head_source"] == KNOWN_HEADS["resnet50"].source == authors_source("resnet50")
    assert report["head_license"] == "academic-non-commercial"
    assert err.count("academic, non-commercial") == 1
    assert asked == []  # the backbone's weights came from the checkpoint, not torchvision
    assert [r.split()[0] for r in file_requests(hub, filename)] == ["HEAD", "GET"]

    seen = len(hub.requests)
    explainer = Explainer.from_pretrained(backbone="resnet50")
    assert len(hub.requests) == seen  # a second call makes no request
    loaded = explainer.backbone.model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in body.items())
    x = torch.rand(1, 3, 224, 224, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        _, maps = explainer.backbone.forward_features(x)
        want = reference_maps(head_state, CNN_PREFIX, maps)
        scale = float(want.abs().max())  # float32 sums over 3584 channels, in another order
        torch.testing.assert_close(explainer.head(maps), want, rtol=1e-4, atol=1e-5 * scale)

    go_offline(hub, monkeypatch)
    assert main(["explain", str(EXAMPLE), "--backbone", "resnet50", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["class_index"] == report["class_index"]

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hf"))
    monkeypatch.setenv("TTAME_CACHE", str(tmp_path / "empty-ttame"))
    start = time.perf_counter()
    assert main(["explain", str(EXAMPLE), "--backbone", "resnet50"]) == 2
    assert time.perf_counter() - start < 5
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(
        f"error: '{filename}' of Hub repo '{AUTHORS_REPO}' is not in the local Hugging Face cache"
    )


# --- The VGG and ViT layouts (tiny stand-ins) ----------------------------------------------


def reference_forward(backbone: str, body: dict, head: dict, x: torch.Tensor, version: str):
    """The reference pipeline: the feature-extractor graph, their ViT adapter, their head.

    Their adapter (``PreprocessSeq`` in src/tame/attention/factory.py) drops the class token for
    version ``TAME``; for ``TTAME`` it keeps each tap's class token, lays the patches on the
    grid, then multiplies them by it. CNN maps pass through no adapter.
    """
    spec = get_spec(backbone)
    model = spec.build()
    graph = create_feature_extractor(
        model, return_nodes=[*graph_nodes(backbone), TINY_OUTPUT[backbone]]
    )
    graph.load_state_dict(body)
    graph.eval()
    normalise = (x - torch.tensor(spec.mean).view(1, 3, 1, 1)) / torch.tensor(spec.std).view(
        1, 3, 1, 1
    )
    with torch.no_grad():
        features = graph(normalise)
    logits = features.pop(TINY_OUTPUT[backbone])
    maps = list(features.values())
    if spec.kind == "vit":
        side = int((maps[0].shape[1] - 1) ** 0.5)
        class_tokens = [m[:, 0, :] for m in maps]
        maps = [m[:, 1:, :].reshape(m.shape[0], side, side, m.shape[2]) for m in maps]
        maps = [m.transpose(2, 3).transpose(1, 2) for m in maps]
        if version == "TTAME":
            maps = [m * c[:, :, None, None] for m, c in zip(maps, class_tokens, strict=True)]
    prefix = VIT_PREFIX if spec.kind == "vit" else CNN_PREFIX
    return logits, reference_maps(head, prefix, maps)


@pytest.mark.integration
@pytest.mark.parametrize("version", ["TAME", "TTAME"])
@pytest.mark.parametrize("backbone", ["tiny_vgg", "tiny_tvvit"])
def test_converted_heads_give_the_reference_maps(hub, backbone, version):
    output = TINY_OUTPUT[backbone]
    data, body, head = authors_checkpoint(backbone, output, classes=CLASSES, version=version)
    publish(hub, backbone, data)

    explainer = Explainer.from_pretrained(backbone=backbone)

    assert explainer.head.layers == list(get_spec(backbone).taps)  # the graph's nodes' modules
    product = backbone == "tiny_tvvit" and version == "TTAME"
    assert explainer.head.tokens == ("patches_times_class" if product else "patches")
    assert explainer.provenance is not None
    assert explainer.provenance.source == authors_source(backbone)
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    logits, maps = class_maps(explainer, x)
    want_logits, want_maps = reference_forward(backbone, body, head, x, version)
    torch.testing.assert_close(logits, want_logits)
    torch.testing.assert_close(maps, want_maps)
    other = reference_forward(backbone, body, head, x, "TTAME" if version == "TAME" else "TAME")
    assert torch.allclose(maps, other[1]) == (backbone == "tiny_vgg")  # the ViT's adapters differ


@pytest.mark.integration
def test_two_first_requests_download_once(hub):
    data, _, _ = authors_checkpoint("tiny_vgg", "classifier.1", classes=CLASSES)
    filename = publish(hub, "tiny_vgg", data)

    class SlowHandler(_HubHandler):
        def do_GET(self) -> None:
            time.sleep(0.3)
            super().do_GET()

    hub.RequestHandlerClass = SlowHandler
    results: list[object] = []
    threads = [
        threading.Thread(target=lambda: results.append(Explainer.from_pretrained("tiny_vgg")))
        for _ in range(2)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 2 and all(isinstance(r, Explainer) for r in results)
    assert [r.split()[0] for r in file_requests(hub, filename)] == ["HEAD", "GET"]


@pytest.mark.integration
def test_truncated_and_renamed_checkpoints_are_clear_errors(hub):
    data, _, _ = authors_checkpoint("tiny_vgg", "classifier.1", classes=CLASSES)
    publish(hub, "tiny_vgg", data[: len(data) // 2])
    with pytest.raises(HeadError, match=r"Could not read .*tiny_vgg_TTAME\.ckpt") as caught:
        Explainer.from_pretrained(backbone="tiny_vgg")
    assert "\n" not in str(caught.value)

    buffer = io.BytesIO(data)
    checkpoint = torch.load(buffer, weights_only=True)
    state = checkpoint["state_dict"]
    for key in [k for k in state if k.startswith(CNN_PREFIX + "convs.")]:
        state[key.replace(".convs.", ".conv.")] = state.pop(key)
    renamed = io.BytesIO()
    torch.save(checkpoint, renamed)
    publish(hub, "tiny_tvvit", renamed.getvalue())  # published under another name, fresh
    with pytest.raises(HeadError, match="No T-TAME attention head"):
        Explainer.from_pretrained(backbone="tiny_tvvit")


@pytest.mark.integration
def test_a_backbone_in_the_file_that_does_not_fit_is_said_not_used(hub, tmp_path):
    """(``hub`` registers the tiny stand-in backbones.)"""
    data, _, _ = authors_checkpoint("tiny_vgg", "classifier.1", classes=CLASSES)
    checkpoint = torch.load(io.BytesIO(data), weights_only=True)
    state = checkpoint["state_dict"]
    for key in [k for k in state if k.startswith("generic.body.features.0.")]:
        state[key.replace("features.0.", "features.first.")] = state.pop(key)
    path = tmp_path / "renamed_body.ckpt"
    torch.save(checkpoint, path)
    _, report = convert_checkpoint(path, backbone="tiny_vgg")
    assert report.backbone_prefix is None
    assert any("generic.body" in note and "not used" in note for note in report.notes)
    torch.save(torch.load(io.BytesIO(data), weights_only=True), path)
    _, whole = convert_checkpoint(path, backbone="tiny_vgg")
    assert whole.backbone_prefix == "generic.body." and not any(
        "not used" in n for n in whole.notes
    )


# --- The cache's size limit ----------------------------------------------------------------


@pytest.mark.parametrize(
    "text, size",
    [("5GB", 5 * 10**9), ("500 MiB", 500 * 2**20), ("2g", 2 * 10**9), ("1234", 1234)],
)
def test_sizes_parse(text, size):
    assert cache.parse_size(text) == size


def test_the_limit_comes_from_the_argument_then_the_environment(monkeypatch):
    monkeypatch.delenv(cache.LIMIT_ENV, raising=False)
    assert cache.cache_limit() == cache.DEFAULT_LIMIT
    monkeypatch.setenv(cache.LIMIT_ENV, "2MB")
    assert cache.cache_limit() == 2 * 10**6
    assert cache.cache_limit("1KiB") == 1024
    with pytest.raises(HeadError, match="is not a size"):
        cache.cache_limit("lots")


@pytest.mark.integration
def test_the_cache_limit_evicts_the_least_recently_used(hub, tmp_path, monkeypatch):
    files = {}
    for backbone in ("tiny_vgg", "tiny_tvvit"):
        data, _, _ = authors_checkpoint(backbone, TINY_OUTPUT[backbone], classes=CLASSES)
        files[backbone] = publish(hub, backbone, data)
    first = Explainer.from_pretrained("tiny_tvvit")  # the larger files first
    folders = list((tmp_path / "ttame" / "heads").iterdir())
    blobs = list((tmp_path / "hf").rglob("blobs/*"))
    assert len(folders) == 1 and len(blobs) == 1
    used = sum(cache.disk_size(p) for p in [*folders, *blobs])
    monkeypatch.setenv(cache.LIMIT_ENV, str(used + 1000))  # room for one backbone's files

    Explainer.from_pretrained("tiny_vgg")

    assert not blobs[0].exists()  # the least recently used went first, until the rest fit
    index = json.loads((tmp_path / "ttame" / cache.INDEX_FILE).read_text())
    assert not any(k.endswith("tiny_tvvit_TTAME.ckpt") for k in index)
    assert all(Path(k).exists() for k in index)
    assert sum(v["size"] for v in index.values()) <= used + 1000
    assert len(index) == 3 and sum(k.endswith("tiny_vgg_TTAME.ckpt") for k in index) == 1
    seen = len(file_requests(hub, files["tiny_tvvit"]))
    again = Explainer.from_pretrained("tiny_tvvit")  # fetched again, the same head
    assert len(file_requests(hub, files["tiny_tvvit"])) > seen
    assert torch.equal(again.head.fuser.weight, first.head.fuser.weight)


# --- The app's menu --------------------------------------------------------------------------


@pytest.mark.integration
def test_the_menu_offers_hub_heads_with_size_and_licence_or_says_they_need_the_network(
    hub, monkeypatch
):
    from ttame.app.state import backbone_choices

    labels = dict((v, k) for k, v in backbone_choices(["tiny_cnn", "tiny_vgg", "vgg16"], {}))
    assert labels["vgg16"] == "vgg16 (570 MB download, once; licence: academic-non-commercial)"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    labels = dict((v, k) for k, v in backbone_choices(["tiny_cnn", "vgg16"], {}))
    assert labels["vgg16"].startswith("vgg16 (needs the network: 570 MB download")
    monkeypatch.delenv("HF_HUB_OFFLINE")
    data, _, _ = authors_checkpoint("tiny_vgg", "classifier.1", classes=CLASSES)
    publish(hub, "tiny_vgg", data)
    Explainer.from_pretrained("tiny_vgg")
    go_offline(hub, monkeypatch)
    labels = dict((v, k) for k, v in backbone_choices(["tiny_cnn", "tiny_vgg"], {}))
    assert labels["tiny_vgg"] == "tiny_vgg (downloaded; licence: academic-non-commercial)"
    assert known.is_cached(KNOWN_HEADS["tiny_vgg"])


@pytest.mark.integration
def test_the_app_explains_compares_and_measures_with_a_hub_head(hub, tmp_path, monkeypatch):
    from ttame.app.callbacks import TTameApp
    from ttame.app.state import AppConfig
    from ttame.methods.registry import METHODS, MethodOptions

    data, _, _ = authors_checkpoint("tiny_vgg", "classifier.1", classes=CLASSES)
    publish(hub, "tiny_vgg", data)
    methods = {"gradcam": METHODS["gradcam"].factory}
    app = TTameApp(
        AppConfig(backbones=["tiny_vgg"], methods=methods, method_options=MethodOptions())
    )
    where = f"Head: {authors_source('tiny_vgg')} · licence: academic-non-commercial"

    assert where in app.load("tiny_vgg", "").status
    explained = app.explain(str(EXAMPLE), "tiny_vgg", "", "", 0.5, "jet")
    assert where in explained.prediction and where in explained.status
    assert (
        where in app.compare(str(EXAMPLE), "tiny_vgg", "", "", "gradcam", 0.5, "jet", None).timings
    )
    assert where in app.adic(str(EXAMPLE), "tiny_vgg", "", "", "gradcam").summary

    go_offline(hub, monkeypatch)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty"))
    offline = TTameApp(AppConfig(backbones=["tiny_cnn", "tiny_vgg"]))
    assert "needs the network" in offline.menu[1][0]
    start = time.perf_counter()
    with pytest.raises(Exception, match="not in the local Hugging Face cache and HF_HUB_OFFLINE"):
        offline.load("tiny_vgg", "")
    assert time.perf_counter() - start < 1


@pytest.mark.integration
def test_a_repo_typed_in_the_app_fetches_head_files_only(hub, tmp_path):
    from tests.helpers import tiny_explainer
    from ttame.app.callbacks import TTameApp
    from ttame.app.state import AppConfig

    folder = tiny_explainer("tiny_cnn", seed=3).save_pretrained(tmp_path / "head")
    files = {p.name: p.read_bytes() for p in folder.iterdir()}
    hub.publish("someone/head", {**files, "weights/huge.bin": b"x" * 1000, "run.py": b"print()"})
    app = TTameApp(AppConfig(backbones=["tiny_cnn"], hub_backbones=["tiny_cnn"]))

    status = app.load("tiny_cnn", "someone/head").status
    assert "hf://someone/head" in status
    fetched = [r for r in hub.requests if "/resolve/" in r]
    assert fetched and not any("huge.bin" in r or "run.py" in r for r in fetched)
    assert all(r.startswith(("GET /someone/head/", "HEAD /someone/head/")) for r in fetched)


@pytest.mark.parametrize("backbone", ["vgg16", "resnet50", "vit_b_16"])
def test_preprocessing_matches_the_authors(backbone):
    """Their test transform: Resize(256), CenterCrop(224), ToTensor, ImageNet statistics."""
    from PIL import Image
    from torchvision import transforms

    from ttame.images import preprocess

    spec = get_spec(backbone)
    assert (spec.resize_size, spec.input_size) == (256, 224)
    assert spec.mean == (0.485, 0.456, 0.406) and spec.std == (0.229, 0.224, 0.225)
    photo = Image.open(EXAMPLE).convert("RGB")
    theirs = transforms.Compose(
        [transforms.Resize(256), transforms.CenterCrop(224), transforms.ToTensor()]
    )(photo)
    ours, _ = preprocess(photo, spec.input_size, spec.resize_size)
    assert ours.shape == theirs.shape == (3, 224, 224)
    assert float((ours - theirs).abs().mean()) < 2 / 255  # PIL's resampling, cropped first
