#!/usr/bin/env bash
# Every test of openstack-tee: unit, functional (the installed commands run
# as subprocesses; the Barbican suite on sqlite, then on MariaDB and
# PostgreSQL) and style/type checks. Installs what it needs first; the
# database servers are this run's own (tools/with-databases.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
tools/install-deps.sh .venv-tools
exec tools/with-databases.sh \
    .venv-tools/bin/tox -e py3,functional,functional-databases,pep8 "$@"
