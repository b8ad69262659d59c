"""Attacks on the database and on Barbican's ACLs, against a real barbican-api.

The attacker here can write Barbican's database (not read the KEK), or is
another user of the owner's project. Each attack is made the way such an
attacker would make it: rows are found by value and copied, deleted or
written back with SQL; each is refused, next to the legitimate path that
still works.
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import requests

from barbican_tee.client import guest
from openstack_tee_demo import flows
from tests.functional.barbican import test_release as base_release

OWNER = base_release.OWNER
OTHER = base_release.OTHER
MEASUREMENT = base_release.MEASUREMENT
LAX = b"\x07" * 48
INSTANCE = "3c5ed4b5-1f4b-4c8f-8e72-7d2d1e2e4b03"


class _Base(base_release._ServerTestBase):

    # The attacks below make many attempts on one secret in a minute.
    EXTRA_CONF = {"tee_api": {"release_rate_per_secret": "1000",
                              "release_rate_per_client": "10000"}}

    # -- the attacker's SQL ---------------------------------------------
    def _rows(self, secret_id: str) -> dict[str, str]:
        """The secret's sealed record, found by value (its own id)."""
        rows = self.server.sql(
            "SELECT secret_store_metadata.key, value FROM "
            "secret_store_metadata WHERE deleted = :f AND secret_id IN "
            "(SELECT secret_id FROM secret_store_metadata WHERE "
            "secret_store_metadata.key = 'tee_secret' AND value = :id) "
            "AND secret_store_metadata.key LIKE 'tee_%'",
            {"id": secret_id, "f": False})
        self.assertTrue(rows, "no sealed record found")
        return {r["key"]: r["value"] for r in rows}

    def _write(self, secret_id: str, rows: dict[str, str]) -> None:
        for key, value in rows.items():
            self.server.sql(
                "UPDATE secret_store_metadata SET value = :value WHERE "
                "secret_id = :id AND secret_store_metadata.key = :key AND "
                "deleted = :f",
                {"value": value, "id": secret_id, "key": key, "f": False})

    def _delete_row(self, secret_id: str, key: str) -> dict[str, Any]:
        """Delete one row; the whole row, to put back."""
        where = ("WHERE secret_id = :id AND "
                 "secret_store_metadata.key = :key")
        params = {"id": secret_id, "key": key}
        row = self.server.sql(
            "SELECT * FROM secret_store_metadata " + where, params)[0]
        self.server.sql("DELETE FROM secret_store_metadata " + where, params)
        return row

    def _insert_row(self, row: dict[str, Any]) -> None:
        self.server.insert("secret_store_metadata", row)

    def _granted(self, secret_id: str, key: bytes, **report: Any) -> None:
        resp, guest_key = self._attempt(secret_id, **report)
        self.assertEqual(200, resp.status_code, resp.text)
        self.assertEqual(key, guest.decrypt(resp.json()["jwe"], guest_key))

    def _service(self) -> dict[str, str]:
        return self._headers("nova-service-project", "service")

    def _bind_instance(self, secret_id: str, instance: str = INSTANCE
                       ) -> None:
        resp = requests.put(
            f"{self.url}/v1/tee/instances/{instance}/secrets/{secret_id}",
            headers=self._service(), json={"project_id": OWNER},
            timeout=30)
        self.assertEqual(200, resp.status_code, resp.text)

    def _delete_instance(self, instance: str = INSTANCE) -> None:
        resp = requests.delete(f"{self.url}/v1/tee/instances/{instance}",
                               headers=self._service(), timeout=30)
        self.assertEqual(204, resp.status_code, resp.text)


def _host_data(instance: str) -> bytes:
    return hashlib.sha256(b"openstack-tee:v1:" + instance.encode()).digest()


