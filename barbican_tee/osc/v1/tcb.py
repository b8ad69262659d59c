"""``openstack tee tcb report``: hosts below the TCB floor, and their guests.

For an administrator, with Barbican's, placement's and Nova's APIs only:

1. the effective SEV-SNP floors from Barbican (``GET /v1/tee/floors``);
2. each compute node's SNP product and TCB from placement: the suite's
   libvirt driver publishes them as one trait on the node's resource
   provider (:mod:`barbican_tee.attestation.tcb_trait`);
3. for every host below its product's floor (and every SEV host that
   publishes no TCB trait: "unknown", never taken as up to date), the
   confidential servers on it from Nova
   (``GET /servers/detail?all_tenants=1&node=...``), with their projects.

The comparison is the release path's own (:meth:`snp.TcbVersion.meets`
against the floor as :func:`barbican_tee.api.floors.parse` reads it).
The TCB a host publishes is what the host says of itself: the report finds
the hosts to update; releases still check each guest's signed report.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
import dataclasses
from typing import Any
import urllib.parse

from osc_lib.command import command
from osc_lib import exceptions

from barbican_tee.attestation import snp
from barbican_tee.attestation.snp_certs import Product
from barbican_tee.attestation import tcb_trait
from barbican_tee.client import rest

COLUMNS = ("Host", "Product", "TCB", "Floor", "Instance", "Name",
           "Project", "Status", "Action")
PLACEMENT_VERSION = "placement 1.14"  # root_provider_uuid
COMPUTE_VERSION = "2.47"  # the server's flavor, with its extra specs
PAGE = 500
# Traits of a host where SEV or SEV-SNP guests may run: one without a TCB
# trait is reported as unknown.
SEV_HOST_TRAITS = frozenset({"CUSTOM_TEE_SNP_TCB_REPORTED",
                             "HW_CPU_X86_AMD_SEV",
                             "HW_CPU_X86_AMD_SEV_ES",
                             "HW_CPU_X86_AMD_SEV_SNP"})
ACTION_GUEST = ("live migration stays refused; cold-migrate "
                "(openstack server migrate) to an up-to-date host, "
                "where the guest attests again")
ACTION_HOST = "update the host's firmware (no confidential guests on it)"
ACTION_UNKNOWN = ("host publishes no SNP TCB trait (nova-compute without "
                  "openstack-tee's driver, or its firmware unread): check "
                  "it; ") + ACTION_GUEST
ACTION_UNKNOWN_HOST = ("host publishes no SNP TCB trait: check its "
                       "firmware and nova-compute")

# path (relative to the service's endpoint) -> decoded JSON body
Get = Callable[[str], Any]


class ReportError(Exception):
    """An answer the report cannot use (the message says which)."""


@dataclasses.dataclass(frozen=True)
class Host:
    """A compute node's resource provider and the TCB it publishes."""

    name: str
    product: Product | None
    tcb: snp.TcbVersion | None


def tcb_text(tcb: snp.TcbVersion | None) -> str:
    """``BL.TEE.SNP.UCODE[.FMC]``, as the ``tee.snp_tcb`` stat."""
    if tcb is None:
        return "unknown"
    parts = [tcb.bootloader, tcb.tee, tcb.snp, tcb.microcode]
    if tcb.fmc is not None:
        parts.append(tcb.fmc)
    return ".".join(str(p) for p in parts)


def snp_floors(views: list[dict[str, Any]]) -> dict[Product, snp.TcbVersion]:
    """The effective SNP floors of a ``GET /v1/tee/floors`` answer."""
    from barbican_tee.api import floors as floors_mod

    out: dict[Product, snp.TcbVersion] = {}
    for view in views:
        name = view.get("product")
        product = floors_mod.SNP_PRODUCTS.get(str(name))
        error = view.get("error")
        if product is not None and error is not None:
            # Never "no floor": which hosts are below it is unknown.
            code = error.get("code") if isinstance(error, dict) else error
            raise ReportError(f"Barbican cannot give the {name} floor "
                              f"({code}); set it again with openstack "
                              f"tee floor set {name}")
        effective = view.get("effective")
        if product is None or effective is None:
            continue
        try:
            floor = floors_mod.parse(str(name), effective)
        except (floors_mod.FloorError, TypeError) as exc:
            raise ReportError(f"the {name} floor is unreadable: "
                              f"{exc}") from None
        assert isinstance(floor, snp.TcbVersion)
        out[product] = floor
    return out


