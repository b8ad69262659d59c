#!/bin/bash
# devstack plugin for openstack-tee: installs the distribution and wires it
# into Nova (driver shim, TEEFilter, TEEWeigher, [tee], the extra-spec
# paste filter) and Barbican (tee_sealed store, /v1/tee paste filters).
# Every step is idempotent: running a phase twice changes nothing more.

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
    local file=$1 section=$2 option=$3 value=$4
    if ! iniget_multiline "$file" "$section" "$option" | grep -qxF "$value"; then
        iniadd "$file" "$section" "$option" "$value"
    fi
}

function configure_openstack_tee_nova {
    iniset "$NOVA_CPU_CONF" DEFAULT compute_driver libvirt_tee.TEELibvirtDriver
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
    "$PYTHON" -m nova_tee.api.middleware "$NOVA_API_PASTE_INI"
}

function configure_openstack_tee_barbican {
    if [[ ! -s "$OPENSTACK_TEE_KEK_FILE" ]]; then
        (umask 077 && head -c 32 /dev/urandom | base64 > "$OPENSTACK_TEE_KEK_FILE")
    fi
    iniset "$BARBICAN_CONF" tee_sealed kek_file "$OPENSTACK_TEE_KEK_FILE"
    iniset "$BARBICAN_CONF" secretstore enable_multiple_secret_stores True
    iniset "$BARBICAN_CONF" secretstore stores_lookup_suffix software,tee_sealed
    iniset "$BARBICAN_CONF" secretstore:software secret_store_plugin store_crypto
    iniset "$BARBICAN_CONF" secretstore:software crypto_plugin simple_crypto
    iniset "$BARBICAN_CONF" secretstore:software global_default True
    iniset "$BARBICAN_CONF" secretstore:tee_sealed secret_store_plugin tee_sealed
    "$PYTHON" -m barbican_tee.api.paste "$BARBICAN_PASTE_CONF"
}

if is_service_enabled openstack-tee; then
    if [[ "$1" == "stack" && "$2" == "install" ]]; then
        echo_summary "Installing openstack-tee"
        install_openstack_tee
    elif [[ "$1" == "stack" && "$2" == "post-config" ]]; then
        echo_summary "Configuring openstack-tee"
        if is_service_enabled n-cpu n-sch n-api; then
            configure_openstack_tee_nova
        fi
        if is_service_enabled barbican; then
            configure_openstack_tee_barbican
        fi
    fi
fi
