"""Configuration options of barbican_tee (oslo.config).

One module per option group, each with ``register_opts(conf)`` and
``list_opts()``; :func:`list_opts` here gathers them for
``oslo-config-generator`` (entry point ``oslo.config.opts``).
"""

from __future__ import annotations

from oslo_config import cfg

from barbican_tee.conf import api
from barbican_tee.conf import attestation
from barbican_tee.conf import sealed

CONF = cfg.CONF

_MODULES = (attestation, sealed, api)


def register_opts(conf: cfg.ConfigOpts) -> None:
    for module in _MODULES:
        module.register_opts(conf)


def list_opts() -> list[tuple[cfg.OptGroup, list[cfg.Opt]]]:
    out: list[tuple[cfg.OptGroup, list[cfg.Opt]]] = []
    for module in _MODULES:
        out.extend(module.list_opts())
    return out