class RecordBindingTest(_Base):
    """Findings 1, 4 and 5: the record is bound and carries its binding."""

    def test_a_record_copied_onto_another_secret_does_not_open(self) -> None:
        a, key_a = self._bound_secret()
        b, key_b = self._bound_secret()
        self._granted(a, key_a)
        self._granted(b, key_b)
        rows_a = self._rows(a)
        self._write(b, rows_a)
        # The copy carries a's id: refused before anything is opened ...
        self._refused("sealed_record_moved", b)
        # ... and with b's id written over it, the AAD no longer matches.
        self._write(b, {"tee_secret": b})
        self._refused("sealed_record_corrupt", b)
        self._granted(a, key_a)

    def test_a_record_moved_across_projects_does_not_open(self) -> None:
        mine, key = self._bound_secret()
        # The other project's secret, bound to its own policy (sealed with
        # POST /v1/tee/secrets: that project prefers no store).
        theirs, their_key = flows.owner_secret(
            self.url, OTHER, {"tee": "amd-sev-snp",
                              "measurements": [LAX.hex()]})
        self._granted(theirs, their_key, measurement=LAX)
        # My record, id rewritten, under their secret: their lax guest
        # does not get my key.
        self._write(theirs, dict(self._rows(mine), tee_secret=theirs))
        self._refused("sealed_record_corrupt", theirs, measurement=LAX)
        self._granted(mine, key)

    def test_any_row_deleted_refuses_and_never_loosens(self) -> None:
        secret_id, key = self._bound_secret()
        self._bind_instance(secret_id)
        mine = _host_data(INSTANCE)
        self._granted(secret_id, key, host_data=mine)
        self._refused("instance_mismatch", secret_id,
                      host_data=_host_data(base_release.SEVPreAttestationTest
                                           .INSTANCE))
        rows = self._rows(secret_id)
        for key_name in sorted(rows):
            with self.subTest(row=key_name):
                row = self._delete_row(secret_id, key_name)
                resp, _ = self._attempt(secret_id, host_data=b"\0" * 32)
                self.assertEqual(403, resp.status_code, resp.text)
                self.assertIn(resp.json()["error"]["code"],
                              ("sealed_record_corrupt",
                               "sealed_record_unbound",
                               "sealed_record_moved"))
                self._insert_row(row)
        self._granted(secret_id, key, host_data=mine)

    def test_a_retired_secret_stays_retired(self) -> None:
        secret_id, key = self._bound_secret()
        self._bind_instance(secret_id)
        mine = _host_data(INSTANCE)
        live = self._rows(secret_id)
        self._granted(secret_id, key, host_data=mine)
        self._delete_instance()
        self._refused("instance_deleted", secret_id, host_data=mine)
        retired = self._rows(secret_id)
        # Each row of the live record written back alone: never a release.
        for key_name in sorted(live):
            if live[key_name] == retired[key_name]:
                continue
            with self.subTest(row=key_name):
                self._write(secret_id, {key_name: live[key_name]})
                self._refused("sealed_record_corrupt", secret_id,
                              host_data=mine)
                self._write(secret_id, retired)
        self._refused("instance_deleted", secret_id, host_data=mine)

    def test_an_older_binding_written_back_is_refused(self) -> None:
        secret_id, key = self._secret()
        lax = self._policy(measurements=[LAX.hex(), MEASUREMENT.hex()])
        self._bind(secret_id, lax)
        self._granted(secret_id, key, measurement=LAX)
        before = self._rows(secret_id)
        self._bind(secret_id, self._policy())
        self._refused("policy_measurement", secret_id, measurement=LAX)
        after = self._rows(secret_id)
        changed = sorted(k for k in before if before[k] != after[k])
        self.assertIn("tee_policy", changed)
        self.assertIn("tee_gen", changed)
        for key_name in changed:
            with self.subTest(row=key_name):
                self._write(secret_id, {key_name: before[key_name]})
                resp, _ = self._attempt(secret_id, measurement=LAX)
                self.assertEqual(403, resp.status_code, resp.text)
                self.assertEqual("sealed_record_corrupt",
                                 resp.json()["error"]["code"])
                self._write(secret_id, after)
        self._granted(secret_id, key)

    def test_a_deleted_policy_restored_binds_nothing(self) -> None:
        secret_id, key = self._secret()
        policy_id = self._policy()
        self._bind(secret_id, policy_id)
        saved = self.server.sql("SELECT * FROM tee_policies WHERE id = :id",
                                {"id": policy_id})[0]
        resp = requests.delete(f"{self.url}/v1/tee/policies/{policy_id}",
                               headers=self._headers(OWNER), timeout=30)
        self.assertEqual(204, resp.status_code, resp.text)
        self.server.insert("tee_policies", saved)
        self._refused("secret_no_policy", secret_id)
        self._bind(secret_id, policy_id)
        self._granted(secret_id, key)

    def test_a_launch_session_pointed_at_another_secret_opens_nothing(
            self) -> None:
        sev = base_release.SEVPreAttestationTest
        firmware = sev.FIRMWARE
        digest = hashlib.sha256(firmware).hexdigest()
        victim, _ = self._secret()
        self._bind(victim, self._policy(tee="amd-sev", measurements=[digest],
                                        min_tcb={}, signers=[]))
        self._bind_instance(victim, sev.INSTANCE)
        mine, _ = self._secret()
        self._bind(mine, self._policy(tee="amd-sev", measurements=[digest],
                                      min_tcb={}, signers=[]))
        self._bind_instance(mine)
        chain = self.sev.pek + self.sev.oca + self.sev.cek
        resp = requests.post(
            f"{self.url}/v1/tee/sev/sessions", timeout=30,
            headers=self._service(), json={
                "secret_id": mine, "policy": sev.POLICY,
                "pdh": base64.b64encode(self.sev.pdh).decode(),
                "cert_chain": base64.b64encode(chain).decode(),
                "instance_uuid": INSTANCE})
        self.assertEqual(201, resp.status_code, resp.text)
        body = resp.json()
        launch = self.sev.launch_start(base64.b64decode(body["dh_cert"]),
                                       base64.b64decode(body["session"]),
                                       sev.POLICY)
        launch.launch_update_data(firmware)
        measurement = launch.launch_measure()
        self.server.sql("UPDATE tee_sev_sessions SET secret_id = :victim, "
                        "instance_uuid = :instance WHERE id = :id",
                        {"victim": victim, "instance": sev.INSTANCE,
                         "id": body["session_id"]})
        major, minor = self.sev.api
        resp = requests.post(
            f"{self.url}/v1/tee/sev/sessions/{body['session_id']}"
            "/measurement", timeout=30, headers=self._service(),
            json={"measurement": base64.b64encode(measurement).decode(),
                  "api_major": major, "api_minor": minor,
                  "build_id": self.sev.build_id, "policy": sev.POLICY})
        self.assertEqual(403, resp.status_code, resp.text)
        self.assertEqual("sev_session_tampered",
                         resp.json()["error"]["code"])
        self.assertNotIn("secret", resp.json())


