#!/usr/bin/env bash
# The main job: all of shipyard at work on this machine (scripts/demo.py says what it does).
#   bash scripts/demo.sh [OUT]        OUT defaults to out/demo; DEMO_EXIT=1 exits after the summary
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/python scripts/demo.py "$@"
