"""``POST /v1/tee/secrets``: sealed secrets without a preferred store.

A member (not an admin) creates stored and generated sealed secrets
through a real barbican-api; the project's preferred store stays unset,
the project's other secrets stay ordinary and readable, and the sealed
ones leave only by attested release (the software SNP model). Barbican's
own RBAC, validators and quotas decide, each refusal with its code.
"""

from __future__ import annotations

import base64
import os
import shutil
import tempfile
from typing import Any
import uuid

import requests

from barbican_tee.client import guest
from tests.functional.barbican import test_release

MEMBER = "5ea1ed0c0ffee0000000000000000001"
OTHER = "5ea1ed0c0ffee0000000000000000002"
KEY_B64 = base64.b64encode(b"\x5a" * 32).decode()
# Not base64 (its length is 3 mod 4), and easy to find in a log.
BAD_B64 = "SEALEDxPAYLOADxNOTxB64"


class SealedCreateTest(test_release._ServerTestBase):

    @staticmethod
    def _h(project: str = MEMBER, roles: str = "member",
           user: str = "alice") -> dict[str, str]:
        return {"X-Project-Id": project, "X-Roles": roles,
                "X-User-Id": user, "Content-Type": "application/json"}

    def _create(self, body: dict[str, Any], project: str = MEMBER,
                roles: str = "member") -> requests.Response:
        return requests.post(f"{self.url}/v1/tee/secrets", json=body,
                             headers=self._h(project, roles), timeout=30)

    def _created(self, body: dict[str, Any],
                 project: str = MEMBER) -> str:
        resp = self._create(body, project)
        self.assertEqual(201, resp.status_code, resp.text)
        ref = resp.json()["secret_ref"]
        # A normal Barbican secret ref on this server.
        self.assertTrue(ref.startswith(f"{self.url}/v1/secrets/"), ref)
        return str(uuid.UUID(ref.rsplit("/", 1)[1]))

    def _stored_body(self, key: bytes, **extra: Any) -> dict[str, Any]:
        body = {"name": "disk-key", "secret_type": "symmetric",
                "payload": base64.b64encode(key).decode(),
                "payload_content_type": "application/octet-stream",
                "payload_content_encoding": "base64"}
        body.update(extra)
        return body

    def _member_policy(self, project: str = MEMBER) -> str:
        doc = {"name": "web", "tee": "amd-sev-snp",
               "measurements": [test_release.MEASUREMENT.hex()],
               "min_tcb": {"bootloader": 3, "snp": 8, "microcode": 115},
               "guest_policy": {"debug": False}, "signers": ["vcek"]}
        resp = requests.post(f"{self.url}/v1/tee/policies", json=doc,
                             headers=self._h(project), timeout=30)
        self.assertEqual(201, resp.status_code, resp.text)
        return str(resp.json()["id"])

    def _preferred(self, project: str = MEMBER) -> int:
        return requests.get(f"{self.url}/v1/secret-stores/preferred",
                            headers=self._h(project,
                                            "admin,member,reader"),
                            timeout=30).status_code

    def _count(self, project: str = MEMBER) -> int:
        resp = requests.get(f"{self.url}/v1/secrets?limit=100",
                            headers=self._h(project), timeout=30)
        self.assertEqual(200, resp.status_code, resp.text)
        return int(resp.json()["total"])

    def _payload(self, secret_id: str,
                 project: str = MEMBER) -> requests.Response:
        return requests.get(
            f"{self.url}/v1/secrets/{secret_id}/payload", timeout=30,
            headers=dict(self._h(project),
                         Accept="application/octet-stream"))

    def _released(self, secret_id: str) -> bytes:
        resp, key = self._attempt(secret_id)
        self.assertEqual(200, resp.status_code, resp.text)
        return guest.decrypt(resp.json()["jwe"], key)

    def _assert_not_logged(self, *texts: str) -> None:
        log = self._log()
        for text in texts:
            # Not assertNotIn: its message would print the whole log.
            found = log.find(text)
            self.assertEqual(-1, found, f"{text[:12]}... is in the log")

    def _assert_key_not_logged(self, key: bytes) -> None:
        self._assert_not_logged(key.hex(), base64.b64encode(key).decode())

    # -- the member's flow ---------------------------------------------
    def test_member_stores_a_sealed_secret_preferred_store_untouched(
            self) -> None:
        self.assertEqual(404, self._preferred())
        key = os.urandom(32)
        secret_id = self._created(self._stored_body(key))
        # Barbican shows the metadata as for any secret.
        meta = requests.get(f"{self.url}/v1/secrets/{secret_id}",
                            headers=self._h(), timeout=30)
        self.assertEqual(200, meta.status_code, meta.text)
        self.assertEqual("disk-key", meta.json()["name"])
        self.assertEqual("symmetric", meta.json()["secret_type"])
        self.assertEqual("ACTIVE", meta.json()["status"])
        self.assertEqual("alice", meta.json()["creator_id"])
        # Its payload is refused as for every sealed secret.
        resp = self._payload(secret_id)
        self.assertEqual(403, resp.status_code, resp.text)
        self.assertEqual("secret_sealed", resp.json()["error"]["code"])
        # The project's preferred store is still unset, and its other
        # secrets are ordinary: stored by Barbican, readable.
        self.assertEqual(404, self._preferred())
        plain = requests.post(f"{self.url}/v1/secrets", timeout=30,
                              headers=self._h(), json={
                                  "name": "tls-key",
                                  "payload": "not sealed",
                                  "payload_content_type": "text/plain"})
        self.assertEqual(201, plain.status_code, plain.text)
        plain_id = plain.json()["secret_ref"].rsplit("/", 1)[1]
        resp = requests.get(f"{self.url}/v1/secrets/{plain_id}/payload",
                            headers=dict(self._h(), Accept="text/plain"),
                            timeout=30)
        self.assertEqual(200, resp.status_code, resp.text)
        self.assertEqual("not sealed", resp.text)
        # The same secret ref shape as Barbican's own POST.
        self.assertEqual(plain.json()["secret_ref"].rsplit("/", 1)[0],
                         f"{self.url}/v1/secrets")
        # Bound by the member, it is released by attestation only.
        policy_id = self._member_policy()
        resp = requests.put(
            f"{self.url}/v1/tee/secrets/{secret_id}/policy",
            json={"policy_id": policy_id}, headers=self._h(), timeout=30)
        self.assertEqual(200, resp.status_code, resp.text)
        self.assertEqual(key, self._released(secret_id))
        self._assert_key_not_logged(key)

    def test_generated_key_bound_at_create_is_released(self) -> None:
        policy_id = self._member_policy()
        resp = self._create({"name": "vol-key", "algorithm": "aes",
                             "bit_length": 256, "mode": "xts",
                             "policy": policy_id})
        self.assertEqual(201, resp.status_code, resp.text)
        self.assertEqual(policy_id, resp.json()["policy_id"])
        secret_id = resp.json()["secret_ref"].rsplit("/", 1)[1]
        meta = requests.get(f"{self.url}/v1/secrets/{secret_id}",
                            headers=self._h(), timeout=30).json()
        self.assertEqual(("vol-key", "aes", 256, "xts", "symmetric"),
                         (meta["name"], meta["algorithm"],
                          meta["bit_length"], meta["mode"],
                          meta["secret_type"]))
        binding = requests.get(
            f"{self.url}/v1/tee/secrets/{secret_id}/policy",
            headers=self._h(), timeout=30).json()
        self.assertEqual({"secret_id": secret_id, "policy_id": policy_id,
                          "sealed": True}, binding)
        self.assertEqual(403, self._payload(secret_id).status_code)
        key = self._released(secret_id)
        self.assertEqual(32, len(key))
        self._assert_key_not_logged(key)
        # Each key is new (128-bit HMAC keys too).
        other = self._created({"algorithm": "hmacsha256", "bit_length": 128,
                               "policy": policy_id})
        self.assertEqual(16, len(self._released(other)))
        self.assertNotEqual(key[:16], self._released(other))
        self.assertEqual(404, self._preferred())

    def test_a_stored_secret_bound_at_create(self) -> None:
        key = os.urandom(48)
        policy_id = self._member_policy()
        secret_id = self._created(self._stored_body(key, policy=policy_id))
        self.assertEqual(key, self._released(secret_id))

    def test_policy_of_another_project_or_none(self) -> None:
        theirs = self._member_policy(OTHER)
        before = self._count()
        for policy, status, code in (
                (theirs, 404, "policy_not_found"),
                (str(uuid.uuid4()), 404, "policy_not_found"),
                ("not-a-uuid", 400, "policy_id_invalid"),
                (["x"], 400, "policy_id_invalid")):
            with self.subTest(policy=policy):
                resp = self._create({"algorithm": "aes", "bit_length": 256,
                                     "policy": policy})
                self.assertEqual(status, resp.status_code, resp.text)
                self.assertEqual(code, resp.json()["error"]["code"])
        # Nothing was stored.
        self.assertEqual(before, self._count())

    # -- Barbican's RBAC and quotas ------------------------------------
    def test_reader_is_refused_by_barbicans_rbac(self) -> None:
        before = self._count()
        for roles in ("reader", "observer", ""):
            with self.subTest(roles=roles):
                resp = self._create({"algorithm": "aes", "bit_length": 256},
                                    roles=roles)
                self.assertEqual(403, resp.status_code, resp.text)
                self.assertEqual("forbidden", resp.json()["error"]["code"])
                self.assertIn("secrets:post", resp.text)
        self.assertEqual(before, self._count())
        # Control: the same request by a member.
        self._created({"algorithm": "aes", "bit_length": 256})
        self.assertEqual(before + 1, self._count())

    def test_barbicans_quota_applies(self) -> None:
        project = "5ea1ed0c0ffee0000000000000000003"
        resp = requests.put(
            f"{self.url}/v1/project-quotas/{project}", timeout=30,
            headers=self._h(MEMBER, "admin"),
            json={"project_quotas": {"secrets": 1}})
        self.assertEqual(204, resp.status_code, resp.text)
        self._created({"algorithm": "aes", "bit_length": 256}, project)
        resp = self._create({"algorithm": "aes", "bit_length": 256},
                            project)
        self.assertEqual(403, resp.status_code, resp.text)
        self.assertEqual("quota_exceeded", resp.json()["error"]["code"])
        self.assertEqual(1, self._count(project))

    # -- bad input -------------------------------------------------------
    def test_bad_input_is_400_with_its_code(self) -> None:
        octet = {"payload_content_type": "application/octet-stream",
                 "payload_content_encoding": "base64"}
        cases: list[tuple[dict[str, Any], int, str]] = [
            ({}, 400, "secret_content_missing"),
            ({"name": "k"}, 400, "secret_content_missing"),
            ({"payload": 12345, **octet}, 400, "payload_invalid"),
            ({"payload": ["x"], **octet}, 400, "payload_invalid"),
            ({"payload": "", **octet}, 400, "payload_invalid"),
            ({"payload": BAD_B64, **octet}, 400, "payload_invalid"),
            ({"payload": KEY_B64}, 400, "payload_content_type_invalid"),
            ({"payload": KEY_B64, "payload_content_type": "x/y"}, 400,
             "payload_content_type_invalid"),
            ({"payload": KEY_B64,
              "payload_content_type": "application/octet-stream",
              "payload_content_encoding": "hex"}, 400,
             "payload_content_encoding_invalid"),
            ({"payload": KEY_B64, "expiration": "2001-01-01T00:00:00Z",
              **octet}, 400, "expiration_invalid"),
            ({"payload": KEY_B64, "expiration": "soon", **octet}, 400,
             "expiration_invalid"),
            ({"payload": KEY_B64, "name": "n" * 256, **octet}, 400,
             "name_invalid"),
            ({"payload": KEY_B64, "secret_type": "bogus", **octet}, 400,
             "secret_type_invalid"),
            ({"payload": KEY_B64, "transport_key_needed": "true", **octet},
             400, "field_unknown"),
            ({"payload": "x" * 30000, "payload_content_type":
              "text/plain"}, 413, "payload_too_large"),
            ({"algorithm": "rsa", "bit_length": 2048}, 400,
             "algorithm_unsupported"),
            ({"algorithm": 7, "bit_length": 256}, 400, "algorithm_invalid"),
            ({"algorithm": "aes"}, 400, "bit_length_invalid"),
            ({"algorithm": "aes", "bit_length": 100}, 400,
             "bit_length_invalid"),
            ({"algorithm": "aes", "bit_length": 512}, 400,
             "bit_length_invalid"),
            ({"algorithm": "aes", "bit_length": "256"}, 400,
             "bit_length_invalid"),
            ({"algorithm": "aes", "bit_length": 256,
              "secret_type": "opaque"}, 400, "secret_type_invalid"),
            ({"algorithm": "aes", "bit_length": 256, "mode": ["cbc"]}, 400,
             "mode_invalid"),
        ]
        before = self._count()
        for body, status, code in cases:
            with self.subTest(body=str(body)[:80]):
                resp = self._create(body)
                self.assertEqual(status, resp.status_code, resp.text)
                self.assertEqual(code, resp.json()["error"]["code"])
                # Never the payload in the answer.
                payload = body.get("payload")
                if isinstance(payload, str) and payload:
                    self.assertNotIn(payload, resp.text)
                self.assertNotIn("12345", resp.text)
        resp = requests.post(f"{self.url}/v1/tee/secrets", data=b"{",
                             headers=self._h(), timeout=30)
        self.assertEqual(400, resp.status_code)
        self.assertEqual("body_not_json", resp.json()["error"]["code"])
        # Nothing was stored or logged, and the server is fine.
        self.assertEqual(before, self._count())
        self._assert_not_logged(BAD_B64, KEY_B64)
        self._created(self._stored_body(b"\x01" * 16))


