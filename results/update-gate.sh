#!/usr/bin/env bash
# Regenerate results/gate, the regression gate's committed CPU baseline (.ci/run compares a
# fresh `xbench run gate` against it). Run it after merging anything that changes what a
# record holds or how a job computes (new record fields, the data split, TTA protocol, ...),
# on the reference 2-core CPU machine, from a clean tree:
#
#   results/update-gate.sh            # ~3 minutes on an idle 2-core machine
#
# It runs the whole suite fresh into a temporary folder (never resuming old records), then
# replaces results/gate/records.jsonl and results/gate/plans/ with the new ones, and checks
# that the new baseline passes the gate against itself. PYTHON picks the interpreter
# (default: python3 with xbench installed).
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(mktemp -d "${TMPDIR:-/tmp}/xbench-gate.XXXXXX")
trap 'rm -rf "$out"' EXIT
"${PYTHON:-python3}" -m xbench.cli run gate --executor process --jobs 2 --out "$out" --quiet \
  > /dev/null
rm -rf results/gate
mkdir -p results/gate
cp "$out/records.jsonl" results/gate/records.jsonl
cp -r "$out/plans" results/gate/plans
"${PYTHON:-python3}" -m xbench.cli compare results/gate "$out" --metric acc_target --exact \
  > /dev/null
echo "wrote results/gate ($(wc -l < results/gate/records.jsonl) records); commit it" >&2
