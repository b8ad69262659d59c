#!/bin/bash
# Run the openstack-tee devstack plugin the way stack.sh does, with
# devstack's and Barbican's real shell code, in a scratch directory.
#
#   stack-phases.sh WORK SERVICES [post-config-runs]
#
# WORK is a scratch directory (all config files land under WORK/etc);
# SERVICES is ENABLED_SERVICES (what local.conf would enable). The
# environment gives DEVSTACK_FIXTURES (devstack's and Barbican's code, see
# ../shared/fixtures/SOURCES.md), OPENSTACK_TEE_ROOT (this project),
# PYTHON (an interpreter with openstack-tee, Nova and Barbican installed)
# and NOVA_WHEEL_ETC / BARBICAN_WHEEL_ETC (the etc/ files those wheels
# ship, standing in for the git checkouts devstack would clone).
#
# Only commands that change the host or start services are stubbed, and
# each stub records its call in WORK/calls:
#   sudo              (system directories, sysctl, modprobe, systemd, ...)
#   run_process       (starts a service; start_nova_compute ends with it)
#   restart_service, install_package, setup_develop, configure_libvirt
#                     (packages and daemons; setup_develop would pip
#                     install the project)
#   recreate_database, barbican-manage, openstack-tee, sleep
#                     (the database server and the migrations run against
#                     it, and Barbican's extra phase waiting for the
#                     service it started)
# Everything else (iniset/iniget/iniget_multiline/iniadd, configure_nova,
# create_nova_conf, configure_nova_hypervisor, start_nova_compute's
# rebuild of nova-cpu.conf, Barbican's configure_barbican, the plugins'
# phases) is devstack's and Barbican's own code.
#
# The variables set below are read by devstack's code, which this script
# sources from the fixtures and shellcheck does not follow:
# shellcheck disable=SC1091,SC2034
set -o errexit

WORK=$1
SERVICES=$2
POST_CONFIG_RUNS=${3:-1}
FIX=${DEVSTACK_FIXTURES:?}
TEE=${OPENSTACK_TEE_ROOT:?}
HARNESS_PYTHON=${PYTHON:?}

function _record { echo "$*" >> "$WORK/calls"; }

# Temporary files of devstack's functions (mktemp) stay in WORK too.
export TMPDIR=$WORK/tmp
mkdir -p "$TMPDIR"

