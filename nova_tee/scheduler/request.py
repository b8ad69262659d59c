"""The TEE request of a RequestSpec, computed once per scheduling request.

Filters and weighers run once per host; the flavor and image do not change
between hosts, so the parsed request is remembered for the last RequestSpec
seen (by identity), which makes a request that asks for no TEE cost one
identity check per host.
"""

from __future__ import annotations

import threading
from typing import Any

from nova_tee import specs

_IMAGE_PROPS = ("hw_mem_encryption", "hw_mem_encryption_model")


class RequestCache(threading.local):
    def __init__(self) -> None:
        self.spec: Any = None
        self.request: specs.TEERequest | None = None
        self.error: str | None = None


def _image_props(spec_obj: Any) -> dict[str, Any]:
    image = getattr(spec_obj, "image", None)
    if image is None or "properties" not in image:
        return {}
    props = image.properties
    return {name: props.get(name) for name in _IMAGE_PROPS
            if props.get(name) is not None}


def tee_request(cache: RequestCache, spec_obj: Any
                ) -> tuple[specs.TEERequest | None, str | None]:
    """(request, error) for ``spec_obj``; error names conflicting keys."""
    if cache.spec is spec_obj:
        return cache.request, cache.error
    request, error = None, None
    try:
        request = specs.request_from(spec_obj.flavor.extra_specs,
                                     _image_props(spec_obj))
    except specs.SpecError as exc:
        error = str(exc)
    cache.spec, cache.request, cache.error = spec_obj, request, error
    return request, error