class BindRefusedAtCreateTest(test_release._ServerTestBase):
    """Barbican's ACL rule refuses the binding: no secret is left.

    An operator's policy lets only admins change a secret's ACL (so bind
    it); a member may still create secrets.
    """

    @classmethod
    def setUpClass(cls) -> None:
        cls.policy_dir = tempfile.mkdtemp()
        path = os.path.join(cls.policy_dir, "policy.yaml")
        with open(path, "w") as f:
            f.write('"secret_acls:put_patch": "role:admin"\n')
        cls.EXTRA_CONF = {"oslo_policy": {"policy_file": path}}
        super().setUpClass()

    @classmethod
    def tearDownClass(cls) -> None:
        super().tearDownClass()
        shutil.rmtree(cls.policy_dir, ignore_errors=True)

    def test_binding_refused_deletes_the_new_secret(self) -> None:
        h = SealedCreateTest._h
        policy = requests.post(
            f"{self.url}/v1/tee/policies", headers=h(), timeout=30,
            json={"tee": "amd-sev-snp", "measurements": ["ab" * 48]})
        self.assertEqual(201, policy.status_code, policy.text)
        policy_id = policy.json()["id"]

        def count() -> int:
            return int(requests.get(f"{self.url}/v1/secrets", timeout=30,
                                    headers=h()).json()["total"])

        before = count()
        resp = requests.post(f"{self.url}/v1/tee/secrets", headers=h(),
                             timeout=30, json={"algorithm": "aes",
                                               "bit_length": 256,
                                               "policy": policy_id})
        self.assertEqual(403, resp.status_code, resp.text)
        self.assertEqual("secret_forbidden", resp.json()["error"]["code"])
        self.assertEqual(before, count())
        # The bind route refuses the member the same way...
        resp = requests.post(f"{self.url}/v1/tee/secrets", headers=h(),
                             timeout=30, json={"algorithm": "aes",
                                               "bit_length": 256})
        self.assertEqual(201, resp.status_code, resp.text)
        secret_id = resp.json()["secret_ref"].rsplit("/", 1)[1]
        resp = requests.put(
            f"{self.url}/v1/tee/secrets/{secret_id}/policy", headers=h(),
            json={"policy_id": policy_id}, timeout=30)
        self.assertEqual(403, resp.status_code, resp.text)
        self.assertEqual("secret_forbidden", resp.json()["error"]["code"])
        # ... and lets an admin bind, at create too.
        resp = requests.post(f"{self.url}/v1/tee/secrets", timeout=30,
                             headers=h(roles="admin,member"),
                             json={"algorithm": "aes", "bit_length": 256,
                                   "policy": policy_id})
        self.assertEqual(201, resp.status_code, resp.text)
        self.assertEqual(policy_id, resp.json()["policy_id"])
        self.assertEqual(before + 2, count())
