"""Validators for the ``tee:`` extra-spec namespace.

Registered through the ``nova.api.extra_spec_validators`` entry point, so
``openstack flavor set --property tee:...`` is checked by Nova itself
(API microversion 2.86 and later). Once this namespace is registered, Nova
rejects unknown ``tee:*`` keys. Checks that need several keys at once
(a ``tee:`` key against ``hw:mem_encryption*``) live in
:mod:`nova_tee.api.middleware`, because Nova validates one key at a time.
"""

from __future__ import annotations

from typing import Any

from nova.api.validation.extra_specs import base

from nova_tee import specs


def _value(kind: Any, description: str) -> dict[str, Any]:
    if kind == "bool":
        return {"type": bool, "description": description}
    if kind == "byte":
        # A pattern, not Nova's int (which takes ' 8', '+8' and '1_0',
        # values the scheduler would then refuse on every host).
        return {"type": str, "pattern": specs.BYTE_PATTERN,
                "description": f"{description} An integer from 0 to 255."}
    if kind == "version":
        return {"type": str, "pattern": specs.VERSION_PATTERN,
                "description": description}
    return {"type": str, "enum": list(kind), "description": description}


def register() -> list[base.ExtraSpecValidator]:
    out = []
    for name, (kind, models, description) in sorted(specs.KEYS.items()):
        out.append(base.ExtraSpecValidator(
            name=name,
            description=(f"{description} Applies to: {', '.join(models)}. "
                         "Needs hw:mem_encryption=true."),
            value=_value(kind, description)))
    return out
