#!/usr/bin/env bash
# Test under the LOWEST versions pyproject.toml allows: builds .venv-low with every runtime dependency pinned
# to its lower bound (">=X" -> "==X"), plus pytest and httpx, then runs the given tests (default: the JSON and
# listing tests that broke under a pandas change). Usage: scripts/lower-bounds.sh [pytest args...]
set -eu
cd "$(dirname "$0")/.."
PY=${PY:-python3.11}
[ -x .venv-low/bin/python ] || "$PY" -m venv .venv-low
pins=$(.venv-low/bin/python - <<'PY'
import re, tomllib
deps = tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]
out = []
for d in deps:
    m = re.match(r"^([A-Za-z0-9_.\[\]-]+)\s*>=\s*([0-9][^,;\s]*)", d)
    out.append(f"{m.group(1)}=={m.group(2)}" if m else d)
print(" ".join(out + ["pytest==8.0.0", "httpx==0.27.0"]))
PY
)
# shellcheck disable=SC2086
.venv-low/bin/pip install --quiet $pins
.venv-low/bin/pip install --quiet --no-deps -e .
.venv-low/bin/python -c "import pandas, duckdb, fastapi; print('lower bounds:', 'pandas', pandas.__version__, 'duckdb', duckdb.__version__, 'fastapi', fastapi.__version__)"
if [ $# -eq 0 ]; then set -- tests/test_datasets_listing.py tests/test_api.py tests/test_hotspots.py; fi
.venv-low/bin/python -m pytest -q -p no:warnings "$@"
