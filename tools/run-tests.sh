#!/usr/bin/env bash
# Every test of openstack-tee: unit, functional (the installed commands run
# as subprocesses), style/type checks, and barbican-tempest-plugin's API
# tests with and without the suite (tox -e tempest). Installs what it needs
# first.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/install-deps.sh .venv-tools
exec .venv-tools/bin/tox -e py3,functional,pep8,tempest "$@"
