"""The endorsement cache through a real barbican-api.

A release with no VCEK in the evidence works from a warm cache, with the
default ``endorsement_sources`` (the built-in ``database`` source); a
cold cache, an expired entry, a CRL that revokes the signer, and a CRL row
deleted, rolled back or forged in the database are each refused with
their own code. Imports are verified against the pinned roots, all or
nothing, and only administrators and services may import or list.
"""

from __future__ import annotations

import base64
import datetime
import json
import os
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import serialization
from cryptography import x509
import requests
import sqlalchemy as sa

from barbican_tee.api import endorsements
from barbican_tee.attestation import snp
from barbican_tee.client import guest
from openstack_tee_demo.sp_model import snp as sp_model
from tests import base
from tests.functional.barbican import test_release

REAL_VCEK = base.fixture_path("virtee-sev", "tests", "certs_data",
                              "vcek_milan.der")
TDX_COLLATERAL = base.fixture_path("dcap-qvl", "sample",
                                   "tdx_quote_collateral.json")
MEASUREMENT = test_release.MEASUREMENT
NOW = datetime.datetime.now(datetime.UTC)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def vcek_item(sp: sp_model.SecureProcessor) -> dict[str, Any]:
    return {"kind": "vcek", "der": _b64(sp.vcek_der)}


def make_crl(sp: sp_model.SecureProcessor, number: int,
             revoked: list[int], next_update: datetime.timedelta =
             datetime.timedelta(days=7)) -> bytes:
    """A CRL as AMD's KDS issues it: signed by the ARK, RSA-PSS SHA-384."""
    builder = (x509.CertificateRevocationListBuilder()
               .issuer_name(sp.ark.subject)
               .last_update(min(NOW, NOW + next_update)
                            - datetime.timedelta(hours=1)
                            + datetime.timedelta(seconds=number))
               .next_update(NOW + next_update)
               .add_extension(x509.CRLNumber(number), critical=False))
    for serial in revoked:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial)
            .revocation_date(NOW - datetime.timedelta(days=1)).build())
    crl = builder.sign(sp.ark_key, hashes.SHA384(),
                       rsa_padding=sp_model._PSS)  # noqa: SLF001
    return crl.public_bytes(serialization.Encoding.DER)


class _CacheBase(test_release._ServerTestBase):
    # One worker: what a process has seen (the newest CRL) is what the
    # next request meets.
    WORKERS = 1

    def _import(self, bundle: dict[str, Any], roles: str = "admin"
                ) -> requests.Response:
        return requests.post(f"{self.url}/v1/tee/endorsements", timeout=60,
                             json=bundle, headers=self._headers(
                                 test_release.OWNER, roles))

    def _list(self, roles: str = "admin", **query: str
              ) -> requests.Response:
        return requests.get(f"{self.url}/v1/tee/endorsements", timeout=30,
                            params=query, headers=self._headers(
                                test_release.OWNER, roles))

    def _code(self, resp: requests.Response, status: int, code: str
              ) -> None:
        self.assertEqual(status, resp.status_code, resp.text)
        self.assertEqual(code, resp.json()["error"]["code"], resp.text)
        self.assertNotIn("jwe", resp.json())

    def _release(self, secret_id: str, sp: sp_model.SecureProcessor,
                 with_vcek: bool = False
                 ) -> tuple[requests.Response, Any]:
        nonce = requests.post(f"{self.url}/v1/tee/challenge", timeout=30,
                              json={"secret_id": secret_id}).json()["nonce"]
        key = guest.make_key()
        raw = sp.report(report_data=guest.report_data(nonce, key),
                        measurement=MEASUREMENT)
        # No VCEK and no chain: only the report, as a guest whose host's
        # firmware holds no certificate table sends it.
        evidence: dict[str, Any] = {"format": "amd-sev-snp-report",
                                    "report": _b64(raw)}
        if with_vcek:
            pem = base64.encodebytes(sp.vcek_der).decode()
            evidence["vcek"] = ("-----BEGIN CERTIFICATE-----\n" + pem
                                + "-----END CERTIFICATE-----\n")
        resp = requests.post(f"{self.url}/v1/tee/release", timeout=30,
                             json={"secret_id": secret_id, "nonce": nonce,
                                   "evidence": evidence,
                                   "public_key": guest.public_jwk(key)})
        return resp, key

    def _engine(self) -> sa.Engine:
        return sa.create_engine(self.server.layout.db_url)

    def _chip(self) -> sp_model.SecureProcessor:
        # Another chip under the same (pinned) model ARK and ASK.
        return sp_model.SecureProcessor(label="barbican-e2e")


