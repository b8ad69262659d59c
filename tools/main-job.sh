#!/usr/bin/env bash
# The main job on embedded defaults: install openstack-tee with what the
# demonstration needs into .venv (Debian packages too, as root), then run
# `openstack-tee demo`: a real barbican-api, Nova 34.0.0 in-process with
# its libvirt fixture, the software secure processor; SEV-SNP and SEV
# guests booted, placed, attested; altered firmware and a replayed nonce
# refused. Exit 0 only if every verdict is the expected one.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/install-deps.sh .venv
echo ">> installing openstack-tee, Nova 34.0.0 and Barbican 23.0.0 into" \
     ".venv (about a minute on a fresh machine)"
.venv/bin/pip install -q -r demo-requirements.txt . 2>&1 \
    | grep -v '^WARNING: Location' || true
exec .venv/bin/openstack-tee demo
