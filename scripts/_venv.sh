# Shared by run-platform and run-tests: make ./.venv with Python >= 3.11 and install the
# project into it (again only when pyproject.toml changed).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

python=""
for candidate in "${PYTHON:-}" python3.13 python3.12 python3.11 python3; do
  if [ -n "$candidate" ] && command -v "$candidate" >/dev/null 2>&1 &&
     "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    python="$candidate"
    break
  fi
done
if [ -z "$python" ]; then
  echo "edge-platform needs Python >= 3.11 (set PYTHON=/path/to/python3.11)" >&2
  exit 1
fi

if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
extras="$1"
stamp=".venv/.installed-$extras"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "edge-platform: installing the project and its dependencies ($extras) into ./.venv;" \
       "the first time takes a few minutes" >&2
  .venv/bin/python -m pip install --quiet --upgrade pip
  # pip's own lines (Collecting…, Installing…) are the progress; the rest of its chatter not.
  # (pipefail: the pipeline fails when pip does.)
  .venv/bin/python -m pip install --progress-bar off -e ".[$extras]" 2>&1 |
    { grep --line-buffered -E '^(Collecting|Installing|Successfully|ERROR)' >&2 || true; }
  touch "$stamp"
  echo "edge-platform: installed" >&2
fi
export PATH="$root/.venv/bin:$PATH"
