"""A host's SEV-SNP product and committed TCB as one placement trait.

Nova's REST API does not show ComputeNode stats, so nova-compute (the
suite's libvirt driver) also publishes its host's SNP product and TCB as
one custom trait on the compute node's resource provider, which an
administrator reads through placement (``openstack tee tcb report``)::

    CUSTOM_TEE_SNP_TCB_<PRODUCT>_BL<n>_TEE<n>_SNP<n>_UC<n>[_FMC<n>]

e.g. ``CUSTOM_TEE_SNP_TCB_MILAN_BL3_TEE0_SNP8_UC115``. A provider carries
at most one; the driver removes the stale one when the firmware changes.
The trait is what the host says of itself (the compute host is not
trusted): the report uses it to find hosts to update, never to release.
"""

from __future__ import annotations

import re

from barbican_tee.attestation import snp
from barbican_tee.attestation.snp_certs import Product

PREFIX = "CUSTOM_TEE_SNP_TCB_"
_PRODUCTS = {p.name: p for p in (Product.MILAN, Product.GENOA,
                                 Product.TURIN)}
_PATTERN = re.compile(
    r"CUSTOM_TEE_SNP_TCB_(?P<product>MILAN|GENOA|TURIN)"
    r"_BL(?P<bootloader>\d{1,3})_TEE(?P<tee>\d{1,3})"
    r"_SNP(?P<snp>\d{1,3})_UC(?P<microcode>\d{1,3})"
    r"(?:_FMC(?P<fmc>\d{1,3}))?")


def encode(product: Product, tcb: snp.TcbVersion) -> str:
    """The trait of a host of ``product`` whose committed TCB is ``tcb``."""
    if product.name not in _PRODUCTS:
        raise ValueError(f"{product.name} is not an SEV-SNP product")
    name = (f"{PREFIX}{product.name}_BL{tcb.bootloader}_TEE{tcb.tee}"
            f"_SNP{tcb.snp}_UC{tcb.microcode}")
    if product is Product.TURIN:
        name += f"_FMC{tcb.fmc or 0}"
    return name


def decode(trait: str) -> tuple[Product, snp.TcbVersion] | None:
    """``(product, tcb)`` of a host TCB trait; None for any other trait.

    Strict: a value above 255, FMC outside Turin or no FMC on Turin is
    not a TCB trait (a report shows such a host as unknown).
    """
    match = _PATTERN.fullmatch(trait)
    if match is None:
        return None
    product = _PRODUCTS[match["product"]]
    if (match["fmc"] is None) != (product is not Product.TURIN):
        return None
    values = {k: int(v) for k, v in match.groupdict().items()
              if k != "product" and v is not None}
    if any(v > 255 for v in values.values()):
        return None
    return product, snp.TcbVersion(**values)


def is_tcb_trait(trait: str) -> bool:
    """Whether ``trait`` is in this scheme's namespace (valid or not)."""
    return trait.startswith(PREFIX) and any(
        trait.startswith(f"{PREFIX}{name}_") for name in _PRODUCTS)
