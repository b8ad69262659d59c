#!/usr/bin/env bash
# The Barbican functional suite on MariaDB, then on PostgreSQL, from
# tox -e functional (after the same suite on sqlite). The servers come from
# tools/with-databases.sh (tools/run-tests.sh runs tox under it), which sets
# the TEE_TEST_* variables; without them this fails, unless
# TEE_SKIP_DATABASES=1 says on purpose that only sqlite is wanted.
#
# By default the whole suite, but for the modules whose database does not
# follow TEE_FUNCTIONAL_DB, which the sqlite run has run already:
# test_migrations and test_schema_startup make their own databases on all
# three, test_keystone and SlowClientTest run on sqlite whatever it says,
# and test_input_checks starts no server. An argument (a stestr regex, e.g.
# `test_release`) selects others. Each server's database is a copy of a
# template the real upgrade commands made (fixture.py, db_template.py).
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
regex="${1:-.}"
exclude="DatabaseRestartTest"
if [ $# -eq 0 ]; then
    exclude+="|\.test_migrations\.|\.test_schema_startup\.|\.test_keystone\."
    exclude+="|\.test_input_checks\.|\.SlowClientTest\."
fi
for db in mysql postgresql; do
    TEE_FUNCTIONAL_DB=$db stestr --test-path=./tests/functional/barbican \
        run --slowest --exclude-regex "$exclude" "$regex"
    TEE_FUNCTIONAL_DB=$db stestr --test-path=./tests/functional/barbican \
        run --serial DatabaseRestartTest
done
