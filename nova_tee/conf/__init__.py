"""Configuration options of nova_tee (the ``[tee]`` group of nova.conf)."""

from __future__ import annotations

from oslo_config import cfg

GROUP = cfg.OptGroup(
    "tee",
    title="openstack-tee",
    help="Attestation-aware scheduling and confidential launch.")

SCHEDULER_OPTS = [
    cfg.IntOpt(
        "min_free_slots",
        default=1,
        min=1,
        help="TEEFilter passes a host for a guest whose flavor has tee: "
             "extra specs only if it has at least this many free "
             "encryption slots (ASIDs) of the requested model. Raise it "
             "to keep headroom for rebuilds and evacuations, which need a "
             "slot on the target. Flavors without tee: keys are placed "
             "by upstream's MEM_ENCRYPTION_CONTEXT inventory alone."),
    cfg.IntOpt(
        "floor_cache_ttl",
        default=60,
        min=0,
        help="Seconds TEEFilter keeps the platform TCB floors it read from "
             "Barbican (GET /v1/tee/floors, with [tee] barbican_url and "
             "the [tee_barbican] service credentials) before reading them "
             "again: a floor an administrator raises refuses stale hosts "
             "for new guests within this time. When Barbican cannot be "
             "read, the last floors read stay in force past it; before any "
             "were read, every host is refused for amd-sev-snp requests. "
             "Without [tee] barbican_url on the scheduler, TEEFilter does "
             "not apply the floors (releases are still held to them)."),
    cfg.FloatOpt(
        "floor_read_timeout",
        default=5.0,
        min=0.1,
        help="Seconds TEEFilter waits for each request of a platform TCB "
             "floor read from Barbican (the token request to Keystone, "
             "then GET /v1/tee/floors). A read runs while a request is "
             "being scheduled, so keep it short: a Barbican that does not "
             "answer in time counts as unreachable (the last floors read "
             "stay in force; before any were read, amd-sev-snp requests "
             "are refused). [tee_barbican] timeout, when set, may only "
             "shorten it."),
    cfg.FloatOpt(
        "weight_multiplier",
        default=1.0,
        help="Multiplier of TEEWeigher, which prefers hosts with more free "
             "encryption slots of the requested model. Negative values "
             "pack confidential guests onto fewer hosts instead."),
]


COMPUTE_OPTS = [
    cfg.URIOpt(
        "barbican_url",
        help="Barbican's endpoint (e.g. https://key-manager.example:9311), "
             "where openstack-tee's /v1/tee API runs. Needed on compute "
             "hosts for SEV and SEV-ES launch-time attestation, and by "
             "nova-scheduler for the platform TCB floors TEEFilter "
             "applies."),
    cfg.IntOpt(
        "attestation_timeout", default=30, min=1,
        help="Seconds to wait for each call to the attestation service "
             "while a confidential guest is launched (paused)."),
    cfg.IntOpt(
        "attestation_retries", default=2, min=0,
        help="Retries of a call to the attestation service that failed on "
             "the network. A refusal is never retried."),
    cfg.StrOpt(
        "vcek_path",
        help="This host's VCEK (DER or PEM, optionally followed by its "
             "ASK/ARK), as snphost fetches it from AMD KDS for the chip "
             "and current TCB. With barbican_url, nova-compute imports it "
             "into Barbican's endorsement cache at start and whenever the "
             "file changes, so guests need not send their VCEK. Barbican "
             "verifies it against its pinned AMD roots: the host adds no "
             "trust."),
    cfg.StrOpt(
        "barbican_noauth_project",
        help="Development and tests only: with no Keystone, call "
             "barbican_url with this X-Project-Id and the service role "
             "instead of a token from [tee_barbican]."),
]

API_OPTS = [
    cfg.BoolOpt(
        "api_noauth_identity",
        default=False,
        help="Development and tests only (nova-api with auth_strategy "
             "noauth2 and a Barbican without Keystone): the tee_secret "
             "check at server create calls Barbican (through castellan and "
             "the /v1/tee API) with the request's project, user and roles "
             "as X-Project-Id, X-User-Id and X-Roles headers instead of "
             "the user's token. Never set it in production."),
]

BARBICAN_GROUP = cfg.OptGroup(
    "tee_barbican", title="Service credentials for the attestation service",
    help="A keystoneauth section (auth_type, auth_url, username, ... ) with "
         "which nova-compute asks Barbican for SEV launch sessions and "
         "nova-scheduler reads the platform TCB floors. The user needs "
         "the service role.")


def register_opts(conf: cfg.ConfigOpts) -> None:
    conf.register_group(GROUP)
    conf.register_opts(SCHEDULER_OPTS, group=GROUP)
    conf.register_opts(COMPUTE_OPTS, group=GROUP)
    conf.register_opts(API_OPTS, group=GROUP)
    conf.register_group(BARBICAN_GROUP)
    try:
        from keystoneauth1 import loading as ks_loading

        ks_loading.register_session_conf_options(conf, BARBICAN_GROUP.name)
        ks_loading.register_auth_conf_options(conf, BARBICAN_GROUP.name)
    except cfg.DuplicateOptError:
        pass


def list_opts() -> list[tuple[cfg.OptGroup, list[cfg.Opt]]]:
    from keystoneauth1 import loading as ks_loading

    ks = (ks_loading.get_session_conf_options()
          + ks_loading.get_auth_common_conf_options())
    return [(GROUP, SCHEDULER_OPTS + COMPUTE_OPTS + API_OPTS),
            (BARBICAN_GROUP, ks)]