# stack.sh: TOP_DIR is the devstack checkout, with local.conf in it. Here
# it is a directory of links to the fixture's files plus this run's
# local.conf (WORK/local.conf, when the caller wrote one).
TOP_DIR=$WORK/devstack
mkdir -p "$TOP_DIR"
for f in "$FIX"/devstack/*; do
    ln -sfn "$f" "$TOP_DIR/$(basename "$f")"
done
if [[ -f $WORK/local.conf ]]; then
    cp "$WORK/local.conf" "$TOP_DIR/local.conf"
fi
# devstack installs gawk; its local.conf merging needs it.
CONFIG_AWK_CMD=gawk

source "$TOP_DIR/functions"
source "$TOP_DIR/stackrc"

# What local.conf's [[local|localrc]] would set.
DEST=$WORK/opt
DATA_DIR=$DEST/data
ENABLED_SERVICES=$SERVICES
for _service in ${HARNESS_DISABLED//,/ }; do
    disable_service "$_service"
done
STACK_USER=$(whoami)
DEVSTACK_PLUGINS=${HARNESS_PLUGINS:-barbican,openstack-tee}
GITDIR["barbican"]=$DEST/barbican
GITDIR["openstack-tee"]=$TEE
OPENSTACK_TEE_DIR=$TEE
SERVICE_PASSWORD=secretservice
DATABASE_PASSWORD=secretdb
RABBIT_PASSWORD=secretrabbit
ADMIN_PASSWORD=secretadmin
HOST_IP=192.0.2.10
SERVICE_HOST=${HARNESS_SERVICE_HOST:-$HOST_IP}
LOGFILE=$WORK/logs/stack.log
LOGDIR=$WORK/logs
BARBICAN_CONF_DIR=$WORK/etc/barbican
OPENSTACK_TEE_KEK_FILE=$WORK/etc/barbican/tee-kek
# openstack-tee's command, stubbed like barbican-manage (below).
OPENSTACK_TEE_BIN_DIR=$WORK/bin
PYTHON=$HARNESS_PYTHON


# The project libraries stack.sh sources, in its order.
source "$TOP_DIR/lib/stack"
source "$TOP_DIR/lib/database"
source "$TOP_DIR/lib/rpc_backend"
source "$TOP_DIR/lib/apache"
source "$TOP_DIR/lib/tls"
source "$TOP_DIR/lib/keystone"
source "$TOP_DIR/lib/placement"
source "$TOP_DIR/lib/nova"
source "$TOP_DIR/lib/tempest"

# Host-changing and service-starting commands (see the header).
function sudo { _record "sudo $*"; }
function restart_service { _record "restart_service $*"; }
function install_package { _record "install_package $*"; }
function run_process { _record "run_process $*"; }
function setup_develop { _record "setup_develop $*"; }
function pip_install { _record "pip_install $*"; }
function psql { _record "psql $*"; }
function configure_libvirt { _record "configure_libvirt $*"; }
function recreate_database { _record "recreate_database $*"; }
function sleep { _record "sleep $*"; }
initialize_database_backends && echo "Using $DATABASE_TYPE database backend" || echo "No database enabled"

# lib/nova hard-codes /etc/nova; keep every file in the scratch directory.
NOVA_CONF_DIR=$WORK/etc/nova
NOVA_CONF=$NOVA_CONF_DIR/nova.conf
NOVA_COND_CONF=$NOVA_CONF_DIR/nova.conf
NOVA_CPU_CONF=$NOVA_CONF_DIR/nova-cpu.conf
NOVA_FAKE_CONF=$NOVA_CONF_DIR/nova-fake.conf
NOVA_UWSGI_CONF=$NOVA_CONF_DIR/nova-api-uwsgi.ini
NOVA_METADATA_UWSGI_CONF=$NOVA_CONF_DIR/nova-metadata-uwsgi.ini
NOVA_API_PASTE_INI=$NOVA_CONF_DIR/api-paste.ini
mkdir -p "$NOVA_CONF_DIR" "$BARBICAN_CONF_DIR" "$DEST/logs" "$LOGDIR"

# The checkouts devstack would have cloned: Nova's and Barbican's etc/
# files come from their installed wheels; Barbican's devstack/ is the
# fixture's real one.
mkdir -p "$NOVA_DIR/etc/nova" "$DEST/barbican/etc/barbican/vassals"
cp "$NOVA_WHEEL_ETC/nova/api-paste.ini" "$NOVA_DIR/etc/nova/"
cp "$BARBICAN_WHEEL_ETC/barbican/barbican-api-paste.ini" \
    "$DEST/barbican/etc/barbican/"
touch "$DEST/barbican/etc/barbican/barbican-functional.conf" \
    "$DEST/barbican/etc/barbican/vassals/barbican-api.ini"
ln -sfn "$FIX/barbican/devstack" "$DEST/barbican/devstack"

# stack.sh: plugin settings, services' install and configure, plugins'
# install, plugins' post-config, service start (start_nova_compute
# rebuilds nova-cpu.conf), plugins' extra.
run_phase source
# Barbican's extra phase runs barbican-manage against its database.
BARBICAN_BIN_DIR=$WORK/bin
mkdir -p "$BARBICAN_BIN_DIR"
printf '#!/bin/sh\necho "barbican-manage $*" >> "%s/calls"\n' "$WORK" \
    > "$BARBICAN_BIN_DIR/barbican-manage"
chmod +x "$BARBICAN_BIN_DIR/barbican-manage"
printf '#!/bin/sh\necho "openstack-tee $*" >> "%s/calls"\n' "$WORK" \
    > "$OPENSTACK_TEE_BIN_DIR/openstack-tee"
chmod +x "$OPENSTACK_TEE_BIN_DIR/openstack-tee"
if is_service_enabled nova; then
    # configure_nova ends with create_nova_conf and, on a compute node,
    # configure_nova_hypervisor (which writes compute_driver).
    configure_nova
fi
run_phase stack install
for run in $(seq 1 "$POST_CONFIG_RUNS"); do
    run_phase stack post-config
    # What the files are after each post-config (idempotency check).
    cp -a "$WORK/etc" "$WORK/after-post-config-$run"
done
if is_service_enabled n-cpu; then
    start_nova_compute
fi
# lib/nova's start_nova_rest: nova-scheduler's command line (which
# config file it reads) is recorded by the run_process stub.
if is_service_enabled n-sch; then
    start_nova_rest
fi
run_phase stack extra

# What devstack's configure_tempest would pass to tempest.
echo "NOVA_FILTERS=$NOVA_FILTERS" > "$WORK/tempest-vars"
