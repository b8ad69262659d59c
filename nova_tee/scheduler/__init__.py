"""Attestation-aware placement: :class:`TEEFilter` and :class:`TEEWeigher`.

Enable with, in nova.conf::

    [filter_scheduler]
    available_filters = nova.scheduler.filters.all_filters
    available_filters = nova_tee.scheduler.TEEFilter
    enabled_filters = ...,TEEFilter
    weight_classes = nova.scheduler.weights.all_weighers
    weight_classes = nova_tee.scheduler.TEEWeigher
"""

from __future__ import annotations

from nova_tee.scheduler.filters import TEEFilter
from nova_tee.scheduler.weights import TEEWeigher

__all__ = ["TEEFilter", "TEEWeigher"]
