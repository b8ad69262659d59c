"""TEEFilter: confidential guests only on hosts that can attest them."""

from __future__ import annotations

from typing import Any

from nova.scheduler import filters
from oslo_config import cfg
from oslo_log import log as logging

from nova_tee import conf as tee_conf
from nova_tee.scheduler import floors as tee_floors
from nova_tee.scheduler import request as tee_request
from nova_tee import specs

LOG = logging.getLogger(__name__)
CONF = cfg.CONF
tee_conf.register_opts(CONF)


class TEEFilter(filters.BaseHostFilter):
    """Pass a host only if it can launch and attest the requested TEE.

    The host must offer the requested model (``tee.models``), have at least
    ``[tee] min_free_slots`` free encryption slots, and meet the flavor's
    ``tee:min_firmware`` and ``tee:min_tcb_*``. A host that does not report
    a value it is asked to meet fails: an unknown TCB is not a good one.

    Only flavors with ``tee:`` keys are judged. Every other request,
    upstream SEV/TDX flavors and images included, passes every host, as
    it would without this filter. A host without ``tee.*`` stats (its
    nova-compute does not run TEELibvirtDriver, or has not reported since
    it was upgraded) fails ``tee:`` requests with a reason saying so.

    With ``[tee] barbican_url`` set, an SEV-SNP host must also meet the
    platform TCB floor of its product (``tee.snp_product``) as Barbican
    answers it (:mod:`nova_tee.scheduler.floors`, cached for ``[tee]
    floor_cache_ttl`` seconds; the last floors read stay in force while
    Barbican cannot be read, and before any were read every host fails).
    """

    RUN_ON_REBUILD = False

    def __init__(self) -> None:
        # (spec, need, error, debug, floors applied, floors) of the last
        # RequestSpec, replaced as a whole so concurrent requests never
        # see a mixed tuple. floors: None when never read.
        self._last: tuple[Any, tee_request.Need | None, str | None,
                          bool, bool, tee_floors.Floors | None] = (
            None, None, None, False, False, None)

    def host_passes(self, host_state: Any, spec_obj: Any) -> bool:
        last = self._last
        if last[0] is not spec_obj:
            need, error = tee_request.parse_need(spec_obj,
                                                 CONF.tee.min_free_slots)
            # Whether to explain refusals is decided once per request: a
            # log call per host would cost more than the check itself.
            applied = bool(need is not None and (
                need.model == "amd-sev-snp") and CONF.tee.barbican_url)
            # Read (at most once per TTL) per request, not per host.
            floors = tee_floors.CACHE.current() if applied else None
            last = self._last = (spec_obj, need, error,
                                 LOG.isEnabledFor(logging.DEBUG), applied,
                                 floors)
            if error is not None:
                LOG.info("TEEFilter: the request cannot be placed: %s",
                         error)
        need = last[1]
        if need is None:
            return last[2] is None
        # The parsed offer cached on the HostState (see request.offer),
        # looked up inline: this runs once per host per request.
        cached = host_state.__dict__.get("_tee_offer")
        if cached is not None and cached[0] is host_state.stats:
            offer = cached[1]
        else:
            offer = tee_request.offer(host_state)
        reason = self._refusal(offer, need)
        if reason is None and last[4]:
            reason = tee_floors.refusal(last[5], offer.snp_product,
                                        offer.snp_tcb)
            if offer.snp_product is None and last[5] is not None:
                _unchecked_once(host_state.host)
        if reason is None:
            return True
        if last[3]:
            LOG.debug("TEEFilter: host %s fails: %s", host_state.host,
                      reason)
        return False

    @staticmethod
    def _refusal(offer: tee_request.Offer,
                 need: tee_request.Need) -> str | None:
        if need.model not in offer.models:
            if not offer.reported:
                return ("reports no tee.* stats (its nova-compute does not "
                        "run libvirt_tee.TEELibvirtDriver, or has not "
                        "reported since it was upgraded), so it cannot "
                        "meet the flavor's tee: extra specs")
            return (f"does not offer {need.model} (it offers "
                    f"{', '.join(sorted(offer.models)) or 'none'})")
        free = offer.free[need.model]
        if free < need.min_free:
            return (f"{free} free {need.model} slots, {need.min_free} "
                    "needed")
        if need.min_firmware is not None and (
                offer.firmware is None
                or offer.firmware[:2] < need.min_firmware):
            return "firmware API is below the flavor's minimum"
        want = need.min_tcb
        if want is not None:
            have = offer.snp_tcb
            if have is None:
                return "reports no SNP TCB"
            if (have[0] < want[0] or have[1] < want[1] or have[2] < want[2]
                    or have[3] < want[3]):
                low = [name for i, name in enumerate(specs.TCB_KEYS)
                       if have[i] < want[i]]
                return f"SNP TCB below minimum in {', '.join(low)}"
        return None


_UNCHECKED: set[str] = set()


def _unchecked_once(host: str) -> None:
    """Say once per host that its SNP TCB is not held to the floors here."""
    if host in _UNCHECKED:
        return
    _UNCHECKED.add(host)
    LOG.warning("TEEFilter: host %s reports no SNP product "
                "(tee.snp_product: its nova-compute predates this "
                "release), so the platform TCB floors are applied to it "
                "at release only, not at placement, until it is upgraded",
                host)
