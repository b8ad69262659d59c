#!/usr/bin/env bash
# Every test of openstack-tee: unit, functional (the installed commands run
# as subprocesses; the Barbican suite on sqlite, then again on MariaDB and
# on PostgreSQL, side by side) and style/type checks on Nova 34, the Nova
# side again on Nova 33.0.2 (tox -e nova33), Barbican's own unit tests with
# the suite installed (tox -e barbican-upstream), and barbican-tempest-
# plugin's API tests with and without the suite (tox -e tempest). Installs what it
# needs first; the database servers are this run's own
# (tools/with-databases.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
tools/install-deps.sh .venv-tools
exec tools/with-databases.sh \
    .venv-tools/bin/tox -e py3,functional,pep8,nova33,barbican-upstream,tempest "$@"
