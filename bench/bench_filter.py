"""TEEFilter's cost per host against two of Nova's own filters.

10,000 HostState objects (Nova's scheduler test fakes, half of them SNP
hosts with ``tee.*`` stats, all with a live compute service record), one
RequestSpec asking for an SEV-SNP guest with a minimum TCB and one asking
for an ordinary guest. Every filter sees the same hosts and specs in the
same process; the medians of several rounds are compared:

* TEEFilter against ComputeFilter (target: ratio >= 1, i.e. TEEFilter is
  no slower),
* TEEFilter against ComputeCapabilitiesFilter (target: TEEFilter takes at
  most 0.6 of its time).

Ratios are "other filter's time / TEEFilter's time" for the first and
"TEEFilter's time / ComputeCapabilitiesFilter's time" for the second.
"""

from __future__ import annotations

import datetime
import os
import sys
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from nova import config as nova_config  # noqa: E402
from nova import objects  # noqa: E402
from nova.scheduler.filters import compute_capabilities_filter  # noqa: E402
from nova.scheduler.filters import compute_filter  # noqa: E402
from nova.tests.unit.scheduler import fakes  # noqa: E402

from bench import common  # noqa: E402
from nova_tee.scheduler import filters as tee_filters  # noqa: E402

HOSTS = 10_000


def _hosts() -> list[Any]:
    now = datetime.datetime.now(datetime.UTC).replace(tzinfo=None)
    out = []
    for i in range(HOSTS):
        stats = {}
        if i % 2:
            stats = {"tee.v": "1", "tee.models": "amd-sev,amd-sev-snp",
                     "tee.amd-sev-snp.slots": "450",
                     "tee.amd-sev-snp.used": str(i % 400),
                     "tee.fw": "1.55", "tee.snp_tcb": f"3.0.{i % 10}.115"}
        service = {"disabled": False, "updated_at": now, "created_at": now,
                   "forced_down": False, "last_seen_up": now}
        out.append(fakes.FakeHostState(
            f"host{i}", f"node{i}",
            {"stats": stats, "service": service,
             "hypervisor_type": "QEMU", "hypervisor_version": 9002000,
             "free_ram_mb": 65536}))
    return out


def _spec(extra_specs: dict[str, str]) -> Any:
    return objects.RequestSpec(
        flavor=objects.Flavor(extra_specs=extra_specs),
        image=objects.ImageMeta(properties=objects.ImageMetaProps()))


def run() -> list[str]:
    nova_config.parse_args([], default_config_files=[])
    objects.register_all()
    hosts = _hosts()
    specs = {
        "tee": _spec({"hw:mem_encryption": "true",
                      "hw:mem_encryption_model": "amd-sev-snp",
                      "tee:min_tcb_snp": "5"}),
        "plain": _spec({"hw:cpu_policy": "shared"}),
    }
    filters = {
        "TEEFilter": tee_filters.TEEFilter(),
        "ComputeFilter": compute_filter.ComputeFilter(),
        "ComputeCapabilitiesFilter":
            compute_capabilities_filter.ComputeCapabilitiesFilter(),
    }
    lines = []
    for kind, spec in specs.items():
        medians = {}
        for name, filt in filters.items():
            def sweep(filt: Any = filt, spec: Any = spec) -> None:
                for host in hosts:
                    filt.host_passes(host, spec)

            medians[name] = common.median_seconds(sweep, rounds=5)
        tee = medians["TEEFilter"]
        lines.append(common.ratio_line(
            f"teefilter_vs_computefilter_{kind}",
            medians["ComputeFilter"] / tee, ">=", 1.0))
        lines.append(common.ratio_line(
            f"teefilter_over_computecapabilitiesfilter_{kind}",
            tee / medians["ComputeCapabilitiesFilter"], "<=", 0.6))
        lines.append("  medians per host: " + ", ".join(
            f"{name}={value / HOSTS * 1e6:.2f}us"
            for name, value in medians.items())
            + f" ({HOSTS} hosts, rounds=5)")
    return lines


if __name__ == "__main__":
    print("\n".join(run()))
