#!/usr/bin/env bash
# Build the wheel, install it alone into a fresh venv and use it from outside the checkout.
#
#   bash scripts/check_wheel.sh            # with .venv/bin/python (scripts/setup.sh --dev)
#   PYTHON=/path/to/python bash scripts/check_wheel.sh
#
# Offline and fast: the wheel is built without build isolation (hatchling must be installed in
# BUILD_PYTHON, default PYTHON) and installed with --no-deps into a venv that sees PYTHON's
# installed packages, so nothing is downloaded. The checks run in an empty folder, so that only
# the installed wheel can answer: `ttame explain` finds the bundled head, the app finds its
# example photos.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
python=${PYTHON:-$repo/.venv/bin/python}
build_python=${BUILD_PYTHON:-$python}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

"$build_python" -m pip wheel -q --no-deps --no-build-isolation -w "$work/dist" "$repo"
wheel=$(ls "$work"/dist/ttame-*.whl)
"$python" -m venv --without-pip "$work/venv"
site=$("$work/venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
"$python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])' > "$site/_base_packages.pth"
"$python" -m pip --python "$work/venv/bin/python" install -q --no-deps --no-index "$wheel"

mkdir "$work/elsewhere"
cd "$work/elsewhere"
export HF_HUB_OFFLINE=1 PYTHONPATH=
"$work/venv/bin/ttame" explain "$repo/examples/chelsea.jpg" --json > explained.json
"$work/venv/bin/python" - "$site" <<'PY'
import json
import sys
from pathlib import Path

import ttame
from ttame.app.state import EXAMPLES_DIR, example_photos

site = Path(sys.argv[1]).resolve()
assert Path(ttame.__file__).resolve().is_relative_to(site), ttame.__file__
report = json.loads(Path("explained.json").read_text())
assert report["head"] == "trained" and report["class_name"], report
assert Path(EXAMPLES_DIR).resolve().is_relative_to(site), EXAMPLES_DIR
photos = example_photos(EXAMPLES_DIR)
assert len(photos) >= 4 and all("not recorded" not in credit for _, credit in photos), photos
print(f"wheel ok: ttame {ttame.__version__}, {report['class_name']} "
      f"p={report['probability']:.2f}, {len(photos)} example photos")
PY
