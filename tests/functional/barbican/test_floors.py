"""Platform TCB floors set through the API, against a real barbican-api.

One server for the class (see .stestr.conf's group_regex). The guest is the
software secure-processor model (Milan, TCB bootloader 3, tee 0, snp 8,
microcode 115: the config's default Milan floor). Every test puts the
Milan floor back to zeros (the effective floor is then the config's).
"""

from __future__ import annotations

from typing import Any

import requests

from tests.functional.barbican import test_release

OWNER = test_release.OWNER
MILAN_ZERO = {"bootloader": 0, "tee": 0, "snp": 0, "microcode": 0}
CONFIG_MILAN = {"bootloader": 3, "tee": 0, "snp": 8, "microcode": 115}


class FloorTest(test_release._ServerTestBase):  # noqa: SLF001

    def setUp(self) -> None:
        super().setUp()
        self.addCleanup(self._set, "milan", MILAN_ZERO)

    def _admin(self) -> dict[str, str]:
        return self._headers(OWNER, "admin")

    def _set(self, product: str, body: dict[str, Any],
             roles: str = "admin") -> requests.Response:
        return requests.put(f"{self.url}/v1/tee/floors/{product}",
                            json=body, timeout=30,
                            headers=self._headers(OWNER, roles))

    def _show(self, product: str = "milan",
              roles: str = "admin") -> requests.Response:
        return requests.get(f"{self.url}/v1/tee/floors/{product}",
                            headers=self._headers(OWNER, roles),
                            timeout=30)

    def _released(self, secret_id: str) -> None:
        resp, _ = self._attempt(secret_id)
        self.assertEqual(200, resp.status_code, resp.text)

    def test_raised_floor_refuses_the_same_guest_until_lowered(self) -> None:
        # min_tcb all zeros: a policy cannot lower the floor.
        secret_id, _ = self._bound_secret(min_tcb={
            "bootloader": 0, "tee": 0, "snp": 0, "microcode": 0})
        self._released(secret_id)
        resp = self._set("milan", dict(CONFIG_MILAN, snp=9))
        self.assertEqual(200, resp.status_code, resp.text)
        view = resp.json()
        self.assertEqual(dict(CONFIG_MILAN, snp=9), view["effective"])
        self.assertEqual(CONFIG_MILAN, view["config"])
        self.assertEqual("u-" + OWNER[:8], view["updated_by"])
        self._refused("tcb_below_floor", secret_id)
        # A report without CPUID fields (version 2) names no product
        # before it is verified: its floor is not read ahead with the
        # admission (as a version 3 report's is) but when verified.
        self._refused("tcb_below_floor", secret_id, version=2)
        log = self._log()
        self.assertIn("tee.floor.updated product=milan", log)
        self.assertIn('"event_type": "tee.floor.updated"', log)
        # Lowered back: the same guest is released again.
        self.assertEqual(200, self._set("milan", CONFIG_MILAN).status_code)
        self._released(secret_id)
        resp, _ = self._attempt(secret_id, version=2)
        self.assertEqual(200, resp.status_code, resp.text)

    def test_api_floor_below_config_keeps_the_config(self) -> None:
        resp = self._set("milan", MILAN_ZERO)
        self.assertEqual(200, resp.status_code, resp.text)
        self.assertEqual(MILAN_ZERO, resp.json()["set"])
        self.assertEqual(CONFIG_MILAN, resp.json()["effective"])
        listed = requests.get(f"{self.url}/v1/tee/floors", timeout=30,
                              headers=self._admin()).json()["floors"]
        self.assertEqual(["milan", "genoa", "turin", "tdx"],
                         [f["product"] for f in listed])
        tdx = self._set("tdx", {"tcb_statuses": ["UpToDate"],
                                "min_tee_tcb_svn": "03" * 16})
        self.assertEqual(200, tdx.status_code, tdx.text)
        self.assertEqual({"tcb_statuses": ["UpToDate"],
                          "min_tee_tcb_svn": "03" * 16},
                         tdx.json()["effective"])
        self.assertIsNone(tdx.json()["config"])

    def test_tampered_floor_row_refuses_release(self) -> None:
        secret_id, _ = self._bound_secret()
        self.assertEqual(200, self._set("milan", CONFIG_MILAN).status_code)
        self._released(secret_id)
        for change in (
                # A lower floor written without the KEK.
                "UPDATE tee_floors SET document = replace(document, "
                "'\"snp\": 8', '\"snp\": 1') WHERE product = 'milan'",
                # Who set it.
                "UPDATE tee_floors SET updated_by = 'x' "
                "WHERE product = 'milan'"):
            with self.subTest(change=change[:40]):
                self.assertEqual(
                    200, self._set("milan", CONFIG_MILAN).status_code)
                self.server.sql(change)
                self._refused("tcb_floor_tampered", secret_id)
                resp = self._show()
                self.assertEqual(409, resp.status_code, resp.text)
                self.assertEqual("tcb_floor_tampered",
                                 resp.json()["error"]["code"])
        # Genoa's row copied over Milan's does not authenticate either.
        self.assertEqual(200, self._set("genoa", {
            "bootloader": 0, "tee": 0, "snp": 0,
            "microcode": 0}).status_code)
        genoa = self.server.sql(
            "SELECT * FROM tee_floors WHERE product = 'genoa'")[0]
        self.server.sql("DELETE FROM tee_floors WHERE product = 'milan'")
        self.server.insert("tee_floors", dict(genoa, product="milan"))
        self._refused("tcb_floor_tampered", secret_id)
        # The administrator sets it again: released.
        self.assertEqual(200, self._set("milan", CONFIG_MILAN).status_code)
        self._released(secret_id)

    def _list(self) -> requests.Response:
        return requests.get(f"{self.url}/v1/tee/floors", timeout=30,
                            headers=self._admin())

    def test_list_answers_a_tampered_product_as_an_error_entry(
            self) -> None:
        genoa = {"bootloader": 1, "tee": 0, "snp": 2, "microcode": 3}
        self.assertEqual(200, self._set("genoa", genoa).status_code)
        self.addCleanup(self._set, "genoa", MILAN_ZERO)
        self.assertEqual(200, self._set("milan", CONFIG_MILAN).status_code)
        # Positive control: every product answers its view.
        listed = self._list()
        self.assertEqual(200, listed.status_code, listed.text)
        self.assertFalse([f for f in listed.json()["floors"]
                          if "error" in f])
        self.server.sql("UPDATE tee_floors SET document = replace("
                        "document, '\"snp\": 8', '\"snp\": 1') "
                        "WHERE product = 'milan'")
        listed = self._list()
        self.assertEqual(200, listed.status_code, listed.text)
        by_product = {f["product"]: f for f in listed.json()["floors"]}
        self.assertEqual(["milan", "genoa", "turin", "tdx"],
                         [f["product"] for f in listed.json()["floors"]])
        # Milan: its code, and no floor a client could take for "none"
        # (what earlier TEEFilters read: not a floor, so they fail closed).
        self.assertEqual("tcb_floor_tampered",
                         by_product["milan"]["error"]["code"])
        self.assertEqual({"error": "tcb_floor_tampered"},
                         by_product["milan"]["effective"])
        self.assertEqual({"product", "error", "effective"},
                         set(by_product["milan"]))
        # The others still answer their effective floors.
        self.assertEqual(genoa, by_product["genoa"]["set"])
        self.assertIsNotNone(by_product["genoa"]["effective"])
        self.assertNotIn("error", by_product["turin"])
        self.assertIn("effective", by_product["tdx"])
        # One product's view is still refused as a whole.
        self.assertEqual(409, self._show().status_code)

    def test_database_error_reading_the_floor_is_an_audited_refusal(
            self) -> None:
        secret_id, _ = self._bound_secret()
        self._released(secret_id)  # positive control
        self.server.sql("ALTER TABLE tee_floors RENAME TO tee_floors_away")
        self.addCleanup(self._table_back)
        resp, _ = self._attempt(secret_id)
        self.assertEqual(503, resp.status_code, resp.text)
        self.assertEqual("tcb_floor_unavailable",
                         resp.json()["error"]["code"])
        self.assertNotIn("jwe", resp.json())
        self.assertIn(f"tee.release.denied secret={secret_id} "
                      "codes=tcb_floor_unavailable", self._log())
        # The floors can't be listed either: 503 with the code, not 500.
        listed = self._list()
        self.assertEqual(503, listed.status_code, listed.text)
        self.assertEqual("tcb_floor_unavailable",
                         listed.json()["error"]["code"])
        self._table_back()
        self._released(secret_id)

    def _table_back(self) -> None:
        if "tee_floors_away" in self.server.table_names():
            self.server.sql(
                "ALTER TABLE tee_floors_away RENAME TO tee_floors")

    def test_who_may_read_and_set(self) -> None:
        for roles, code in (("member", 403), ("reader", 403),
                            ("service", 403)):
            with self.subTest(roles=roles):
                resp = self._set("milan", CONFIG_MILAN, roles=roles)
                self.assertEqual(code, resp.status_code, resp.text)
                self.assertEqual("forbidden", resp.json()["error"]["code"])
        self.assertEqual(403, self._show(roles="member").status_code)
        self.assertEqual(200, self._show(roles="service").status_code)
        self.assertEqual(200, self._show(roles="admin").status_code)
        for product, body, status, code in (
                ("sparc", CONFIG_MILAN, 404, "floor_product_unknown"),
                ("milan", {"snp": 9}, 400, "floor_invalid"),
                ("milan", dict(CONFIG_MILAN, fmc=1), 400, "floor_invalid"),
                ("milan", dict(CONFIG_MILAN, snp=256), 400,
                 "floor_invalid"),
                ("milan", dict(CONFIG_MILAN, snp=True), 400,
                 "floor_invalid"),
                ("tdx", {"tcb_statuses": ["Revoked"]}, 400,
                 "floor_invalid"),
                ("tdx", {"tcb_statuses": ["UpToDate"],
                         "min_tee_tcb_svn": "zz"}, 400, "floor_invalid")):
            with self.subTest(product=product, body=body):
                resp = self._set(product, body)
                self.assertEqual(status, resp.status_code, resp.text)
                self.assertEqual(code, resp.json()["error"]["code"])
        turin = self._set("turin", {"bootloader": 1, "tee": 0, "snp": 1,
                                    "microcode": 1, "fmc": 2})
        self.assertEqual(200, turin.status_code, turin.text)
        self.assertEqual(2, turin.json()["effective"]["fmc"])