def sev_hosts(get: Get) -> list[Host]:
    """Compute nodes where SEV/SNP guests may run, with their TCB.

    A compute node is a root provider; the TCB trait is on it, the SEV
    traits on it (Nova 33) or on its memory encryption children (Nova 34).
    """
    providers = get("/resource_providers").get("resource_providers")
    if not isinstance(providers, list):
        raise ReportError("placement's answer has no resource_providers")
    trees: dict[str, set[str]] = {}
    for rp in providers:
        traits = get(f"/resource_providers/{rp['uuid']}/traits").get(
            "traits") or []
        root = rp.get("root_provider_uuid") or rp["uuid"]
        trees.setdefault(root, set()).update(
            t for t in traits
            if root == rp["uuid"] or not tcb_trait.is_tcb_trait(t))
    hosts = []
    for rp in providers:
        traits = trees.get(rp["uuid"])
        if traits is None:
            continue
        tcbs = [t for t in traits if tcb_trait.is_tcb_trait(t)]
        decoded = tcb_trait.decode(tcbs[0]) if len(tcbs) == 1 else None
        if decoded is not None:
            hosts.append(Host(rp["name"], *decoded))
        elif tcbs or SEV_HOST_TRAITS & traits:
            # None, several, or one that does not decode: unknown.
            hosts.append(Host(rp["name"], None, None))
    return sorted(hosts, key=lambda h: h.name)


def is_confidential(server: dict[str, Any]) -> bool:
    specs = (server.get("flavor") or {}).get("extra_specs") or {}
    return (str(specs.get("hw:mem_encryption", "")).lower()
            in ("true", "1", "yes", "on")
            or "hw:mem_encryption_model" in specs
            or any(str(k).startswith("tee:") for k in specs))


def servers_on(get: Get, node: str) -> list[dict[str, Any]]:
    """Every confidential server on compute node ``node``, all projects."""
    out: list[dict[str, Any]] = []
    marker = None
    while True:
        query = {"all_tenants": "1", "node": node, "limit": str(PAGE)}
        if marker:
            query["marker"] = marker
        page = get("/servers/detail?" + urllib.parse.urlencode(query)).get(
            "servers")
        if not isinstance(page, list):
            raise ReportError("Nova's answer has no servers")
        out.extend(s for s in page if is_confidential(s))
        if len(page) < PAGE:
            return sorted(out, key=lambda s: (s.get("tenant_id") or "",
                                              s.get("name") or ""))
        marker = page[-1]["id"]


def report(floors: dict[Product, snp.TcbVersion], hosts: list[Host],
           servers: Callable[[str], list[dict[str, Any]]]
           ) -> list[tuple[str, ...]]:
    """One row per confidential server on a stale or unknown host.

    A stale or unknown host without confidential servers gets one row of
    its own. Hosts at or above their product's floor (or whose product
    has none) are left out.
    """
    rows: list[tuple[str, ...]] = []
    for host in hosts:
        if host.product is None or host.tcb is None:
            floor_text, product = "-", "unknown"
            actions = (ACTION_UNKNOWN, ACTION_UNKNOWN_HOST)
        else:
            floor = floors.get(host.product)
            if floor is None or not host.tcb.meets(floor):
                continue
            floor_text = tcb_text(floor)
            product = host.product.name.lower()
            actions = (ACTION_GUEST, ACTION_HOST)
        head = (host.name, product, tcb_text(host.tcb), floor_text)
        guests = servers(host.name)
        for server in guests:
            rows.append(head + (server["id"], server.get("name") or "",
                                server.get("tenant_id") or "",
                                server.get("status") or "", actions[0]))
        if not guests:
            rows.append(head + ("-", "-", "-", "-", actions[1]))
    return rows


def build(floor_views: list[dict[str, Any]], placement: Get,
          compute: Get) -> list[tuple[str, ...]]:
    """The whole report from the three services' answers."""
    return report(snp_floors(floor_views), sev_hosts(placement),
                  lambda node: servers_on(compute, node))


def _session_get(client_manager: Any, service_type: str,
                 headers: dict[str, str]) -> Get:
    session = client_manager.session
    endpoint_filter = {"service_type": service_type,
                       "interface": client_manager.interface,
                       "region_name": client_manager.region_name}

    def get(path: str) -> Any:
        from keystoneauth1 import exceptions as ks_exc

        try:
            resp = session.get(path, endpoint_filter=endpoint_filter,
                               headers=headers)
        except ks_exc.ClientException as exc:
            raise ReportError(f"{service_type}: {exc}") from None
        return resp.json()
    return get


class TcbReport(command.Lister):
    """List compute hosts below the SNP TCB floor and their guests.

    Administrators. Hosts whose TCB is unknown are listed too. For each
    confidential server on them: live migration stays refused, and a
    cold migration to an up-to-date host attests it again.
    """

    def take_action(self, parsed_args: argparse.Namespace
                    ) -> tuple[tuple[str, ...], list[tuple[str, ...]]]:
        manager = self.app.client_manager
        client: rest.TEEClient = manager.tee
        try:
            views = client.list_floors()
        except rest.TEEClientError as exc:
            raise exceptions.CommandError(
                f"cannot read the TCB floors: {exc.code}: "
                f"{exc.message}") from None
        placement = _session_get(
            manager, "placement",
            {"OpenStack-API-Version": PLACEMENT_VERSION})
        compute = _session_get(
            manager, "compute",
            {"OpenStack-API-Version": f"compute {COMPUTE_VERSION}",
             "X-OpenStack-Nova-API-Version": COMPUTE_VERSION})
        try:
            return COLUMNS, build(views, placement, compute)
        except ReportError as exc:
            raise exceptions.CommandError(
                f"cannot make the TCB report: {exc}") from None
