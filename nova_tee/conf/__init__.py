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
        help="TEEFilter passes a host for a confidential guest only if it "
             "has at least this many free encryption slots (ASIDs) of the "
             "requested model. Raise it to keep headroom for rebuilds and "
             "evacuations, which need a slot on the target."),
    cfg.FloatOpt(
        "weight_multiplier",
        default=1.0,
        help="Multiplier of TEEWeigher, which prefers hosts with more free "
             "encryption slots of the requested model. Negative values "
             "pack confidential guests onto fewer hosts instead."),
]


def register_opts(conf: cfg.ConfigOpts) -> None:
    conf.register_group(GROUP)
    conf.register_opts(SCHEDULER_OPTS, group=GROUP)


def list_opts() -> list[tuple[cfg.OptGroup, list[cfg.Opt]]]:
    return [(GROUP, list(SCHEDULER_OPTS))]
