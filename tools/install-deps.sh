#!/usr/bin/env bash
# Install the Debian packages openstack-tee needs (bindep.txt) when run as
# root on Debian/Ubuntu, then make a virtualenv with tox in it. MariaDB and
# PostgreSQL are for the functional suite's own servers
# (tools/with-databases.sh); their system services are not used.
#   usage: tools/install-deps.sh VENV_DIR
set -euo pipefail
venv=${1:?usage: $0 VENV_DIR}
pkgs="gcc git pkg-config python3-dev python3-venv libvirt-dev libxml2-utils libvirt-clients-qemu python3-libvirt python3-lxml python3-cryptography shellcheck gawk mariadb-server postgresql"
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    missing=""
    for p in $pkgs; do
        dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"
    done
    if [ -n "$missing" ]; then
        echo ">> apt-get install$missing"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -q >/dev/null
        # shellcheck disable=SC2086
        apt-get install -y -q --no-install-recommends $missing >/dev/null
    fi
fi
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
"$venv/bin/pip" install -q --upgrade pip >/dev/null 2>&1 || true
"$venv/bin/pip" install -q tox 2>&1 | grep -v '^WARNING: Location' || true
