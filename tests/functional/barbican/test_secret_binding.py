"""``GET /v1/tee/secrets/{id}/policy`` against a real barbican-api.

What nova-api asks at server create: is the secret the user's, readable
by them under Barbican's own rules, sealed, and bound to a policy. Never
the payload.
"""

from __future__ import annotations

import base64
import os

import requests

from barbican_tee.client import rest
from tests import base
from tests.functional.barbican import fixture
from tests.functional.barbican import stores

OWNER = "5e1f0a2b3c4d5e6f708192a3b4c5d6e7"
OTHER = "aaaabbbbccccddddeeeeffff00001111"
MISSING = "0b7a52e2-3c0e-4bd9-9a4b-5e3bdf1e8f10"


class SecretBindingTest(base.TestCase):

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        cls.server = fixture.BarbicanServer(workers=1)
        cls.server.setUp()
        cls.url = cls.server.url
        # Before the project prefers the sealed store: an ordinary secret.
        cls.plain, _ = cls._secret(OWNER)
        stores.prefer_sealed_store(cls.url, cls._headers(OWNER))
        cls.unbound, _ = cls._secret(OWNER)
        cls.bound, cls.key = cls._secret(OWNER)
        cls.policy_id = cls.client(OWNER).create_policy(
            {"tee": "amd-sev-snp", "measurements": ["ab" * 48]})["id"]
        cls.client(OWNER).bind_secret(cls.bound, cls.policy_id)

    @classmethod
    def tearDownClass(cls) -> None:
        cls.server.cleanUp()
        super().tearDownClass()

    @staticmethod
    def _headers(project: str, user: str = "owner",
                 roles: str = "admin,member,reader") -> dict[str, str]:
        return {"X-Project-Id": project, "X-User-Id": user,
                "X-Roles": roles}

    @classmethod
    def client(cls, project: str, user: str = "owner",
               roles: str = "member") -> rest.TEEClient:
        return rest.TEEClient(cls.url,
                              headers=cls._headers(project, user, roles))

    @classmethod
    def _secret(cls, project: str) -> tuple[str, bytes]:
        key = os.urandom(32)
        resp = requests.post(
            f"{cls.url}/v1/secrets", headers=cls._headers(project),
            timeout=30, json={
                "payload": base64.b64encode(key).decode(),
                "payload_content_type": "application/octet-stream",
                "payload_content_encoding": "base64"})
        resp.raise_for_status()
        return resp.json()["secret_ref"].rsplit("/", 1)[1], key

    def _refused(self, secret_id: str, project: str = OWNER,
                 user: str = "owner", roles: str = "member"
                 ) -> rest.TEEClientError:
        return self.assertRaises(
            rest.TEEClientError,
            self.client(project, user, roles).secret_binding, secret_id)

    def test_bound_sealed_secret(self) -> None:
        resp = requests.get(
            f"{self.url}/v1/tee/secrets/{self.bound}/policy",
            headers=self._headers(OWNER, roles="member"), timeout=30)
        self.assertEqual(200, resp.status_code, resp.text)
        self.assertEqual({"secret_id": self.bound,
                          "policy_id": self.policy_id, "sealed": True},
                         resp.json())
        self.assertNotIn(base64.b64encode(self.key), resp.content)
        self.assertNotIn(self.key.hex().encode(), resp.content)

    def test_sealed_secret_without_policy(self) -> None:
        self.assertEqual({"secret_id": self.unbound, "policy_id": None,
                          "sealed": True},
                         self.client(OWNER).secret_binding(self.unbound))

    def test_not_sealed(self) -> None:
        exc = self._refused(self.plain)
        self.assertEqual((409, "secret_not_sealed"), (exc.status, exc.code))

    def test_missing_and_other_projects_secret(self) -> None:
        for secret_id, project in ((MISSING, OWNER), (self.bound, OTHER)):
            exc = self._refused(secret_id, project)
            self.assertEqual((404, "secret_not_found"),
                             (exc.status, exc.code))

    def test_barbican_read_rule_is_enforced(self) -> None:
        # A private secret (Barbican ACL): another member of the project
        # may not read it, so may not learn its binding either.
        secret_id, _ = self._secret(OWNER)
        requests.put(f"{self.url}/v1/secrets/{secret_id}/acl",
                     headers=self._headers(OWNER), timeout=30,
                     json={"read": {"project-access": False,
                                    "users": []}}).raise_for_status()
        exc = self._refused(secret_id, user="colleague",
                            roles="member,reader")
        self.assertEqual((403, "secret_forbidden"), (exc.status, exc.code))
        # Barbican itself refuses the same user the secret's metadata.
        resp = requests.get(
            f"{self.url}/v1/secrets/{secret_id}", timeout=30,
            headers={**self._headers(OWNER, "colleague", "member,reader"),
                     "Accept": "application/json"})
        self.assertEqual(403, resp.status_code)
        # The creator still may.
        self.assertEqual(secret_id, self.client(
            OWNER, roles="member,reader").secret_binding(
            secret_id)["secret_id"])

    def test_needs_a_role_and_a_token(self) -> None:
        exc = self._refused(self.bound, roles="nobody")
        self.assertEqual((403, "forbidden"), (exc.status, exc.code))
        resp = requests.get(f"{self.url}/v1/tee/secrets/{self.bound}/policy",
                            timeout=30)
        # Barbican's context middleware refuses a request with no
        # identity before the route is reached.
        self.assertIn(resp.status_code, (400, 401), resp.text)
        self.assertNotIn(b"policy_id", resp.content)
