"""TEEFilter: confidential guests only on hosts that can attest them."""

from __future__ import annotations

from typing import Any

from nova.scheduler import filters
from oslo_config import cfg
from oslo_log import log as logging

from nova_tee import conf as tee_conf
from nova_tee.scheduler import request as tee_request
from nova_tee import specs
from nova_tee import stats as tee_stats

LOG = logging.getLogger(__name__)
CONF = cfg.CONF
tee_conf.register_opts(CONF)


class TEEFilter(filters.BaseHostFilter):
    """Pass a host only if it can launch and attest the requested TEE.

    The host must offer the requested model (``tee.models``), have at least
    ``[tee] min_free_slots`` free encryption slots, and meet the flavor's
    ``tee:min_firmware`` and ``tee:min_tcb_*``. A host that does not report
    a value it is asked to meet fails: an unknown TCB is not a good one.
    Requests for ordinary guests pass every host.
    """

    RUN_ON_REBUILD = False

    def __init__(self) -> None:
        self._cache = tee_request.RequestCache()

    def host_passes(self, host_state: Any, spec_obj: Any) -> bool:
        request, error = tee_request.tee_request(self._cache, spec_obj)
        if request is None:
            if error is not None:
                LOG.debug("TEEFilter: %s", error)
                return False
            return True
        reason = self._refusal(host_state.stats or {}, request)
        if reason is not None:
            LOG.debug("TEEFilter: host %s fails: %s", host_state.host,
                      reason)
            return False
        return True

    @staticmethod
    def _refusal(stats: dict[str, str],
                 request: specs.TEERequest) -> str | None:
        models = stats.get(tee_stats.MODELS_KEY, "")
        if request.model not in models.split(","):
            return f"does not offer {request.model}"
        free = tee_stats.free_slots(stats, request.model)
        if free < CONF.tee.min_free_slots:
            return (f"{free} free {request.model} slots, "
                    f"{CONF.tee.min_free_slots} needed")
        if request.min_firmware is not None:
            fw = tee_stats.parse_dotted(stats.get(tee_stats.FW_KEY))
            if fw is None or fw[:2] < request.min_firmware:
                return (f"firmware API {stats.get(tee_stats.FW_KEY)} is "
                        "below the flavor's minimum")
        if request.min_tcb is not None:
            tcb = tee_stats.parse_dotted(stats.get(tee_stats.SNP_TCB_KEY))
            if tcb is None or len(tcb) < 4:
                return "reports no SNP TCB"
            low = [name for name, have, want in zip(
                specs.TCB_KEYS, tcb[:4], request.min_tcb, strict=True)
                if have < want]
            if low:
                return f"SNP TCB below minimum in {', '.join(low)}"
        return None
