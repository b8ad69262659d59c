#!/usr/bin/env bash
# The main job on embedded defaults: install openstack-tee into .venv and
# verify every real SEV-SNP report and TDX quote in tests/fixtures with
# `openstack-tee verify`, printing a verdict table. Exit 0 only if every
# verdict is the one tests/fixtures/SOURCES.md expects.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/install-deps.sh .venv
echo ">> installing openstack-tee into .venv"
.venv/bin/pip install -q . 2>&1 | grep -v '^WARNING: Location' || true
exec .venv/bin/python tools/fixture_verdicts.py --bin .venv/bin
