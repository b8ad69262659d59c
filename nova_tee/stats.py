"""The ``tee.*`` ComputeNode stats key scheme (version 1).

The driver writes these keys from ``get_available_resource()``; Nova's
resource tracker stores them in ``ComputeNode.stats`` and the scheduler's
``HostState.stats`` carries them to :class:`nova_tee.scheduler.TEEFilter`
and the weigher. Values are strings, as ComputeNode stats are.

==========================  ==============================================
key                         value
==========================  ==============================================
``tee.v``                   scheme version, ``1``
``tee.models``              comma-separated models the host can launch:
                            ``amd-sev``, ``amd-sev-es``, ``amd-sev-snp``,
                            ``intel-tdx``
``tee.<model>.slots``       encryption contexts (ASIDs / TDs) in total
``tee.<model>.used``        contexts used by guests on the host now
``tee.fw``                  AMD secure-processor firmware API, ``MAJ.MIN``
``tee.fw_build``            its build number
``tee.snp_tcb``             SNP committed TCB as ``BL.TEE.SNP.UCODE``
                            (plus ``.FMC`` on Turin)
``tee.tdx_module``          TDX module version, where the host shows it
``tee.snp_product``         the CPU's SNP product: ``milan``, ``genoa``
                            or ``turin`` (whose TCB floor applies)
==========================  ==============================================
"""

from __future__ import annotations

from collections.abc import Mapping

VERSION_KEY = "tee.v"
VERSION = "1"
MODELS_KEY = "tee.models"
FW_KEY = "tee.fw"
FW_BUILD_KEY = "tee.fw_build"
SNP_TCB_KEY = "tee.snp_tcb"
TDX_MODULE_KEY = "tee.tdx_module"
SNP_PRODUCT_KEY = "tee.snp_product"


def slots_key(model: str) -> str:
    return f"tee.{model}.slots"


def used_key(model: str) -> str:
    return f"tee.{model}.used"


def free_slots(stats: Mapping[str, str], model: str) -> int:
    """Free encryption slots for ``model`` (0 if unknown or malformed)."""
    try:
        total = int(stats.get(slots_key(model), 0))
        used = int(stats.get(used_key(model), 0))
    except (TypeError, ValueError):
        return 0
    return max(0, total - used)


def parse_dotted(value: str | None) -> tuple[int, ...] | None:
    if not value:
        return None
    try:
        return tuple(int(p) for p in value.split("."))
    except ValueError:
        return None
