"""The host TCB trait and the core of ``openstack tee tcb report``."""

from __future__ import annotations

from typing import Any

from barbican_tee.attestation import snp
from barbican_tee.attestation.snp_certs import Product
from barbican_tee.attestation import tcb_trait
from barbican_tee.osc.v1 import tcb
from tests import base

MILAN_8 = snp.TcbVersion(bootloader=3, tee=0, snp=8, microcode=115)
TURIN = snp.TcbVersion(fmc=2, bootloader=4, tee=0, snp=24, microcode=80)


class TraitTest(base.TestCase):

    def test_round_trip(self) -> None:
        name = tcb_trait.encode(Product.MILAN, MILAN_8)
        self.assertEqual("CUSTOM_TEE_SNP_TCB_MILAN_BL3_TEE0_SNP8_UC115",
                         name)
        self.assertEqual((Product.MILAN, MILAN_8), tcb_trait.decode(name))
        name = tcb_trait.encode(Product.TURIN, TURIN)
        self.assertEqual("CUSTOM_TEE_SNP_TCB_TURIN_BL4_TEE0_SNP24_UC80_FMC2",
                         name)
        self.assertEqual((Product.TURIN, TURIN), tcb_trait.decode(name))
        self.assertLessEqual(
            len(tcb_trait.encode(Product.TURIN, snp.TcbVersion(
                255, 255, 255, 255, 255))), 255)

    def test_strict_decoding(self) -> None:
        for bad in ("CUSTOM_TEE_SNP_TCB_REPORTED",
                    "CUSTOM_TEE_SNP_TCB_MILAN_BL3_TEE0_SNP8_UC256",
                    "CUSTOM_TEE_SNP_TCB_MILAN_BL3_TEE0_SNP8_UC1_FMC1",
                    "CUSTOM_TEE_SNP_TCB_TURIN_BL3_TEE0_SNP8_UC1",
                    "CUSTOM_TEE_SNP_TCB_MILAN_BL3_TEE0_SNP8_UC115_X",
                    "CUSTOM_TEE_SNP_TCB_ROME_BL3_TEE0_SNP8_UC115"):
            self.assertIsNone(tcb_trait.decode(bad), bad)
        self.assertFalse(tcb_trait.is_tcb_trait(
            "CUSTOM_TEE_SNP_TCB_REPORTED"))
        self.assertTrue(tcb_trait.is_tcb_trait(
            "CUSTOM_TEE_SNP_TCB_MILAN_BL3_TEE0_SNP8_UC256"))


def _view(product: str, **effective: int) -> dict[str, Any]:
    return {"product": product, "effective": effective or None}


def _server(sid: str, **specs: str) -> dict[str, Any]:
    return {"id": sid, "name": f"vm-{sid}", "tenant_id": "p1",
            "status": "ACTIVE", "flavor": {"extra_specs": specs}}


