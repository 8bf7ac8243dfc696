#!/usr/bin/env bash
# The main job on the embedded local stack: venv, QuestDB jar, servers, demo.
cd "$(dirname "$0")/.."
source ops/bootstrap.sh
.venv/bin/tagus stack fetch >/dev/null
exec .venv/bin/tagus demo "$@"
