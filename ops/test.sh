#!/usr/bin/env bash
# The test suite against real servers: venv, QuestDB jar, then pytest, which starts
# its own NATS + QuestDB on free ports in a temporary directory and stops them.
cd "$(dirname "$0")/.."
source ops/bootstrap.sh
source ops/system-packages.sh
.venv/bin/tagus stack fetch
exec .venv/bin/python -m pytest "$@"
