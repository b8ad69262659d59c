"""Options of the ``[tee_sealed]`` group: the sealed store's keys."""

from __future__ import annotations

from oslo_config import cfg

GROUP = cfg.OptGroup("tee_sealed", title="openstack-tee sealed store")

OPTS = [
    cfg.StrOpt("kek_file",
               help="File with the base64 of the 32-byte key-encryption "
                    "key that seals new secrets (mode 0600, owned by the "
                    "barbican user). Without it the store and the /v1/tee "
                    "API refuse to start."),
    cfg.ListOpt("previous_kek_files", default=[],
                help="Files of earlier KEKs, still needed to open secrets "
                     "sealed before a rotation until `openstack-tee "
                     "rewrap` has re-sealed them under the current KEK."),
]


def register_opts(conf: cfg.ConfigOpts) -> None:
    conf.register_group(GROUP)
    conf.register_opts(OPTS, group=GROUP)


def list_opts() -> list[tuple[cfg.OptGroup, list[cfg.Opt]]]:
    return [(GROUP, list(OPTS))]
