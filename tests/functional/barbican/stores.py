"""Barbican's secret stores, as a project's admin chooses them.

Most tests make sealed secrets with ``POST /v1/tee/secrets`` (the project's
preferred store untouched, as the docs advise). The tests of the other
path, a project that prefers the ``tee_sealed`` store so that Barbican's
own ``POST /v1/secrets`` seals, set it here.
"""

from __future__ import annotations

from collections.abc import Mapping

import requests


def prefer_sealed_store(url: str, headers: Mapping[str, str]) -> None:
    """Make the ``tee_sealed`` store the project's preferred store.

    ``headers`` name the project (and a role Barbican lets choose).
    """
    stores = requests.get(f"{url}/v1/secret-stores", headers=headers,
                          timeout=30).json()
    sealed = [s for s in stores["secret_stores"]
              if s["secret_store_ref"] and "tee" in s["name"].lower()]
    if not sealed:
        raise AssertionError(f"no tee_sealed store in {stores}")
    resp = requests.post(sealed[0]["secret_store_ref"] + "/preferred",
                         headers=headers, timeout=30)
    if resp.status_code != 204:
        raise AssertionError(f"cannot prefer the sealed store: "
                             f"{resp.status_code} {resp.text}")