class EndorsementCacheTest(_CacheBase):

    def test_release_from_a_warm_cache_with_no_vcek(self) -> None:
        sp = self._chip()
        secret_id, key = self._bound_secret()
        # Cold cache: refused with its own code, nothing released.
        resp, _ = self._release(secret_id, sp)
        self._code(resp, 400, "endorsement_not_found")
        resp = self._import({"endorsements": [vcek_item(sp)]})
        self.assertEqual(201, resp.status_code, resp.text)
        [entry] = resp.json()["endorsements"]
        self.assertEqual(("vcek", "milan", True),
                         (entry["kind"], entry["product"], entry["new"]))
        self.assertTrue(entry["subject"].startswith(sp.chip_id.hex()))
        self.assertIn("openstack-tee audit tee.endorsement.imported",
                      self._log())
        resp, guest_key = self._release(secret_id, sp)
        self.assertEqual(200, resp.status_code, resp.text)
        self.assertEqual(key, guest.decrypt(resp.json()["jwe"], guest_key))
        # Imported again: present, not duplicated.
        resp = self._import({"endorsements": [vcek_item(sp)]})
        self.assertFalse(resp.json()["endorsements"][0]["new"])
        listed = self._list(subject=sp.chip_id.hex()[:32]).json()
        self.assertEqual([entry["id"]],
                         [e["id"] for e in listed["endorsements"]])
        self.assertFalse(listed["endorsements"][0]["expired"])

    def test_a_database_error_is_an_audited_refusal(self) -> None:
        sp = self._chip()
        secret_id, _ = self._bound_secret()
        resp = self._import({"endorsements": [vcek_item(sp)]})
        self.assertEqual(201, resp.status_code, resp.text)
        resp, _ = self._release(secret_id, sp)
        self.assertEqual(200, resp.status_code, resp.text)  # control
        self.server.sql("ALTER TABLE tee_endorsements RENAME TO "
                        "tee_endorsements_away")
        self.addCleanup(self._table_back)
        # The VCEK sent along: the CRL lookup still reads the cache.
        for with_vcek in (False, True):
            resp, _ = self._release(secret_id, sp, with_vcek=with_vcek)
            self._code(resp, 503, "endorsement_unavailable")
        self.assertIn(f"tee.release.denied secret={secret_id} "
                      "codes=endorsement_unavailable", self._log())
        self._table_back()
        resp, _ = self._release(secret_id, sp)
        self.assertEqual(200, resp.status_code, resp.text)

    def _table_back(self) -> None:
        if "tee_endorsements_away" in self.server.table_names():
            self.server.sql("ALTER TABLE tee_endorsements_away RENAME TO "
                            "tee_endorsements")

    def test_the_cache_is_looked_up_by_chip_and_tcb(self) -> None:
        # A VCEK for the chip at another TCB is not this report's.
        sp = self._chip()
        newer = snp.TcbVersion(bootloader=3, tee=0, snp=9, microcode=115)
        other = sp.endorsement_cert(sp.vcek_key, "SEV-VCEK", sp.ask_key,
                                    "SEV-Milan", newer, hwid=sp.chip_id)
        resp = self._import({"endorsements": [
            {"kind": "vcek", "der": _b64(other)}]})
        self.assertEqual(201, resp.status_code, resp.text)
        secret_id, _ = self._bound_secret()
        resp, _ = self._release(secret_id, sp)
        self._code(resp, 400, "endorsement_not_found")

    def test_an_expired_entry_is_refused(self) -> None:
        sp = self._chip()
        expired = sp.endorsement_cert(
            sp.vcek_key, "SEV-VCEK", sp.ask_key, "SEV-Milan", sp.tcb,
            hwid=sp.chip_id,
            not_after=NOW - datetime.timedelta(days=1))
        # Refused on import, with its code; nothing stored.
        resp = self._import({"endorsements": [
            {"kind": "vcek", "der": _b64(expired)}]})
        self._code(resp, 400, "endorsement_expired")
        self.assertEqual([], self._list(
            subject=sp.chip_id.hex()).json()["endorsements"])
        # In the cache all the same (it expired there, or a database
        # writer put it there): refused at release, never used.
        lookup = endorsements.vcek_lookup(sp.chip_id,
                                          sp.tcb.encode(snp.Product.MILAN))
        engine = self._engine()
        self.addCleanup(engine.dispose)
        with engine.begin() as conn:
            conn.execute(sa.text(
                "INSERT INTO tee_endorsements (id, kind, product, lookup, "
                "expires_at, data, imported_at, imported_by) VALUES "
                "(:id, 'vcek', 'milan', :lookup, :exp, :data, :exp, 'x')"),
                {"id": "e" * 64, "lookup": lookup,
                 "exp": datetime.datetime(2030, 1, 1),
                 "data": endorsements._pem(expired)})  # noqa: SLF001
        secret_id, _ = self._bound_secret()
        resp, _ = self._release(secret_id, sp)
        self._code(resp, 403, "endorsement_expired")
        self.assertIn(f"tee.release.denied secret={secret_id} "
                      "codes=endorsement_expired", self._log())
        # Positive control: a valid VCEK for the chip is used again.
        self._import({"endorsements": [vcek_item(sp)]})
        resp, _ = self._release(secret_id, sp)
        self.assertEqual(200, resp.status_code, resp.text)

    def test_a_bad_bundle_imports_nothing(self) -> None:
        sp = self._chip()
        foreign = sp_model.SecureProcessor(label="foreign-root")
        for items, code in (
                ([vcek_item(sp), {"kind": "vcek", "der": "@@"}],
                 "endorsement_invalid"),
                ([vcek_item(sp), vcek_item(foreign)],
                 "endorsement_untrusted"),
                ([vcek_item(sp), {"kind": "ask", "pem": foreign.ask.
                                  public_bytes(serialization.Encoding.PEM)
                                  .decode()}], "endorsement_untrusted"),
                ([vcek_item(sp), {"kind": "crl",
                                  "der": _b64(make_crl(foreign, 1, []))}],
                 "endorsement_untrusted"),
                ([vcek_item(sp), {"kind": "crl", "der": _b64(make_crl(
                    sp, 1, [], datetime.timedelta(days=-1)))}],
                 "endorsement_expired"),
                ([vcek_item(sp), {"kind": "nonsense"}],
                 "endorsement_invalid")):
            resp = self._import({"endorsements": items})
            self._code(resp, 400, code)
            self.assertIn("endorsements[1]", resp.json()["error"]["message"])
        for body in ({}, {"endorsements": []}, {"endorsements": "x"},
                     {"endorsements": [vcek_item(sp)], "extra": 1}):
            self._code(self._import(body), 400,
                       "endorsement_bundle_invalid")
        self.assertEqual([], self._list(
            subject=sp.chip_id.hex()).json()["endorsements"])
        self._code(self._list(kind="nope"), 400,
                   "endorsement_filter_invalid")

    def test_only_administrators_and_services_import_or_list(self) -> None:
        sp = self._chip()
        for roles in ("member", "reader", "creator"):
            self._code(self._import({"endorsements": [vcek_item(sp)]},
                                    roles), 403, "forbidden")
            self._code(self._list(roles), 403, "forbidden")
        self.assertEqual([], self._list(
            subject=sp.chip_id.hex()).json()["endorsements"])
        # Positive control: nova-compute's service user may.
        resp = self._import({"endorsements": [vcek_item(sp)]}, "service")
        self.assertEqual(201, resp.status_code, resp.text)
        self.assertEqual(200, self._list("service").status_code)

    def test_nova_compute_publishes_its_hosts_vcek(self) -> None:
        # nova_tee's own code, as nova-compute runs it at start and at
        # each resource update, against this barbican-api.
        from nova_tee.virt.libvirt import endorse
        sp = self._chip()
        path = os.path.join(self.tmp, "vcek-" + sp.chip_id.hex()[:8])
        with open(path, "wb") as f:
            f.write(endorsements._pem(sp.vcek_der).encode()  # noqa: SLF001
                    + sp.bundle_pem())
        for name, value in (("barbican_url", self.url),
                            ("barbican_noauth_project", test_release.OWNER),
                            ("vcek_path", path)):
            endorse.CONF.set_override(name, value, group="tee")
            self.addCleanup(endorse.CONF.clear_override, name, group="tee")
        self.addCleanup(setattr, endorse, "_published", None)
        secret_id, key = self._bound_secret()
        resp, _ = self._release(secret_id, sp)
        self._code(resp, 400, "endorsement_not_found")
        self.assertTrue(endorse.publish_vcek())
        # Unchanged file: nothing sent again.
        self.assertFalse(endorse.publish_vcek())
        resp, guest_key = self._release(secret_id, sp)
        self.assertEqual(200, resp.status_code, resp.text)
        self.assertEqual(key, guest.decrypt(resp.json()["jwe"], guest_key))

    def test_real_amd_and_intel_endorsements(self) -> None:
        # AMD's own VCEK of a Milan chip (virtee's fixture), verified
        # against AMD's ARK/ASK shipped with the package.
        with open(REAL_VCEK, "rb") as f:
            der = f.read()
        resp = self._import({"endorsements": [{"kind": "vcek",
                                               "der": _b64(der)}]})
        self.assertEqual(201, resp.status_code, resp.text)
        [entry] = resp.json()["endorsements"]
        self.assertEqual("milan", entry["product"])
        self.assertTrue(entry["subject"].startswith("d49554ec717f4e5b"))
        self.assertTrue(entry["subject"].endswith(
            ":" + f"{snp.TcbVersion(3, 0, 8, 115).encode(None):016x}"))
        # Intel PCS collateral for a TDX platform: its TCB info's
        # nextUpdate (2025-07) has passed, so it is refused as expired.
        with open(TDX_COLLATERAL) as f:
            collateral = json.load(f)
        resp = self._import({"endorsements": [
            {"kind": "tdx_collateral", "collateral": collateral}]})
        self._code(resp, 400, "endorsement_expired")
        self.assertEqual([], self._list(kind="tdx_collateral").json()[
            "endorsements"])


