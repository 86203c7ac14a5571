"""Heads on the Hub, the reference checkpoints' import, model cards and fast offline failures.

The Hub is a loopback HTTP server speaking the part of the Hub's file protocol that
huggingface_hub uses to download (``HF_ENDPOINT`` points at it), so downloads, the cache they
fill and offline resolution from that cache (``HF_HUB_OFFLINE=1``) all run for real.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import threading
import time
import types
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from huggingface_hub import ModelCard
from safetensors.torch import save as safetensors_bytes

from tests.helpers import tiny_explainer
from ttame.cli import main
from ttame.errors import HeadError, WeightsUnavailableError
from ttame.evaluation.run import head_provenance
from ttame.explainer import Explainer
from ttame.hub import client, convert
from ttame.hub.client import HubRef
from ttame.hub.convert import convert_checkpoint
from ttame.hub.load import load_head, open_head
from ttame.model.registry import get_spec
from ttame.model.taps import probe_spec
from ttame.model.weights import resolve_state_dict

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "chelsea.jpg"
CNN_PREFIX = "generic.attn_mech."
VIT_PREFIX = "generic.attn_mech.1."


# --- A loopback Hub ------------------------------------------------------------------------


class FakeHub(ThreadingHTTPServer):
    """Serves ``repos[repo_id][path] = bytes`` at one commit, as the Hub's file endpoints do."""

    commit = "c0ffee" + "0" * 34

    def __init__(self) -> None:
        self.repos: dict[str, dict[str, bytes]] = {}
        self.requests: list[str] = []
        super().__init__(("127.0.0.1", 0), _HubHandler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def publish(self, repo_id: str, files: dict[str, bytes]) -> None:
        self.repos.setdefault(repo_id, {}).update(files)


class _HubHandler(BaseHTTPRequestHandler):
    server: FakeHub

    def log_message(self, *_args: object) -> None:
        pass

    def _file(self) -> bytes | None:
        parts = self.path.split("?")[0].lstrip("/").split("/")
        if len(parts) >= 5 and parts[2] == "resolve":
            return self.server.repos.get("/".join(parts[:2]), {}).get("/".join(parts[4:]))
        return None

    def _reply(self, body: bytes | None, send_body: bool, kind: str = "") -> None:
        self.server.requests.append(f"{self.command} {self.path}")
        if body is None:
            self.send_response(404)
            self.send_header("X-Error-Code", "EntryNotFound" if kind else "RepoNotFound")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("X-Repo-Commit", self.server.commit)
        self.send_header("ETag", f'"{hashlib.sha256(body).hexdigest()}"')
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if send_body:
            self.wfile.write(body)

    def do_HEAD(self) -> None:
        self._reply(self._file(), send_body=False, kind="file")

    def do_GET(self) -> None:
        if not self.path.startswith("/api/models/"):
            self._reply(self._file(), send_body=True, kind="file")
            return
        parts = self.path.split("?")[0].split("/")
        files = self.server.repos.get("/".join(parts[3:5]))
        if files is None:
            self._reply(None, send_body=True)
        elif "/tree/" in self.path:
            entries = [
                {"type": "file", "path": n, "size": len(d), "oid": hashlib.sha1(d).hexdigest()}
                for n, d in files.items()
            ]
            self._reply(json.dumps(entries).encode(), send_body=True)
        else:
            info = {"id": parts[3] + "/" + parts[4], "sha": self.server.commit}
            info["siblings"] = [{"rfilename": n} for n in files]
            self._reply(json.dumps(info).encode(), send_body=True)


@pytest.fixture
def fake_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    """A running loopback Hub, with empty Hugging Face and ttame caches under ``tmp_path``."""
    server = FakeHub()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("TTAME_CACHE", str(tmp_path / "ttame"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    yield server
    server.shutdown()
    server.server_close()


def go_offline(server: FakeHub, monkeypatch: pytest.MonkeyPatch) -> None:
    """Stop the Hub and switch Hugging Face offline mode on: only the caches remain."""
    server.shutdown()
    server.server_close()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


# --- Checkpoints in the reference implementation's layout -----------------------------------


def reference_head(backbone: str, prefix: str, seed: int = 0, classes: int = 1000) -> dict:
    """Random trained-looking tensors named as the reference head names them."""
    generator = torch.Generator().manual_seed(seed)
    channels = probe_spec(get_spec(backbone)).channels

    def rand(*shape: int, scale: float = 0.1) -> torch.Tensor:
        return torch.randn(*shape, generator=generator) * scale

    state = {}
    for i, c in enumerate(channels):
        state[f"{prefix}convs.{i}.weight"] = rand(c, c, 1, 1, scale=0.05)
        state[f"{prefix}convs.{i}.bias"] = rand(c)
        state[f"{prefix}bns.{i}.weight"] = 1 + rand(c)
        state[f"{prefix}bns.{i}.bias"] = rand(c)
        state[f"{prefix}bns.{i}.running_mean"] = rand(c)
        state[f"{prefix}bns.{i}.running_var"] = 0.5 + torch.rand(c, generator=generator)
        state[f"{prefix}bns.{i}.num_batches_tracked"] = torch.tensor(1000)
    state[f"{prefix}fuser.weight"] = rand(classes, sum(channels), 1, 1, scale=0.02)
    state[f"{prefix}fuser.bias"] = rand(classes)
    return state


def reference_maps(state: dict, prefix: str, maps: list[torch.Tensor]) -> torch.Tensor:
    """The reference head's forward, written from its description: the class maps ``c``."""
    side = min(int(maps[0].shape[2]), 56)
    outs = []
    for i, x in enumerate(maps):
        y = F.conv2d(x, state[f"{prefix}convs.{i}.weight"], state[f"{prefix}convs.{i}.bias"])
        y = F.batch_norm(
            y,
            state[f"{prefix}bns.{i}.running_mean"],
            state[f"{prefix}bns.{i}.running_var"],
            state[f"{prefix}bns.{i}.weight"],
            state[f"{prefix}bns.{i}.bias"],
        )
        y = F.relu(y + x)
        outs.append(F.interpolate(y, size=(side, side), mode="bilinear", align_corners=False))
    fused = torch.cat(outs, 1)
    return F.conv2d(fused, state[f"{prefix}fuser.weight"], state[f"{prefix}fuser.bias"])


def lightning_checkpoint(head_state: dict, hyper_parameters: object | None = None) -> dict:
    """A Lightning-style checkpoint: the head beside the backbone, optimizer and loop states."""
    state = {
        "generic.body.features.0.weight": torch.zeros(64, 3, 3, 3),
        "generic.body.features.0.bias": torch.zeros(64),
        "generic.body.classifier.6.weight": torch.zeros(1000, 4096),
        **head_state,
    }
    checkpoint = {
        "epoch": 7,
        "global_step": 40000,
        "pytorch-lightning_version": "2.1.0",
        "state_dict": state,
        "optimizer_states": [{"state": {}, "param_groups": [{"lr": 1e-3, "params": [0, 1]}]}],
        "lr_schedulers": [{"last_epoch": 40000, "_step_count": 40001}],
        "loops": {"fit_loop": {"epoch_progress": {"total": {"completed": 7}}}},
    }
    if hyper_parameters is not None:
        checkpoint["hyper_parameters"] = hyper_parameters
    return checkpoint


def paper_maps(backbone: str, seed: int = 1) -> list[torch.Tensor]:
    sizes = {"vgg16": (28, 14, 7), "resnet50": (28, 14, 7), "vit_b_16": (14, 14, 14)}[backbone]
    channels = probe_spec(get_spec(backbone)).channels
    generator = torch.Generator().manual_seed(seed)
    pairs = zip(channels, sizes, strict=True)
    return [torch.rand(1, c, s, s, generator=generator) for c, s in pairs]


# --- Import of reference checkpoints -------------------------------------------------------


@pytest.mark.slow
def test_cnn_checkpoint_converts_to_the_same_maps(tmp_path):
    state = reference_head("vgg16", CNN_PREFIX)
    hparams = {"model_name": "vgg16", "layers": ["features.16", "features.23", "features.30"]}
    torch.save(lightning_checkpoint(state, hparams), tmp_path / "vgg16.ckpt")

    head, report = convert_checkpoint(tmp_path / "vgg16.ckpt")  # backbone from hyper-parameters

    assert (head.backbone, head.layers) == ("vgg16", ["features.16", "features.23", "features.30"])
    assert head.in_channels == [256, 512, 512] and head.num_classes == 1000
    maps = paper_maps("vgg16")
    with torch.no_grad():
        torch.testing.assert_close(head(maps), reference_maps(state, CNN_PREFIX, maps))
    assert report.prefix == CNN_PREFIX and report.converted == len(state)
    assert report.ignored_tensors == {"generic.body": 3}
    for entry in ("optimizer_states", "lr_schedulers", "hyper_parameters", "loops", "epoch"):
        assert entry in report.ignored_entries
    assert "generic.body.* (3)" in report.summary()


def other_notes(report) -> list[str]:
    """The report's notes but the one saying the file's few stand-in body tensors are unused."""
    body = [n for n in report.notes if n.startswith("Its 3 tensors under 'generic.body'")]
    assert len(body) == 1  # lightning_checkpoint's three stand-in tensors are not a backbone
    return [n for n in report.notes if n not in body]


@pytest.mark.slow
def test_vit_checkpoint_prefix_and_backbone_from_channels(tmp_path):
    state = reference_head("vit_b_16", VIT_PREFIX, seed=3)
    torch.save(lightning_checkpoint(state), tmp_path / "vit.ckpt")

    head, report = convert_checkpoint(tmp_path / "vit.ckpt")  # no hyper-parameters at all

    assert head.backbone == "vit_b_16" and report.prefix == VIT_PREFIX
    assert not other_notes(report)
    assert head.layers == list(get_spec("vit_b_16").taps)
    maps = paper_maps("vit_b_16")
    with torch.no_grad():
        torch.testing.assert_close(head(maps), reference_maps(state, VIT_PREFIX, maps))


def test_lightning_hyper_parameter_dict_is_read_as_data(tmp_path, monkeypatch):
    class AttributeDict(dict):
        def __setattr__(self, key: str, value: object) -> None:
            self[key] = value

    names = ["lightning", "lightning.fabric", "lightning.fabric.utilities"]
    for name in [*names, "lightning.fabric.utilities.data"]:
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    AttributeDict.__module__ = "lightning.fabric.utilities.data"
    AttributeDict.__qualname__ = "AttributeDict"
    sys.modules["lightning.fabric.utilities.data"].AttributeDict = AttributeDict
    hparams = AttributeDict(
        model_name="ResNet50", layers=["layer2", "layer3", "layer4"], attention_version="TTAME"
    )
    state = reference_head("resnet50", CNN_PREFIX, seed=5)
    torch.save(lightning_checkpoint(state, hparams), tmp_path / "r50.ckpt")
    for name in [*names, "lightning.fabric.utilities.data"]:
        monkeypatch.delitem(sys.modules, name)  # Lightning is not needed to read it

    head, report = convert_checkpoint(tmp_path / "r50.ckpt")
    assert head.backbone == "resnet50" and head.in_channels == [512, 1024, 2048]
    assert other_notes(report) == []  # for CNNs their TTAME and TAME heads are the same computation

    assert head.tokens == "patches"

    vit = reference_head("vit_b_16", VIT_PREFIX, seed=5)
    for version, tokens, noted in [
        ("TTAME", "patches_times_class", False),  # their ViT adapter's product, computed here
        ("TAME", "patches", False),
        ("3D-TAME", "patches", True),
    ]:
        torch.save(lightning_checkpoint(vit, {"attention_version": version}), tmp_path / "v.ckpt")
        head, report = convert_checkpoint(tmp_path / "v.ckpt")
        assert head.tokens == tokens
        assert any(f"attention_version '{version}'" in note for note in report.notes) == noted


def test_import_checkpoint_cli_writes_a_loadable_head_with_its_card(tmp_path, capsys):
    state = reference_head("vgg16", CNN_PREFIX, seed=7)
    torch.save(lightning_checkpoint(state), tmp_path / "tame.ckpt")
    out = tmp_path / "head"

    code = main(
        ["import-checkpoint", str(tmp_path / "tame.ckpt"), "--backbone", "vgg16", "--out", str(out)]
    )

    printed = capsys.readouterr().out
    assert code == 0
    assert "Ignored tensors: generic.body.* (3)" in printed and "optimizer_states" in printed
    assert sorted(p.name for p in out.iterdir()) == sorted(client.HEAD_FILES)
    loaded = load_head(out)
    expected, _ = convert_checkpoint(tmp_path / "tame.ckpt", "vgg16")
    for key, value in expected.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value)
    card = ModelCard.load(out / "README.md")
    assert card.data.license == "other" and card.data.library_name == "ttame"
    assert "academic, non-commercial" in card.text and "`features.23`" in card.text


def test_a_local_checkpoint_is_a_head_source(tmp_path):
    state = reference_head("resnet50", CNN_PREFIX, seed=9)
    torch.save(lightning_checkpoint(state), tmp_path / "r50.ckpt")
    opened = open_head(tmp_path / "r50.ckpt", backbone="resnet50")
    assert opened.head.backbone == "resnet50" and not opened.head.training
    assert opened.provenance.weights == tmp_path / "r50.ckpt"


def test_shape_mismatch_is_a_clear_head_error(tmp_path):
    torch.save(lightning_checkpoint(reference_head("resnet50", CNN_PREFIX)), tmp_path / "r.ckpt")
    fit = r"does not fit backbone 'vgg16'.*branches\.0\.conv\.weight"
    with pytest.raises(HeadError, match=fit):
        convert_checkpoint(tmp_path / "r.ckpt", backbone="vgg16")

    few_classes = reference_head("vgg16", CNN_PREFIX, classes=10)
    torch.save(lightning_checkpoint(few_classes), tmp_path / "k.ckpt")
    with pytest.raises(HeadError, match="10 classes, the backbone has 1000"):
        convert_checkpoint(tmp_path / "k.ckpt", backbone="vgg16")


def test_files_that_are_not_reference_heads_are_refused(tmp_path):
    state = reference_head("vgg16", CNN_PREFIX)
    state[f"{CNN_PREFIX}gate.weight"] = torch.zeros(3)
    torch.save(lightning_checkpoint(state), tmp_path / "extra.ckpt")
    with pytest.raises(HeadError, match="Unrecognised tensors under the head prefix"):
        convert_checkpoint(tmp_path / "extra.ckpt")

    torch.save({"state_dict": {"features.0.weight": torch.zeros(2)}}, tmp_path / "plain.ckpt")
    with pytest.raises(HeadError, match="No T-TAME attention head"):
        convert_checkpoint(tmp_path / "plain.ckpt")

    incomplete = {k: v for k, v in reference_head("vgg16", CNN_PREFIX).items() if "fuser" not in k}
    torch.save({"state_dict": incomplete}, tmp_path / "incomplete.ckpt")
    with pytest.raises(HeadError, match="incomplete"):
        convert_checkpoint(tmp_path / "incomplete.ckpt", backbone="vgg16")


class _Payload:
    """An object whose unpickling would run a shell command."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (os.system, (f"touch {self.marker}",))


def test_a_checkpoint_with_arbitrary_objects_is_refused_unrun(tmp_path, capsys):
    marker = tmp_path / "ran"
    checkpoint = lightning_checkpoint(reference_head("vgg16", CNN_PREFIX))
    checkpoint["callbacks"] = {"Evil": _Payload(marker)}
    torch.save(checkpoint, tmp_path / "evil.ckpt")

    with pytest.raises(HeadError, match=r"pickled objects are refused") as caught:
        convert_checkpoint(tmp_path / "evil.ckpt", backbone="vgg16")
    assert "system" in str(caught.value)  # names the object it refused
    code = main(["import-checkpoint", str(tmp_path / "evil.ckpt"), "--out", str(tmp_path / "o")])
    assert code == 2 and "pickled objects are refused" in capsys.readouterr().err
    assert not marker.exists() and not (tmp_path / "o").exists()


# --- Heads on the Hub ----------------------------------------------------------------------


def folder_files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


@pytest.mark.integration
def test_a_head_published_on_the_hub_resolves_by_repo_id_then_offline(
    fake_hub, tmp_path, monkeypatch
):
    source = tiny_explainer("tiny_cnn", seed=4)
    source.save_pretrained(tmp_path / "published", training_data="tiny photos")
    fake_hub.publish("owner/tiny-head", folder_files(tmp_path / "published"))
    image = torch.rand(2, 3, 32, 32)
    expected = source.explain(image).maps

    explainer = Explainer.from_pretrained("owner/tiny-head")
    assert any("/owner/tiny-head/resolve/" in r for r in fake_hub.requests)
    torch.testing.assert_close(explainer.explain(image).maps, expected)

    go_offline(fake_hub, monkeypatch)
    start = time.perf_counter()
    for reference in ("owner/tiny-head", "hf://owner/tiny-head", "hf://owner/tiny-head@main"):
        again = Explainer.from_pretrained(reference)
        torch.testing.assert_close(again.explain(image).maps, expected)
    assert time.perf_counter() - start < 10
    folder = client.hub_folder("owner/tiny-head")
    assert folder.is_relative_to(tmp_path / "hf") and (folder / "README.md").is_file()
    report = head_provenance(again)
    digest = hashlib.sha256((tmp_path / "published" / "model.safetensors").read_bytes())
    assert report == {"head": "hf://owner/tiny-head@main", "head_sha256": digest.hexdigest()}


@pytest.mark.integration
def test_head_files_too_large_are_refused_before_the_download(fake_hub, tmp_path, monkeypatch):
    tiny_explainer("tiny_cnn").save_pretrained(tmp_path / "published")
    fake_hub.publish("owner/huge-head", folder_files(tmp_path / "published"))
    size = (tmp_path / "published" / "model.safetensors").stat().st_size
    monkeypatch.setattr(client, "MAX_HEAD_BYTES", size - 1)
    with pytest.raises(HeadError, match=r"holds model\.safetensors .* it was not downloaded"):
        load_head("owner/huge-head")
    assert not any("/resolve/" in r for r in fake_hub.requests)
    monkeypatch.setattr(client, "MAX_HEAD_BYTES", size)
    assert load_head("owner/huge-head").backbone == "tiny_cnn"


@pytest.mark.integration
def test_a_reference_checkpoint_on_the_hub_is_converted_once(
    fake_hub, tmp_path, monkeypatch, capsys
):
    state = reference_head("vgg16", CNN_PREFIX, seed=11)
    torch.save(lightning_checkpoint(state), tmp_path / "vgg16.ckpt")
    fake_hub.publish("authors/t-tame", {"heads/vgg16.ckpt": (tmp_path / "vgg16.ckpt").read_bytes()})
    reference = "hf://authors/t-tame/heads/vgg16.ckpt"

    head = load_head(reference)
    folder = convert.checkpoint_head(HubRef.parse(reference)).folder
    assert folder.is_relative_to(tmp_path / "ttame")
    card = (folder / "README.md").read_text()
    assert "converted from hf://authors/t-tame/heads/vgg16.ckpt" in card
    maps = paper_maps("vgg16")
    with torch.no_grad():
        torch.testing.assert_close(head(maps), reference_maps(state, CNN_PREFIX, maps))

    go_offline(fake_hub, monkeypatch)

    def no_second_conversion(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("converted twice")

    with monkeypatch.context() as patch:
        patch.setattr(convert, "convert_checkpoint", no_second_conversion)
        again = load_head(reference)
    assert torch.equal(again.fuser.weight, head.fuser.weight)
    code = main(
        [
            "import-checkpoint",
            "--repo",
            "authors/t-tame",
            "--filename",
            "heads/vgg16.ckpt",
            "--out",
            str(tmp_path / "cli-head"),
        ]
    )
    assert code == 0 and "hf://authors/t-tame/heads/vgg16.ckpt" in capsys.readouterr().out
    assert torch.equal(load_head(tmp_path / "cli-head").fuser.weight, head.fuser.weight)


@pytest.mark.parametrize(
    "reference", ["owner/absent-head", "hf://owner/absent-head", "hf://owner/absent/x.ckpt"]
)
def test_uncached_hub_heads_fail_fast_and_clearly_offline(reference, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    start = time.perf_counter()
    with pytest.raises(HeadError, match="not in the local Hugging Face cache and HF_HUB_OFFLINE"):
        load_head(reference)
    assert time.perf_counter() - start < 2


def test_cli_explain_with_an_uncached_repo_fails_fast_offline(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    start = time.perf_counter()
    assert main(["explain", str(EXAMPLE), "--head", "owner/absent-head"]) == 2
    assert time.perf_counter() - start < 5
    err = capsys.readouterr().err
    assert err.startswith("error: Head repo 'owner/absent-head' is not in the local Hugging Face")


@pytest.mark.parametrize(
    "text, parsed",
    [
        ("hf://a/b", HubRef("a/b")),
        ("hf://a/b@v1.0", HubRef("a/b", revision="v1.0")),
        ("hf://a/b/dir/x.ckpt", HubRef("a/b", "dir/x.ckpt")),
        ("hf://a/b@main/x.ckpt", HubRef("a/b", "x.ckpt", "main")),
    ],
)
def test_hf_references_parse(text, parsed):
    assert HubRef.parse(text) == parsed


@pytest.mark.parametrize("text", ["hf://a", "hf://a/..", "hf://a/b/../x.ckpt", "hf://a/b@/x"])
def test_malformed_hf_references_are_head_errors(text):
    with pytest.raises(HeadError, match="hf://OWNER/NAME"):
        HubRef.parse(text)


# --- timm weights through the Hugging Face cache -------------------------------------------


@pytest.mark.slow
@pytest.mark.integration
def test_timm_weights_download_then_load_offline_then_fail_fast(fake_hub, tmp_path, monkeypatch):
    import timm

    spec = get_spec("timm/test_resnet")
    torch.manual_seed(2)
    published = timm.create_model("test_resnet").state_dict()
    fake_hub.publish(
        "timm/test_resnet.r160_in1k",
        {"model.safetensors": safetensors_bytes({k: v.contiguous() for k, v in published.items()})},
    )

    state, _ = resolve_state_dict(spec.name, spec.weights)
    assert all(torch.equal(state[k], v) for k, v in published.items())

    go_offline(fake_hub, monkeypatch)
    state, _ = resolve_state_dict(spec.name, spec.weights)
    assert all(torch.equal(state[k], v) for k, v in published.items())

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty"))
    start = time.perf_counter()
    with pytest.raises(WeightsUnavailableError) as caught:
        resolve_state_dict(spec.name, spec.weights)
    assert time.perf_counter() - start < 2
    message = str(caught.value)
    assert "timm/test_resnet.r160_in1k is not in the local Hugging Face cache" in message
    assert "--weights PATH" in message


def test_unreachable_hub_fails_timm_weights_fast(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    spec = get_spec("timm/test_resnet")
    start = time.perf_counter()
    with pytest.raises(WeightsUnavailableError, match=r"127\.0\.0\.1:9\) cannot be reached"):
        resolve_state_dict(spec.name, spec.weights)
    assert time.perf_counter() - start < 5


# --- Model cards ---------------------------------------------------------------------------


def test_saved_heads_carry_a_model_card(tmp_path):
    explainer = tiny_explainer("tiny_vit")
    explainer.save_pretrained(
        tmp_path / "head",
        training_data="500 composites of the offline pool",
        metrics={"AD(15%)": 41.5, "IC(15%)": 12.0},
        license="apache-2.0",
    )
    card = ModelCard.load(tmp_path / "head" / "README.md")
    assert card.data.library_name == "ttame" and card.data.license == "apache-2.0"
    assert "t-tame" in card.data.tags
    for text in (
        "`tiny_vit`",
        "`blocks.2.norm1`",
        "500 composites",
        "| AD(15%) | 41.5 |",
        'Explainer.from_pretrained("path/to/this/folder")',
    ):
        assert text in card.text

    explainer.save_pretrained(tmp_path / "head", metrics={"AD(15%)": 40.0})
    card = ModelCard.load(tmp_path / "head" / "README.md")
    assert "| AD(15%) | 40.0 |" in card.text and "41.5" not in card.text
    assert "Not stated by whoever saved this head" in card.text


def test_push_to_hub_uploads_the_head_with_its_card(monkeypatch):
    uploaded: dict[str, str] = {}

    class RecordingApi:
        def __init__(self, token: str | None = None) -> None:
            pass

        def create_repo(self, repo_id: str, **_kwargs: object) -> types.SimpleNamespace:
            return types.SimpleNamespace(repo_id=repo_id)

        def upload_folder(self, folder_path: Path, **_kwargs: object) -> str:
            for path in Path(folder_path).iterdir():
                uploaded[path.name] = path.read_bytes().decode("utf-8", "replace")
            return "commit-url"

    monkeypatch.setattr("ttame.hub.heads.HfApi", RecordingApi)
    url = tiny_explainer().push_to_hub("me/tiny-head", training_data="tiny photos")
    assert url == "commit-url"
    assert set(uploaded) == {"README.md", "config.json", "model.safetensors"}
    assert 'Explainer.from_pretrained("me/tiny-head")' in uploaded["README.md"]
    assert json.loads(uploaded["config.json"])["backbone"] == "tiny_cnn"
