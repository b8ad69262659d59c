#!/usr/bin/env bash
# The Barbican functional suite again on MariaDB and on PostgreSQL, from
# tox -e functional (after the same suite on sqlite). The servers come from
# tools/with-databases.sh (tools/run-tests.sh runs tox under it), which sets
# the TEE_TEST_* variables; without them this fails, unless
# TEE_SKIP_DATABASES=1 says on purpose that only sqlite is wanted.
#
# Every test stestr discovers in tests/functional/barbican runs on each
# server, but for the classes named after the database they run on
# (SqliteMigrationTest, MariaDBFirstRequestsTest, PostgreSQLReconnectTest,
# ...: EXCLUDE below; tox.ini and README.rst say the same): they make
# databases of their own kind (scratch_db) whatever TEE_FUNCTIONAL_DB says,
# so the sqlite run has run them on all three already, and here they would
# only repeat it.
# An argument (a stestr regex, e.g. `test_release`) selects tests instead,
# and then nothing is left out.
#
# Each server's databases are copies of templates the real upgrade
# commands made (fixture.py, db_template.py); on PostgreSQL with the
# install guide's workaround for Barbican's own bug there.
# DatabaseRestartTest stops the server every other test of that run uses:
# it runs alone, after the rest of that server's run.
#
# The two servers' runs go side by side (TEE_DATABASE_RUNS=serial: one
# after the other): much of a run is waiting for barbican-api processes to
# start and for rate-limit windows, which the other run fills. Each has its
# own stestr repository (in .stestr-mysql, .stestr-postgresql), seeded with
# the sqlite run's timings so that stestr balances its workers; each line
# of output is prefixed with the server's name.
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
EXCLUDE='\.(Sqlite|MariaDB|PostgreSQL)[A-Za-z0-9_]*\.'
regex="${1:-.}"
exclude="\.DatabaseRestartTest\."
if [ $# -eq 0 ]; then
    exclude+="|$EXCLUDE"
fi

one_server() {  # one_server mysql|postgresql
    local db=$1 repo=".stestr-$1" start rc=0
    start=$(date +%s)
    # (stestr keeps its repository in .stestr under --repo-url.)
    rm -rf "$repo"
    mkdir -p "$repo"
    if [ -d .stestr ]; then
        cp -a .stestr "$repo/.stestr"
    fi
    TEE_FUNCTIONAL_DB=$db stestr --repo-url "$repo" \
        --test-path=./tests/functional/barbican \
        run --slowest --exclude-regex "$exclude" "$regex" || rc=$?
    TEE_FUNCTIONAL_DB=$db stestr --repo-url "$repo" \
        --test-path=./tests/functional/barbican \
        run --serial DatabaseRestartTest || rc=$?
    echo "functional-databases: $db: exit $rc, $(( $(date +%s) - start )) s"
    return "$rc"
}

start=$(date +%s)
rc=0
if [ "${TEE_DATABASE_RUNS:-parallel}" = serial ]; then
    one_server mysql || rc=$?
    one_server postgresql || rc=$?
else
    # Each run's output line by line, prefixed; its exit status kept
    # (pipefail).
    (one_server mysql 2>&1 | sed -u 's/^/[mysql] /') &
    mysql=$!
    (one_server postgresql 2>&1 | sed -u 's/^/[postgresql] /') &
    postgresql=$!
    wait "$mysql" || rc=$?
    wait "$postgresql" || rc=$?
fi
echo "functional-databases: both servers: exit $rc," \
    "$(( $(date +%s) - start )) s"
exit "$rc"
