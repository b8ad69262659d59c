"""``openstack tee tcb report``: hosts below the TCB floor, and their guests.

For an administrator, with Barbican's, placement's and Nova's APIs only:

1. the effective SEV-SNP floors from Barbican (``GET /v1/tee/floors``);
2. each compute node's SNP product and TCB from placement: the suite's
   libvirt driver publishes them as one trait on the node's resource
   provider (:mod:`barbican_tee.attestation.tcb_trait`). Placement is
   asked per trait, not per provider: the TCB and SEV traits in use
   (``GET /traits``), then the providers with each of them (``GET
   /resource_providers?required=...``): a few requests whatever the size
   of the cloud (one more per distinct TCB in use);
3. for every host below its product's floor (and every SEV-SNP host that
   publishes no TCB trait: "unknown", never taken as up to date), the
   confidential servers on it from Nova
   (``GET /servers/detail?all_tenants=1&node=...``, every page), with
   their projects. A server is confidential when its flavor or its image
   (the properties Nova keeps from the image it booted, microversion
   2.98) asks for memory encryption or has ``tee:`` keys.

Hosts with SEV or SEV-ES and no SEV-SNP are left out: the SNP floors do
not apply to them (no SNP guest can run there). The command names them on
standard error so that an operator knows why they are not listed.

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
# root_provider_uuid (1.14), GET /resource_providers?required= (1.18)
PLACEMENT_VERSION = "placement 1.18"
# The server's flavor with its extra specs (2.47), its image's properties
# (2.98).
COMPUTE_VERSION = "2.98"
PAGE = 500
# Traits of a host where SEV-SNP guests may run: one without a TCB trait
# is reported as unknown.
SNP_HOST_TRAITS = frozenset({"CUSTOM_TEE_SNP_TCB_REPORTED",
                             "HW_CPU_X86_AMD_SEV_SNP"})
# Traits of a host where SEV or SEV-ES guests may run; without any of
# SNP_HOST_TRAITS or a TCB trait, an SEV-only host (left out).
SEV_HOST_TRAITS = frozenset({"HW_CPU_X86_AMD_SEV",
                             "HW_CPU_X86_AMD_SEV_ES"}) | SNP_HOST_TRAITS
# What Nova reads as true (oslo.utils' strutils.TRUE_STRINGS).
_TRUE = ("1", "t", "true", "on", "y", "yes")
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
    # SEV or SEV-ES without SEV-SNP: the SNP floors do not apply.
    sev_only: bool = False


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


def _query(path: str, **params: str) -> str:
    return f"{path}?{urllib.parse.urlencode(params)}"


def sev_hosts(get: Get) -> list[Host]:
    """Compute nodes where SEV/SNP guests may run, with their TCB.

    A compute node is a root provider; the TCB trait is on it, the SEV
    traits on it (Nova 33) or on its memory encryption children (Nova 34).
    Placement is asked per trait (the TCB traits in use, then each one's
    providers), not per provider.
    """
    providers = get("/resource_providers").get("resource_providers")
    if not isinstance(providers, list):
        raise ReportError("placement's answer has no resource_providers")
    names = {rp["uuid"]: rp["name"] for rp in providers}
    # The traits some provider has (placement refuses to filter on a
    # trait it does not know, and one nobody has needs no request).
    in_use: set[str] = set()
    for name in (f"startswith:{tcb_trait.PREFIX}",
                 "in:" + ",".join(sorted(SEV_HOST_TRAITS))):
        traits = get(_query("/traits", name=name, associated="true")).get(
            "traits")
        if not isinstance(traits, list):
            raise ReportError("placement's answer has no traits")
        in_use.update(str(t) for t in traits)
    trees: dict[str, set[str]] = {}
    for trait in sorted(in_use):
        if not (trait in SEV_HOST_TRAITS or tcb_trait.is_tcb_trait(trait)):
            continue
        holders = get(_query("/resource_providers", required=trait)).get(
            "resource_providers")
        if not isinstance(holders, list):
            raise ReportError("placement's answer has no "
                              "resource_providers")
        for rp in holders:
            root = rp.get("root_provider_uuid") or rp["uuid"]
            names.setdefault(rp["uuid"], rp["name"])
            if root != rp["uuid"] and tcb_trait.is_tcb_trait(trait):
                # Only the compute node's own provider speaks for it.
                continue
            trees.setdefault(root, set()).add(trait)
    hosts = []
    for root, traits in trees.items():
        name = names.get(root, root)
        tcbs = [t for t in traits if tcb_trait.is_tcb_trait(t)]
        decoded = tcb_trait.decode(tcbs[0]) if len(tcbs) == 1 else None
        if decoded is not None:
            hosts.append(Host(name, *decoded))
        elif tcbs or SNP_HOST_TRAITS & traits:
            # None, several, or one that does not decode: unknown.
            hosts.append(Host(name, None, None))
        else:
            hosts.append(Host(name, None, None, sev_only=True))
    return sorted(hosts, key=lambda h: h.name)


def _asks_encryption(values: dict[str, Any], sep: str) -> bool:
    return (str(values.get(f"hw{sep}mem_encryption", "")).lower() in _TRUE
            or f"hw{sep}mem_encryption_model" in values)


def is_confidential(server: dict[str, Any]) -> bool:
    """Whether the server's flavor or image asks for memory encryption."""
    specs = (server.get("flavor") or {}).get("extra_specs") or {}
    image = server.get("image")
    props = (image.get("properties") if isinstance(image, dict)
             else None) or {}
    return (_asks_encryption(specs, ":") or _asks_encryption(props, "_")
            or any(str(k).startswith("tee:") for k in specs))


