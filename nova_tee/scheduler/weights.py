"""TEEWeigher: prefer hosts with more free encryption slots."""

from __future__ import annotations

from typing import Any

from nova.scheduler import weights
from oslo_config import cfg

from nova_tee import conf as tee_conf
from nova_tee.scheduler import request as tee_request

CONF = cfg.CONF
tee_conf.register_opts(CONF)


class TEEWeigher(weights.BaseHostWeigher):
    """Weight = free slots of the requested model (0 for other guests)."""

    def __init__(self) -> None:
        self._last: tuple[Any, tee_request.Need | None] = (None, None)

    def weight_multiplier(self, host_state: Any) -> float:
        return float(CONF.tee.weight_multiplier)

    def _weigh_object(self, host_state: Any,
                      weight_properties: Any) -> float:
        last = self._last
        if last[0] is not weight_properties:
            need, _ = tee_request.parse_need(weight_properties, 1)
            last = self._last = (weight_properties, need)
        need = last[1]
        if need is None:
            return 0.0
        return float(tee_request.offer(host_state).free.get(need.model, 0))
