"""What a RequestSpec needs and what a host offers, each parsed once.

Filters and weighers run once per host per request. The flavor and image do
not change between hosts, so the parsed need is remembered for the last
RequestSpec seen (by identity): a request that asks for no TEE then costs
one identity check per host. A host's ``tee.*`` stats change only when its
compute node reports, so their parsed form is kept on the HostState next to
the stats dict it was parsed from.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from nova_tee import specs
from nova_tee import stats as tee_stats

_IMAGE_PROPS = ("hw_mem_encryption", "hw_mem_encryption_model")
_NO_STATS: dict[str, str] = {}


@dataclasses.dataclass(frozen=True)
class Need:
    """A TEE request, with the config it is judged against folded in."""

    model: str
    min_free: int
    min_firmware: tuple[int, int] | None
    min_tcb: tuple[int, int, int, int] | None


@dataclasses.dataclass(frozen=True)
class Offer:
    """A host's ``tee.*`` stats, parsed."""

    models: frozenset[str]
    free: dict[str, int]
    firmware: tuple[int, ...] | None
    snp_tcb: tuple[int, ...] | None
    # Whether the host reports our stats scheme at all (``tee.v``).
    reported: bool = True
    # milan, genoa or turin: whose TCB floor applies (None: unknown).
    snp_product: str | None = None

    @classmethod
    def from_stats(cls, stats: dict[str, str]) -> Offer:
        models = frozenset(m for m in stats.get(
            tee_stats.MODELS_KEY, "").split(",") if m)
        tcb = tee_stats.parse_dotted(stats.get(tee_stats.SNP_TCB_KEY))
        return cls(models=models,
                   free={m: tee_stats.free_slots(stats, m) for m in models},
                   firmware=tee_stats.parse_dotted(
                       stats.get(tee_stats.FW_KEY)),
                   snp_tcb=tcb if tcb is not None and len(tcb) >= 4
                   else None,
                   reported=tee_stats.VERSION_KEY in stats,
                   snp_product=stats.get(tee_stats.SNP_PRODUCT_KEY))


def image_props(spec_obj: Any) -> dict[str, Any]:
    image = getattr(spec_obj, "image", None)
    if image is None or "properties" not in image:
        return {}
    props = image.properties
    return {name: props.get(name) for name in _IMAGE_PROPS
            if props.get(name) is not None}


def parse_need(spec_obj: Any, min_free: int
               ) -> tuple[Need | None, str | None]:
    """(need, error) of a RequestSpec; error names conflicting keys.

    Only a flavor with ``tee:`` keys asks anything of this suite. An
    upstream SEV/TDX request (``hw:mem_encryption*`` alone, in the flavor
    or the image) has no need here: upstream's placement traits and
    ``MEM_ENCRYPTION_CONTEXT`` inventory already place it, on hosts with
    or without our ``tee.*`` stats (mid-upgrade, or on another driver).
    """
    extra_specs = spec_obj.flavor.extra_specs
    if not any(specs.mentions_tee(key) for key in extra_specs):
        return None, None
    try:
        request = specs.request_from(extra_specs, image_props(spec_obj))
    except specs.SpecError as exc:
        return None, str(exc)
    if request is None:
        return None, None
    return Need(model=request.model, min_free=min_free,
                min_firmware=request.min_firmware,
                min_tcb=request.min_tcb), None


def offer(host_state: Any) -> Offer:
    """The host's parsed offer, re-parsed only when its stats change."""
    stats = host_state.stats or _NO_STATS
    cached = host_state.__dict__.get("_tee_offer")
    if cached is not None and cached[0] is stats:
        parsed: Offer = cached[1]
        return parsed
    parsed = Offer.from_stats(stats)
    host_state._tee_offer = (stats, parsed)
    return parsed