def _next_marker(doc: dict[str, Any], page: list[Any]) -> str | None:
    """The marker of the next page when Nova links one, else None."""
    for link in doc.get("servers_links") or []:
        if isinstance(link, dict) and link.get("rel") == "next":
            query = urllib.parse.urlsplit(str(link.get("href", ""))).query
            marker = urllib.parse.parse_qs(query).get("marker")
            return marker[0] if marker else str(page[-1]["id"])
    return None


def servers_on(get: Get, node: str) -> list[dict[str, Any]]:
    """Every confidential server on compute node ``node``, all projects.

    Pages are followed as long as Nova links a next one (its ``[api]
    max_limit`` may make them shorter than asked).
    """
    out: list[dict[str, Any]] = []
    marker = None
    seen: set[str] = set()
    while True:
        query = {"all_tenants": "1", "node": node, "limit": str(PAGE)}
        if marker:
            query["marker"] = marker
        doc = get("/servers/detail?" + urllib.parse.urlencode(query))
        page = doc.get("servers")
        if not isinstance(page, list):
            raise ReportError("Nova's answer has no servers")
        out.extend(s for s in page if is_confidential(s))
        marker = _next_marker(doc, page) if page else None
        if marker is None:
            return sorted(out, key=lambda s: (s.get("tenant_id") or "",
                                              s.get("name") or ""))
        if marker in seen:
            raise ReportError("Nova's server pages do not end (marker "
                              f"{marker} again)")
        seen.add(marker)


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
        if host.sev_only:
            continue
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

    Administrators. SEV-SNP hosts whose TCB is unknown are listed too;
    hosts with SEV or SEV-ES only are not (named on standard error). For
    each confidential server on them: live migration stays refused, and a
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
            floors = snp_floors(views)
            hosts = sev_hosts(placement)
            rows = report(floors, hosts,
                          lambda node: servers_on(compute, node))
        except ReportError as exc:
            raise exceptions.CommandError(
                f"cannot make the TCB report: {exc}") from None
        sev_only = [h.name for h in hosts if h.sev_only]
        if sev_only:
            # Not rows: the table (and -f json) stays the hosts below a
            # floor; the note says why these are not among them.
            self.app.stderr.write(
                f"Not listed: {len(sev_only)} host(s) with SEV or SEV-ES "
                "and no SEV-SNP, to which the SNP TCB floors do not apply: "
                f"{', '.join(sev_only)}\n")
        return COLUMNS, rows
