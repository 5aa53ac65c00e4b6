# Shared by scripts/serve and scripts/test: one virtualenv in .venv, installed from the pinned files.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"

ensure_venv() {  # ensure_venv REQUIREMENTS_FILE
  local req="$1" stamp="$VENV/.installed-$(basename "$1")"
  if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
  fi
  # Reinstall only when the requirements changed since the last install.
  if [ ! -f "$stamp" ] || [ "$ROOT/$req" -nt "$stamp" ] || [ "$ROOT/requirements.txt" -nt "$stamp" ]; then
    "$VENV/bin/pip" install --quiet --disable-pip-version-check -r "$ROOT/$req" 2>&1 | grep -v "is ignored" || true
    "$VENV/bin/python" -c "import flask, pydantic" # fail loudly if the install did not work
    touch "$stamp"
  fi
}
