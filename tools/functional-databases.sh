#!/usr/bin/env bash
# The Barbican functional suite on MariaDB, then on PostgreSQL, a fresh
# database per server, from tox -e functional. The servers come from
# tools/with-databases.sh (tools/run-tests.sh runs tox under it), which sets
# the TEE_TEST_* variables; without them this fails, unless
# TEE_SKIP_DATABASES=1 says on purpose that only sqlite is wanted.
#
# By default the modules whose outcome depends on the database:
# test_databases (two nodes on one database, concurrent releases, rate
# limits, exact ids), test_release, test_record_binding (the attacker's
# SQL) and test_lockout (rate limits); an argument (a stestr regex, e.g.
# `.`) selects others. (test_migrations and test_schema_startup make their
# own databases on both servers from the sqlite run already.) The whole suite
# three times over is too slow for CI on a 2-core machine.
# DatabaseRestartTest stops the server every other test uses: it runs
# alone, after the rest.
set -euo pipefail
if [ -z "${TEE_TEST_MYSQL_URL:-}" ] || [ -z "${TEE_TEST_POSTGRESQL_URL:-}" ]
then
    if [ "${TEE_SKIP_DATABASES:-0}" = 1 ]; then
        echo "functional-databases: skipped (TEE_SKIP_DATABASES=1)"
        exit 0
    fi
    echo "functional-databases: TEE_TEST_MYSQL_URL/TEE_TEST_POSTGRESQL_URL" \
        "are not set: run under tools/with-databases.sh, or set" \
        "TEE_SKIP_DATABASES=1 for sqlite only" >&2
    exit 1
fi
regex="${1:-test_databases|test_release|test_record_binding|test_lockout}"
for db in mysql postgresql; do
    TEE_FUNCTIONAL_DB=$db stestr --test-path=./tests/functional/barbican \
        run --slowest --exclude-regex DatabaseRestartTest "$regex"
    TEE_FUNCTIONAL_DB=$db stestr --test-path=./tests/functional/barbican \
        run --serial DatabaseRestartTest
done