class RevocationTest(_CacheBase):
    """A CRL in the cache, and what a database writer can do to it."""

    def _crl_rows(self) -> list[dict[str, Any]]:
        engine = self._engine()
        self.addCleanup(engine.dispose)
        with engine.connect() as conn:
            return [dict(r) for r in conn.execute(sa.text(
                "SELECT * FROM tee_endorsements WHERE kind = 'crl' "
                "ORDER BY crl_number")).mappings().all()]

    def _sql(self, statement: str, **params: Any) -> None:
        engine = self._engine()
        self.addCleanup(engine.dispose)
        with engine.begin() as conn:
            conn.execute(sa.text(statement), params)

    def test_a_crl_that_revokes_the_ask_refuses_its_reports(self) -> None:
        sp = self._chip()
        self.assertEqual(201, self._import(
            {"endorsements": [vcek_item(sp)]}).status_code)
        secret_id, _ = self._bound_secret()
        # Positive control: a CRL that revokes something else.
        resp = self._import({"endorsements": [
            {"kind": "crl", "der": _b64(make_crl(sp, 1, [0x4242]))}]})
        self.assertEqual(201, resp.status_code, resp.text)
        self.assertEqual("1", resp.json()["endorsements"][0]["crl_number"])
        for with_vcek in (False, True):
            resp, _ = self._release(secret_id, sp, with_vcek)
            self.assertEqual(200, resp.status_code, resp.text)
        # AMD revokes the ASK: refused, whoever sent the VCEK.
        resp = self._import({"endorsements": [{"kind": "crl", "der": _b64(
            make_crl(sp, 2, [sp.ask.serial_number]))}]})
        self.assertEqual(201, resp.status_code, resp.text)
        for with_vcek in (False, True):
            resp, _ = self._release(secret_id, sp, with_vcek)
            self._code(resp, 403, "certificate_revoked")
        self.assertIn(f"tee.release.denied secret={secret_id} "
                      "codes=certificate_revoked", self._log())
        # The older CRL is not imported over the newer one.
        self._code(self._import({"endorsements": [
            {"kind": "crl", "der": _b64(make_crl(sp, 1, []))}]}), 409,
            "crl_older")
        # A database writer deletes the revoking row: the older CRL is
        # what the table holds now, and the ASK stays revoked.
        rows = self._crl_rows()
        self.assertEqual(["1", "2"], [r["crl_number"] for r in rows])
        self._sql("DELETE FROM tee_endorsements WHERE id = :i",
                  i=rows[1]["id"])
        resp, _ = self._release(secret_id, sp)
        self._code(resp, 403, "certificate_revoked")
        # ... and deletes every CRL row: still revoked.
        self._sql("DELETE FROM tee_endorsements WHERE kind = 'crl'")
        resp, _ = self._release(secret_id, sp)
        self._code(resp, 403, "certificate_revoked")
        # A CRL row the writer made up (AMD-signed, not revoking, but
        # never imported: no MAC under the KEK) refuses, never releases.
        forged = make_crl(sp, 3, [])
        self._sql(
            "INSERT INTO tee_endorsements (id, kind, product, lookup, "
            "expires_at, crl_number, data, imported_at, imported_by, "
            "mac_kek, mac) VALUES (:id, 'crl', 'milan', 'milan', :exp, "
            "'3', :data, :exp, 'x', :kid, :mac)",
            id="f" * 64, exp=datetime.datetime(2030, 1, 1),
            data=_b64(forged), kid=rows[0]["mac_kek"], mac=rows[0]["mac"])
        resp, _ = self._release(secret_id, sp)
        self._code(resp, 403, "endorsement_tampered")
        # An administrator imports the fresh CRL (which AMD issued
        # without the ASK): the forged row goes, releases work again.
        resp = self._import({"endorsements": [{"kind": "crl", "der": _b64(
            make_crl(sp, 4, []))}]})
        self.assertEqual(201, resp.status_code, resp.text)
        self.assertEqual(["4"], [r["crl_number"]
                                 for r in self._crl_rows()])
        resp, _ = self._release(secret_id, sp)
        self.assertEqual(200, resp.status_code, resp.text)
