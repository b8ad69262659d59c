#!/usr/bin/env bash
# Make (or keep) the virtualenvs of the parts that run beside openstack-tee
# in its tests, each with its own pins, out of the project's requirements:
#   tools/service-venv.sh DIR            Keystone 30.0.0 + gunicorn
#   tools/service-venv.sh DIR tempest    tempest 47.0.0 + barbican-tempest-plugin 4.6.0
# Idempotent: a venv whose marker names the same packages is kept.
set -euo pipefail
venv=${1:?usage: $0 VENV_DIR [keystone|tempest]}
kind=${2:-keystone}
case "$kind" in
    keystone) pkgs="keystone==30.0.0 gunicorn>=22.0.0"; module=keystone ;;
    tempest) pkgs="tempest==47.0.0 barbican-tempest-plugin==4.6.0"; module=barbican_tempest_plugin ;;
    *) echo "unknown kind $kind" >&2; exit 2 ;;
esac
marker="$venv/.openstack-tee-packages"
if [ -x "$venv/bin/python" ] && [ "$(cat "$marker" 2>/dev/null)" = "$pkgs" ]; then
    exit 0
fi
rm -rf "$venv"
python3 -m venv "$venv"
"$venv/bin/pip" install -q --upgrade pip 2>&1 | grep -v '^WARNING: Location' || true
# shellcheck disable=SC2086
"$venv/bin/pip" install -q $pkgs 2>&1 | grep -v '^WARNING: Location' || true
"$venv/bin/python" -c "import $module"
echo "$pkgs" > "$marker"