class WholeRecordRollbackTest(_Base):
    """A whole record written back: refused by a worker that saw newer.

    With one worker every request goes to the worker that made the change.
    (Across restarts, or to a worker that never saw the newer record, this
    is the documented limit of a whole-database rollback.)
    """

    WORKERS = 1

    def test_the_whole_older_record_written_back(self) -> None:
        secret_id, key = self._secret()
        self._bind(secret_id, self._policy(
            measurements=[LAX.hex(), MEASUREMENT.hex()]))
        self._granted(secret_id, key, measurement=LAX)
        before = self._rows(secret_id)
        self._bind(secret_id, self._policy())
        self._write(secret_id, before)
        self._refused("binding_rolled_back", secret_id, measurement=LAX)
        self._refused("binding_rolled_back", secret_id)


class BarbicanRulesTest(_Base):
    """Finding 3: binding follows Barbican's ACL and creator rules."""

    CREATOR = "creator-user"
    MEMBER = "other-member"

    def _as(self, user: str, roles: str = "member,reader"
            ) -> dict[str, str]:
        return {"X-Project-Id": OWNER, "X-User-Id": user, "X-Roles": roles,
                "Content-Type": "application/json"}

    def _private_secret(self) -> tuple[str, bytes]:
        key = b"k" * 32
        resp = requests.post(f"{self.url}/v1/secrets", timeout=30,
                             headers=self._as(self.CREATOR), json={
                                 "payload": base64.b64encode(key).decode(),
                                 "payload_content_type":
                                     "application/octet-stream",
                                 "payload_content_encoding": "base64"})
        self.assertEqual(201, resp.status_code, resp.text)
        secret_id = resp.json()["secret_ref"].rsplit("/", 1)[1]
        resp = requests.put(f"{self.url}/v1/secrets/{secret_id}/acl",
                            timeout=30, headers=self._as(self.CREATOR),
                            json={"read": {"project-access": False,
                                           "users": []}})
        self.assertEqual(200, resp.status_code, resp.text)
        return secret_id, key

    def _policy_as(self, user: str, measurement: bytes) -> str:
        resp = requests.post(f"{self.url}/v1/tee/policies", timeout=30,
                             headers=self._as(user), json={
                                 "tee": "amd-sev-snp",
                                 "measurements": [measurement.hex()]})
        self.assertEqual(201, resp.status_code, resp.text)
        return str(resp.json()["id"])

    def _put_policy(self, user: str, secret_id: str, policy_id: str,
                    roles: str = "member,reader") -> requests.Response:
        return requests.put(
            f"{self.url}/v1/tee/secrets/{secret_id}/policy", timeout=30,
            headers=self._as(user, roles), json={"policy_id": policy_id})

    def test_a_member_who_cannot_read_the_secret_cannot_bind_it(
            self) -> None:
        secret_id, key = self._private_secret()
        mine = self._policy_as(self.CREATOR, MEASUREMENT)
        self.assertEqual(200, self._put_policy(self.CREATOR, secret_id,
                                               mine).status_code)
        self._granted(secret_id, key)
        # Barbican itself refuses the other member the metadata ...
        resp = requests.get(f"{self.url}/v1/secrets/{secret_id}",
                            headers=self._as(self.MEMBER), timeout=30)
        self.assertEqual(403, resp.status_code, resp.text)
        # ... so binding it to their own policy, unbinding it, or deleting
        # the policy it is bound to are refused too.
        theirs = self._policy_as(self.MEMBER, LAX)
        resp = self._put_policy(self.MEMBER, secret_id, theirs)
        self.assertEqual(403, resp.status_code, resp.text)
        self.assertEqual("secret_forbidden", resp.json()["error"]["code"])
        resp = requests.delete(
            f"{self.url}/v1/tee/secrets/{secret_id}/policy", timeout=30,
            headers=self._as(self.MEMBER))
        self.assertEqual(403, resp.status_code, resp.text)
        self.assertEqual("secret_forbidden", resp.json()["error"]["code"])
        resp = requests.delete(f"{self.url}/v1/tee/policies/{mine}",
                               headers=self._as(self.MEMBER), timeout=30)
        self.assertEqual(403, resp.status_code, resp.text)
        self.assertEqual("policy_in_use", resp.json()["error"]["code"])
        # Nothing changed: their guest is refused, the owner's still served.
        self._refused("policy_measurement", secret_id, measurement=LAX)
        self._granted(secret_id, key)

    def test_the_creator_and_a_project_admin_may_change_the_binding(
            self) -> None:
        secret_id, key = self._private_secret()
        first = self._policy_as(self.CREATOR, LAX)
        self.assertEqual(200, self._put_policy(self.CREATOR, secret_id,
                                               first).status_code)
        self._granted(secret_id, key, measurement=LAX)
        second = self._policy_as(self.CREATOR, MEASUREMENT)
        resp = self._put_policy("some-admin", secret_id, second,
                                roles="admin,member,reader")
        self.assertEqual(200, resp.status_code, resp.text)
        self._refused("policy_measurement", secret_id, measurement=LAX)
        self._granted(secret_id, key)
        resp = requests.delete(
            f"{self.url}/v1/tee/secrets/{secret_id}/policy", timeout=30,
            headers=self._as(self.CREATOR))
        self.assertEqual(204, resp.status_code, resp.text)
        self._refused("secret_no_policy", secret_id)
        # A policy bound only to the member's own secrets is theirs to
        # delete.
        resp = requests.delete(f"{self.url}/v1/tee/policies/{first}",
                               headers=self._as(self.MEMBER), timeout=30)
        self.assertEqual(204, resp.status_code, resp.text)
        self.assertEqual([], [p for p in requests.get(
            f"{self.url}/v1/tee/policies", headers=self._as(self.CREATOR),
            timeout=30).json()["policies"] if p["id"] == first])
