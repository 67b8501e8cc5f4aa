#!/usr/bin/env bash
# Regenerate results/LEADERBOARD.md from committed records (default: results/standard).
# LEADERBOARD.md is generated: never edit it by hand. Its first line names the command that
# made it (`xbench report results/standard --format md`), which this script runs:
#
#   results/update-leaderboard.sh [RECORDS_DIR [OUTPUT]]
#
# PYTHON picks the interpreter (default: python3 with xbench installed).
set -euo pipefail
cd "$(dirname "$0")/.."
records="${1:-results/standard}"
out="${2:-results/LEADERBOARD.md}"
"${PYTHON:-python3}" -m xbench.cli report "$records" --format md > "$out.tmp"
mv "$out.tmp" "$out"
echo "wrote $out" >&2
