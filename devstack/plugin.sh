#!/bin/bash
# devstack plugin for openstack-tee: installs the distribution and wires it
# into Nova (driver shim, TEEFilter, TEEWeigher, [tee], [tee_barbican], the
# extra-spec paste filter) and Barbican (tee_sealed store, /v1/tee paste
# filters). Every step is idempotent: running a phase twice changes nothing
# more. Each part is configured only on a node that runs its service, so a
# compute-only subnode gets the driver and the attestation credentials and
# nothing else.

function install_openstack_tee {
    setup_develop "$OPENSTACK_TEE_DIR"
}

function _openstack_tee_add_to_list {
    # _openstack_tee_add_to_list FILE SECTION OPTION VALUE [DEFAULT]: append
    # VALUE to a comma-separated option unless it is already there; an
    # unset option starts from DEFAULT (Nova's own default list).
    local file=$1 section=$2 option=$3 value=$4 default=${5:-} current
    current=$(iniget "$file" "$section" "$option")
    current=${current:-$default}
    if [[ ",$current," != *",$value,"* ]]; then
        iniset "$file" "$section" "$option" "${current:+$current,}$value"
    fi
}

function _openstack_tee_add_multi {
    # _openstack_tee_add_multi FILE SECTION OPTION VALUE: add VALUE to a
    # multi-valued option unless it is already one of its values.
    # devstack's iniget_multiline prints all values on one line, separated
    # by spaces (the values here are dotted paths, never with spaces).
    local file=$1 section=$2 option=$3 value=$4 current
    current=" $(iniget_multiline "$file" "$section" "$option") "
    if [[ "$current" != *" $value "* ]]; then
        iniadd "$file" "$section" "$option" "$value"
    fi
}

function _openstack_tee_barbican_url {
    # Barbican's public endpoint, as the barbican plugin registers it.
    echo "${OPENSTACK_TEE_BARBICAN_URL:-${BARBICAN_HOST_HREF:-$SERVICE_PROTOCOL://$SERVICE_HOST/key-manager}}"
}

function configure_openstack_tee_nova_compute {
    # start_nova_compute rebuilds $NOVA_CPU_CONF from the cell's nova.conf
    # ($NOVA_CONF) after the post-config phase, so nova-compute's options
    # go into $NOVA_CONF; written into $NOVA_CPU_CONF they would be lost.
    if [[ "$VIRT_DRIVER" == "libvirt" ]]; then
        iniset "$NOVA_CONF" DEFAULT compute_driver libvirt_tee.TEELibvirtDriver
    else
        warn $LINENO "openstack-tee: VIRT_DRIVER=$VIRT_DRIVER is not libvirt; compute_driver left unchanged"
    fi
    # Launch-time attestation.
    configure_openstack_tee_nova_barbican
}

function configure_openstack_tee_nova_barbican {
    # Barbican's endpoint, and the nova service user (it has the service
    # role) as devstack configures service users: nova-compute's
    # launch-time attestation and nova-scheduler's TCB floor reads
    # (TEEFilter refuses every SEV-SNP host until it has read them). Both
    # read $NOVA_CONF (start_nova_rest starts nova-scheduler with it;
    # nova-cpu.conf is rebuilt from it), so a node with both gets one
    # copy.
    iniset "$NOVA_CONF" tee barbican_url "$(_openstack_tee_barbican_url)"
    configure_keystoneauth "$NOVA_CONF" nova tee_barbican
    if is_service_enabled tls-proxy; then
        iniset "$NOVA_CONF" tee_barbican cafile "$SSL_BUNDLE_FILE"
    fi
}

function configure_openstack_tee_nova_scheduler {
    _openstack_tee_add_multi "$NOVA_CONF" filter_scheduler available_filters \
        nova.scheduler.filters.all_filters
    _openstack_tee_add_multi "$NOVA_CONF" filter_scheduler available_filters \
        nova_tee.scheduler.TEEFilter
    _openstack_tee_add_to_list "$NOVA_CONF" filter_scheduler enabled_filters \
        TEEFilter "$OPENSTACK_TEE_NOVA_DEFAULT_FILTERS"
    _openstack_tee_add_multi "$NOVA_CONF" filter_scheduler weight_classes \
        nova.scheduler.weights.all_weighers
    _openstack_tee_add_multi "$NOVA_CONF" filter_scheduler weight_classes \
        nova_tee.scheduler.TEEWeigher
    iniset "$NOVA_CONF" tee min_free_slots "$OPENSTACK_TEE_MIN_FREE_SLOTS"
    iniset "$NOVA_CONF" tee weight_multiplier "$OPENSTACK_TEE_WEIGHT_MULTIPLIER"
    # TEEFilter reads the platform TCB floors from Barbican.
    configure_openstack_tee_nova_barbican
}

function configure_openstack_tee_nova_api {
    # configure_nova copies api-paste.ini only onto nodes that run n-api.
    "$PYTHON" -m nova_tee.api.middleware "$NOVA_API_PASTE_INI"
}

