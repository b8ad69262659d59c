#!/usr/bin/env bash
# Run every benchmark (bench/run.py) with MariaDB and PostgreSQL servers.
#
#   usage: tools/bench.sh PYTHON [BENCHMARK...]
#   (tox -e bench [-- BENCHMARK...] runs this; default: every benchmark)
#
# The release benchmark measures attested releases on MariaDB and
# PostgreSQL as well as sqlite: it needs TEE_TEST_MYSQL_URL and
# TEE_TEST_POSTGRESQL_URL. When both are already set (say the caller runs
# under tools/with-databases.sh), they are used; otherwise this starts
# private servers with tools/with-databases.sh (root, with the Debian
# packages tools/install-deps.sh installs). Without them the database
# comparisons print "not run" and the run exits non-zero.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
python=${1:-python}
shift || true
run=("$python" "$here/../bench/run.py" "$@")
if [ -n "${TEE_TEST_MYSQL_URL:-}" ] && [ -n "${TEE_TEST_POSTGRESQL_URL:-}" ]; then
    exec "${run[@]}"
fi
exec "$here/with-databases.sh" "${run[@]}"
