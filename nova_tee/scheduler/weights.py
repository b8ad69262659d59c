"""TEEWeigher: prefer hosts with more free encryption slots."""

from __future__ import annotations

from typing import Any

from nova.scheduler import weights
from oslo_config import cfg

from nova_tee import conf as tee_conf
from nova_tee.scheduler import request as tee_request
from nova_tee import stats as tee_stats

CONF = cfg.CONF
tee_conf.register_opts(CONF)


class TEEWeigher(weights.BaseHostWeigher):
    """Weight = free slots of the requested model (0 for other guests)."""

    def __init__(self) -> None:
        self._cache = tee_request.RequestCache()

    def weight_multiplier(self, host_state: Any) -> float:
        return float(CONF.tee.weight_multiplier)

    def _weigh_object(self, host_state: Any,
                      weight_properties: Any) -> float:
        request, _ = tee_request.tee_request(self._cache, weight_properties)
        if request is None:
            return 0.0
        return float(tee_stats.free_slots(host_state.stats or {},
                                          request.model))
