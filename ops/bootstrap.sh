# Sourced by ops/demo.sh and ops/test.sh: make .venv and install Tagus into it.
# Re-installs only when pyproject.toml changed.  Needs python3 >= 3.11 on PATH
# (or TAGUS_PYTHON); everything else (nats-server, Java 25, the QuestDB jar) is fetched.
set -euo pipefail
PY="${TAGUS_PYTHON:-python3}"
"$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || {
  echo "tagus: Python >= 3.11 needed, $("$PY" --version 2>&1) found; set TAGUS_PYTHON" >&2; exit 2; }
[ -x .venv/bin/python ] || "$PY" -m venv .venv
stamp=".venv/.tagus-installed"
want="$(sha256sum pyproject.toml | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "tagus: installing into .venv (first run takes a few minutes)" >&2
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e '.[test,dev]'
  echo "$want" > "$stamp"
fi