function configure_openstack_tee_tempest_filters {
    # devstack's configure_tempest gives tempest $NOVA_FILTERS as
    # [compute-feature-enabled] scheduler_enabled_filters.
    if [[ ",$NOVA_FILTERS," != *",TEEFilter,"* ]]; then
        NOVA_FILTERS=${NOVA_FILTERS:+$NOVA_FILTERS,}TEEFilter
    fi
}

function configure_openstack_tee_barbican {
    # Barbican's own post-config copies a fresh paste file: it must have
    # run before ours, so barbican's enable_plugin comes first.
    local plugin barbican_first=False
    for plugin in ${DEVSTACK_PLUGINS//,/ }; do
        [[ "$plugin" == "openstack-tee" ]] && break
        [[ "$plugin" == "barbican" ]] && barbican_first=True
    done
    if [[ "$barbican_first" != "True" ]]; then
        die $LINENO "openstack-tee: put 'enable_plugin barbican' before 'enable_plugin openstack-tee' in local.conf"
    fi
    if [[ ! -s "$OPENSTACK_TEE_KEK_FILE" ]]; then
        (umask 077 && head -c 32 /dev/urandom | base64 > "$OPENSTACK_TEE_KEK_FILE")
    fi
    iniset "$BARBICAN_CONF" tee_sealed kek_file "$OPENSTACK_TEE_KEK_FILE"
    # The store Barbican's plugin configured (barbican-vault, -pykmip or
    # -dogtag set [secretstore] enabled_secretstore_plugins; Barbican
    # ignores that option once multiple stores are enabled) stays the
    # global default: tee_sealed is only added next to it.
    local store crypto
    store=$(iniget "$BARBICAN_CONF" secretstore enabled_secretstore_plugins)
    store=${store:-store_crypto}
    store=${store%%,*}
    iniset "$BARBICAN_CONF" secretstore enable_multiple_secret_stores True
    iniset "$BARBICAN_CONF" secretstore stores_lookup_suffix software,tee_sealed
    iniset "$BARBICAN_CONF" secretstore:software secret_store_plugin "$store"
    if [[ "$store" == "store_crypto" ]]; then
        crypto=$(iniget "$BARBICAN_CONF" crypto enabled_crypto_plugins)
        crypto=${crypto:-simple_crypto}
        iniset "$BARBICAN_CONF" secretstore:software crypto_plugin "${crypto%%,*}"
    else
        inidelete "$BARBICAN_CONF" secretstore:software crypto_plugin
    fi
    iniset "$BARBICAN_CONF" secretstore:software global_default True
    iniset "$BARBICAN_CONF" secretstore:tee_sealed secret_store_plugin tee_sealed
    "$PYTHON" -m barbican_tee.api.paste "$BARBICAN_PASTE_CONF"
}

function init_openstack_tee_barbican {
    # Barbican's extra phase (it comes first) recreated its database, ran
    # barbican-manage db upgrade and started barbican-api, which refuses
    # to start with our filters until our tables are at this release's
    # schema: upgrade them, then restart barbican-api.
    "$OPENSTACK_TEE_BIN_DIR/openstack-tee" db upgrade --config-file "$BARBICAN_CONF"
    if [[ "$DATABASE_TYPE" == "postgresql" ]]; then
        # The install guide's workaround for Barbican 23.0.0's
        # simple_crypto on PostgreSQL (its own secrets 500 without it);
        # idempotent. psql finds the password in devstack's ~/.pgpass.
        psql -h"$DATABASE_HOST" -U"$DATABASE_USER" -d barbican -X -q \
            -v ON_ERROR_STOP=1 \
            -f "$OPENSTACK_TEE_DIR/barbican_tee/etc/postgresql-kek-data.sql"
    fi
    if is_service_enabled barbican-svc; then
        restart_service devstack@barbican-svc
    fi
}

if is_service_enabled openstack-tee; then
    if [[ "$1" == "stack" && "$2" == "install" ]]; then
        echo_summary "Installing openstack-tee"
        install_openstack_tee
    elif [[ "$1" == "stack" && "$2" == "post-config" ]]; then
        echo_summary "Configuring openstack-tee"
        if is_service_enabled n-cpu; then
            configure_openstack_tee_nova_compute
        fi
        if is_service_enabled n-sch; then
            configure_openstack_tee_nova_scheduler
        fi
        if is_service_enabled n-sch tempest; then
            configure_openstack_tee_tempest_filters
        fi
        if is_service_enabled n-api; then
            configure_openstack_tee_nova_api
        fi
        if is_service_enabled barbican; then
            configure_openstack_tee_barbican
        fi
    elif [[ "$1" == "stack" && "$2" == "extra" ]]; then
        if is_service_enabled barbican; then
            echo_summary "Upgrading openstack-tee's tables in Barbican's database"
            init_openstack_tee_barbican
        fi
    fi
fi
