#!/usr/bin/env bash
# Barbican's own unit tests, with openstack-tee installed beside it.
#
#   usage: tools/barbican-upstream-tests.sh [STESTR-RUN-ARG...]
#
# An operator installs openstack-tee into Barbican's environment: its entry
# points (store plugin, evidence verifiers, paste filters, config options)
# are then visible to Barbican's code. This runs the unit tests of the
# Barbican release installed here from its source release (PyPI's sdist:
# the wheel lacks the etc/ files they read), as Barbican's own tox runs
# them, in this environment; every test must pass (its skips are
# Barbican's own). Run by `tox -e barbican-upstream`.
set -euo pipefail
python -c "import barbican_tee" || {
    echo "barbican-upstream: openstack-tee is not installed here" >&2
    exit 1
}
version=$(python -c \
    "import importlib.metadata as m; print(m.version('barbican'))")
work=$(mktemp -d "${TMPDIR:-/tmp}/barbican-upstream.XXXXXX")
trap 'rm -rf "$work"' EXIT
python -m pip download --quiet --no-deps --no-binary :all: \
    --dest "$work" "barbican==$version"
tar -xzf "$work/barbican-$version.tar.gz" -C "$work"
cd "$work/barbican-$version"
start=$(date +%s)
rc=0
stestr run --concurrency 2 "$@" || rc=$?
echo "barbican-upstream: Barbican $version's unit tests with openstack-tee" \
    "$(python -c "import importlib.metadata as m; \
print(m.version('openstack-tee'))") installed: exit $rc," \
    "$(( $(date +%s) - start )) s"
exit "$rc"