class ReportTest(base.TestCase):

    def setUp(self) -> None:
        super().setUp()
        self.floors = tcb.snp_floors([
            _view("milan", bootloader=0, tee=0, snp=9, microcode=0),
            _view("genoa"), _view("turin"),
            {"product": "tdx", "effective": {"tcb_statuses": ["UpToDate"]}},
        ])
        self.servers = {
            "stale": [_server("a", **{"hw:mem_encryption": "true"})],
            "odd": [_server("b", **{"tee:policy": "x"})],
        }

    def _report(self, hosts: list[tcb.Host]) -> list[tuple[str, ...]]:
        return tcb.report(self.floors, hosts,
                          lambda node: self.servers.get(node, []))

    def test_floors(self) -> None:
        self.assertEqual({Product.MILAN: snp.TcbVersion(0, 0, 9, 0)},
                         self.floors)
        self.assertRaises(tcb.ReportError, tcb.snp_floors,
                          [_view("milan", bootloader=0)])
        # A product Barbican answers an error for is not "no floor".
        exc = self.assertRaises(tcb.ReportError, tcb.snp_floors, [
            {"product": "genoa", "error": {"code": "tcb_floor_tampered",
                                           "message": "..."}}])
        self.assertIn("tcb_floor_tampered", str(exc))

    def test_stale_unknown_and_up_to_date_hosts(self) -> None:
        rows = self._report([
            tcb.Host("stale", Product.MILAN, MILAN_8),
            tcb.Host("fresh", Product.MILAN, snp.TcbVersion(3, 0, 9, 115)),
            tcb.Host("genoa", Product.GENOA, snp.TcbVersion(0, 0, 0, 0)),
            tcb.Host("empty", Product.MILAN, MILAN_8),
            tcb.Host("odd", None, None),
        ])
        self.assertEqual(
            [("stale", "milan", "3.0.8.115", "0.0.9.0", "a", "vm-a", "p1",
              "ACTIVE", tcb.ACTION_GUEST),
             ("empty", "milan", "3.0.8.115", "0.0.9.0", "-", "-", "-", "-",
              tcb.ACTION_HOST),
             ("odd", "unknown", "unknown", "-", "b", "vm-b", "p1",
              "ACTIVE", tcb.ACTION_UNKNOWN)], rows)

    def test_hosts_from_placement(self) -> None:
        milan8 = "CUSTOM_TEE_SNP_TCB_MILAN_BL3_TEE0_SNP8_UC115"
        milan9 = "CUSTOM_TEE_SNP_TCB_MILAN_BL3_TEE0_SNP9_UC115"
        u1 = {"uuid": "u1", "name": "stale", "root_provider_uuid": "u1"}
        u2 = {"uuid": "u2", "name": "nested", "root_provider_uuid": "u1"}
        u4 = {"uuid": "u4", "name": "sev", "root_provider_uuid": "u4"}
        u5 = {"uuid": "u5", "name": "two", "root_provider_uuid": "u5"}
        u6 = {"uuid": "u6", "name": "sev_amd_sev", "root_provider_uuid": "u4"}
        u7 = {"uuid": "u7", "name": "snp", "root_provider_uuid": "u7"}
        u8 = {"uuid": "u8", "name": "snp_amd_sev_snp",
              "root_provider_uuid": "u7"}
        sev_traits = ",".join(sorted(tcb.SEV_HOST_TRAITS))
        answers = {
            "/resource_providers": {"resource_providers": [
                u1, u2, {"uuid": "u3", "name": "plain",
                         "root_provider_uuid": "u3"}, u4, u5, u6, u7, u8]},
            tcb._query("/traits", name="startswith:CUSTOM_TEE_SNP_TCB_",
                       associated="true"): {"traits": [
                milan8, milan9, "CUSTOM_TEE_SNP_TCB_REPORTED"]},
            tcb._query("/traits", name=f"in:{sev_traits}",
                       associated="true"): {"traits": [
                "HW_CPU_X86_AMD_SEV", "HW_CPU_X86_AMD_SEV_SNP"]},
            # A TCB trait counts on the compute node's own provider only.
            tcb._query("/resource_providers", required=milan8): {
                "resource_providers": [u1, u5, u6]},
            tcb._query("/resource_providers", required=milan9): {
                "resource_providers": [u5]},
            tcb._query("/resource_providers",
                       required="CUSTOM_TEE_SNP_TCB_REPORTED"): {
                "resource_providers": [u1]},
            tcb._query("/resource_providers",
                       required="HW_CPU_X86_AMD_SEV"): {
                "resource_providers": [u2, u6]},
            tcb._query("/resource_providers",
                       required="HW_CPU_X86_AMD_SEV_SNP"): {
                "resource_providers": [u8]},
        }
        asked: list[str] = []

        def get(path: str) -> Any:
            asked.append(path)
            return answers[path]

        self.assertEqual(
            [tcb.Host("sev", None, None, sev_only=True),
             tcb.Host("snp", None, None),
             tcb.Host("stale", Product.MILAN, MILAN_8),
             tcb.Host("two", None, None)],
            tcb.sev_hosts(get))
        # Per trait in use (SEV_ES is in no one's use), not per provider.
        self.assertEqual(8, len(asked))
        # An SEV-only host is not in the report, its guests neither.
        self.assertEqual([], self._report(
            [tcb.Host("stale", None, None, sev_only=True)]))

    def test_confidential_servers(self) -> None:
        self.assertTrue(tcb.is_confidential(
            {"flavor": {"extra_specs": {}}, "image": {
                "id": "i", "properties": {"hw_mem_encryption": "True"}}}))
        self.assertTrue(tcb.is_confidential(
            {"flavor": {"extra_specs": {}}, "image": {
                "id": "i", "properties": {
                    "hw_mem_encryption_model": "amd-sev-snp"}}}))
        self.assertTrue(tcb.is_confidential(
            {"flavor": {"extra_specs": {"hw:mem_encryption": "yes"}},
             "image": ""}))
        self.assertFalse(tcb.is_confidential(
            {"flavor": {"extra_specs": {"hw:mem_encryption": "False"}},
             "image": {"id": "i", "properties": {
                 "hw_mem_encryption": "False"}}}))
        # Booted from a volume: no image (""), no properties.
        self.assertFalse(tcb.is_confidential({"flavor": {}, "image": ""}))

    def test_confidential_servers_only_and_pages(self) -> None:
        # Nova's pages may be shorter than asked ([api] max_limit): the
        # report follows its next links, and only them.
        pages = [[_server(str(i), **{"hw:mem_encryption": "True"})
                  for i in range(3)],
                 [_server("x"), _server("y", **{
                     "hw:mem_encryption_model": "amd-sev-snp"})]]
        asked = []

        def get(path: str) -> dict[str, Any]:
            asked.append(path)
            page = pages[len(asked) - 1]
            doc: dict[str, Any] = {"servers": page}
            if len(asked) < len(pages):
                doc["servers_links"] = [{
                    "rel": "next",
                    "href": "http://nova/v2.1/servers/detail?limit=3&"
                            f"marker={page[-1]['id']}"}]
            return doc

        servers = tcb.servers_on(get, "h1")
        self.assertEqual(["0", "1", "2", "y"], sorted(s["id"] for s in
                                                      servers))
        self.assertEqual(2, len(asked))
        self.assertIn("node=h1", asked[0])
        self.assertIn("marker=2", asked[1])

        # A next link that comes back to a page already read ends it.
        def loop(path: str) -> dict[str, Any]:
            return {"servers": [_server("a")], "servers_links": [
                {"rel": "next", "href": "/servers/detail?marker=a"}]}

        self.assertRaises(tcb.ReportError, tcb.servers_on, loop, "h1")
