#!/usr/bin/env bash
# Run COMMAND with one private MariaDB and one private PostgreSQL server.
#
#   usage: tools/with-databases.sh COMMAND [ARG...]
#
# Both servers come from the Debian packages (tools/install-deps.sh installs
# them), run from data directories under a new temporary directory, listen
# on 127.0.0.1 on free ports (and on unix sockets there), and are stopped by
# PID when COMMAND ends (or this script is interrupted); the directory is
# removed. Nothing of the system's own database services is touched.
#
# COMMAND sees, besides its usual environment:
#   TEE_TEST_MYSQL_URL        mysql+pymysql://tee:PW@127.0.0.1:PORT/tee
#   TEE_TEST_POSTGRESQL_URL   postgresql+psycopg2://tee:PW@127.0.0.1:PORT/tee
#     (the user may create and drop databases: a test makes its own)
#   TEE_TEST_MYSQL_PIDFILE, TEE_TEST_POSTGRESQL_PIDFILE
#                             the server's PID file (first line: its PID)
#   TEE_TEST_MYSQL_START, TEE_TEST_POSTGRESQL_START
#                             a script that starts the stopped server again
#                             (same data, port and password) and waits for it
# so that a test can stop a server by its PID and start it again.
set -euo pipefail
[ $# -gt 0 ] || { echo "usage: $0 COMMAND [ARG...]" >&2; exit 2; }

top=$(mktemp -d "${TMPDIR:-/tmp}/openstack-tee-databases.XXXXXX")
chmod 0711 "$top"
mysql_pidfile="$top/mysql/mariadb.pid"
pg_pidfile="$top/postgresql/data/postmaster.pid"

alive() {  # alive PID: running, and not a zombie nobody reaped
    local state
    state=$(ps -o stat= -p "$1" 2>/dev/null) || return 1
    [ "${state:0:1}" != Z ]
}

stop_pid() {  # stop_pid PIDFILE NAME SIGNAL: SIGNAL, then SIGKILL after 20 s
    local pid
    [ -s "$1" ] || return 0
    pid=$(head -n 1 "$1")
    [ -n "$pid" ] && alive "$pid" || return 0
    kill "-$3" "$pid" 2>/dev/null || true
    for _ in $(seq 200); do
        alive "$pid" || return 0
        sleep 0.1
    done
    echo ">> $2 (pid $pid) did not stop; SIGKILL" >&2
    kill -KILL "$pid" 2>/dev/null || true
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    stop_pid "$mysql_pidfile" mariadb TERM
    # SIGINT: PostgreSQL's fast shutdown (SIGTERM waits for its clients).
    stop_pid "$pg_pidfile" postgres INT
    rm -rf "$top"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
password() {
    python3 -c 'import secrets; print(secrets.token_hex(16))'
}

# Root runs each server as its package's system user, which must own the
# data directory; anyone else runs it as themselves.
as_user() {  # as_user USER CMD...
    local user=$1
    shift
    if [ "$(id -u)" = 0 ]; then
        setpriv --reuid="$user" --regid="$user" --init-groups -- "$@"
    else
        "$@"
    fi
}
own() {  # own USER DIR
    if [ "$(id -u)" = 0 ]; then
        chown -R "$1:$1" "$2"
    fi
}

wait_for() {  # wait_for NAME LOG CMD...: until CMD succeeds (60 s)
    local name=$1 log=$2
    shift 2
    for _ in $(seq 600); do
        if "$@" >/dev/null 2>&1; then
            return 0
        fi
        sleep 0.1
    done
    echo ">> $name did not start; its log:" >&2
    tail -n 40 "$log" >&2 || true
    return 1
}

# -- MariaDB ---------------------------------------------------------------
mysqld=$(command -v mariadbd || command -v mysqld || echo /usr/sbin/mariadbd)
[ -x "$mysqld" ] || { echo ">> no mariadbd: run tools/install-deps.sh as root" >&2; exit 1; }
mdir="$top/mysql"
mkdir -p "$mdir/data"
own mysql "$mdir"
mport=$(free_port)
mpass=$(password)
as_user mysql mariadb-install-db --no-defaults --datadir="$mdir/data" \
    --auth-root-authentication-method=socket --skip-test-db \
    >"$mdir/install.log" 2>&1 || {
    tail -n 40 "$mdir/install.log" >&2
    exit 1
}
cat >"$mdir/start" <<EOF
#!/usr/bin/env bash
# Start this test run's MariaDB (data in $mdir) and wait until it answers.
set -euo pipefail
$(declare -f as_user wait_for)
as_user mysql setsid "$mysqld" --no-defaults --datadir="$mdir/data" \\
    --socket="$mdir/mysqld.sock" --port=$mport --bind-address=127.0.0.1 \\
    --pid-file="$mysql_pidfile" --log-error="$mdir/error.log" \\
    --skip-log-bin --innodb-buffer-pool-size=64M \\
    --innodb-flush-log-at-trx-commit=2 --max-connections=500 \\
    </dev/null >>"$mdir/error.log" 2>&1 &
wait_for mariadb "$mdir/error.log" \\
    mariadb-admin --no-defaults --socket="$mdir/mysqld.sock" -uroot ping
wait_for mariadb "$mdir/error.log" test -s "$mysql_pidfile"
EOF
chmod 0755 "$mdir/start"
"$mdir/start"
mariadb --no-defaults --socket="$mdir/mysqld.sock" -uroot <<EOF
CREATE USER 'tee'@'127.0.0.1' IDENTIFIED BY '$mpass';
GRANT ALL PRIVILEGES ON *.* TO 'tee'@'127.0.0.1';
CREATE DATABASE tee CHARACTER SET utf8mb4;
EOF
export TEE_TEST_MYSQL_URL="mysql+pymysql://tee:$mpass@127.0.0.1:$mport/tee?charset=utf8mb4"
export TEE_TEST_MYSQL_PIDFILE="$mysql_pidfile"
export TEE_TEST_MYSQL_START="$mdir/start"
echo ">> MariaDB $("$mysqld" --version | awk '{print $3}') on 127.0.0.1:$mport (pid $(head -n 1 "$mysql_pidfile"))"

# -- PostgreSQL ------------------------------------------------------------
pgbin=$(find /usr/lib/postgresql -maxdepth 2 -name bin -type d 2>/dev/null | sort -V | tail -n 1)
if [ -z "$pgbin" ] || [ ! -x "$pgbin/postgres" ]; then
    echo ">> no PostgreSQL: run tools/install-deps.sh as root" >&2
    exit 1
fi
pdir="$top/postgresql"
mkdir -p "$pdir"
pport=$(free_port)
ppass=$(password)
printf '%s\n' "$ppass" >"$pdir/pwfile"
own postgres "$pdir"
as_user postgres "$pgbin/initdb" -D "$pdir/data" -U tee --pwfile="$pdir/pwfile" \
    --auth-local=scram-sha-256 --auth-host=scram-sha-256 -E UTF8 \
    --locale=C.UTF-8 >"$pdir/initdb.log" 2>&1 || {
    tail -n 40 "$pdir/initdb.log" >&2
    exit 1
}
rm -f "$pdir/pwfile"
cat >"$pdir/start" <<EOF
#!/usr/bin/env bash
# Start this test run's PostgreSQL (data in $pdir) and wait until it answers.
set -euo pipefail
$(declare -f as_user)
as_user postgres "$pgbin/pg_ctl" -D "$pdir/data" -l "$pdir/postgresql.log" \\
    -w -t 60 -o "-c listen_addresses=127.0.0.1 -p $pport -k $pdir \\
    -c max_connections=300 -c fsync=off -c full_page_writes=off" \\
    start >/dev/null
EOF
chmod 0755 "$pdir/start"
"$pdir/start"
PGPASSWORD=$ppass "$pgbin/psql" -q -h 127.0.0.1 -p "$pport" -U tee -d postgres \
    -c "CREATE DATABASE tee" >/dev/null
export TEE_TEST_POSTGRESQL_URL="postgresql+psycopg2://tee:$ppass@127.0.0.1:$pport/tee"
export TEE_TEST_POSTGRESQL_PIDFILE="$pg_pidfile"
export TEE_TEST_POSTGRESQL_START="$pdir/start"
echo ">> PostgreSQL $("$pgbin/postgres" --version | awk '{print $3}') on 127.0.0.1:$pport (pid $(head -n 1 "$pg_pidfile"))"

# Not exec: the trap stops both servers when COMMAND ends. In the
# background and waited for, so that a SIGTERM or SIGINT to this script is
# handled at once (passed on to COMMAND) rather than when COMMAND ends.
set +e
"$@" &
child=$!
trap 'kill -TERM "$child" 2>/dev/null; wait "$child"; exit 143' TERM
trap 'kill -INT "$child" 2>/dev/null; wait "$child"; exit 130' INT
wait "$child"
