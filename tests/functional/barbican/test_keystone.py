"""The suite with a real Keystone: tokens, roles and projects.

Keystone 30.0.0 (sqlite, fernet, gunicorn) and barbican-api configured as
the devstack plugins configure it (keystonemiddleware's auth_token and
Barbican's context middleware in the ``/v1`` pipeline, Secure RBAC, our
filters added by ``barbican_tee.api.paste``); see keystone_fixture.py.
The ``openstack`` CLI authenticates with passwords and finds barbican-api
in Keystone's catalog (``key-manager``), as it would in a cloud.

Users: in project A a member, a reader and an admin (Keystone's default
roles, with their implications: admin implies member implies reader); in
project B a member. One Keystone and one barbican-api serve the class.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import subprocess
import tempfile
from typing import Any

import requests

from openstack_tee_demo import flows
from openstack_tee_demo.sp_model import snp as sp_snp
from tests import base
from tests.functional.barbican import keystone_fixture as kf

MEASUREMENT = b"\x5a" * 48
OTHER_MEASUREMENT = b"\x6b" * 48
HOST_DATA = b"\x00" * 32
MISSING = "00000000-0000-0000-0000-000000000000"


class KeystoneTest(base.TestCase):

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        cls.tmp = tempfile.mkdtemp()
        cls.sp = sp_snp.SecureProcessor(label="keystone")
        root = os.path.join(cls.tmp, "ark.pem")
        with open(root, "wb") as f:
            f.write(cls.sp.bundle_pem())
        cls.keystone = kf.KeystoneServer()
        cls.barbican = kf.KeystoneBarbicanServer(cls.keystone,
                                                 trust_root=root)
        try:
            cls.keystone.setUp()
            cls.barbican.setUp()
            cls.keystone.add_endpoint("key-manager", "barbican",
                                      cls.barbican.url)
        except BaseException:
            cls._teardown()
            raise
        cls.url = cls.barbican.url
        cls.tokens: dict[str, str] = {}
        # Project A's new secrets go to the sealed store: Barbican lets
        # only the project's admin choose that.
        stores = cls.rest("GET", "/v1/secret-stores", "a-admin").json()
        sealed = [s["secret_store_ref"] for s in stores["secret_stores"]
                  if "tee" in s["name"].lower()]
        resp = requests.post(sealed[0] + "/preferred", timeout=30,
                             headers=cls.auth("a-admin"))
        if resp.status_code != 204:
            cls._teardown()
            raise AssertionError(f"cannot prefer the sealed store: "
                                 f"{resp.status_code} {resp.text}")

    @classmethod
    def _teardown(cls) -> None:
        for fix in (cls.barbican, cls.keystone):
            with contextlib.suppress(AttributeError):
                fix.cleanUp()
        shutil.rmtree(cls.tmp, ignore_errors=True)

    @classmethod
    def tearDownClass(cls) -> None:
        cls._teardown()
        super().tearDownClass()

    # -- helpers -------------------------------------------------------
    @classmethod
    def auth(cls, user: str) -> dict[str, str]:
        if user not in cls.tokens:
            cls.tokens[user] = cls.keystone.token(user)
        return {"X-Auth-Token": cls.tokens[user]}

    @classmethod
    def rest(cls, method: str, path: str, user: str | None,
             **kw: Any) -> requests.Response:
        headers = cls.auth(user) if user else {}
        return requests.request(method, cls.url + path, headers=headers,
                                timeout=30, **kw)

    def run_cli(self, user: str, *args: str
                ) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("OS_")}
        env.update(self.keystone.openstack_env(user))
        return subprocess.run([base.installed_command("openstack"), *args],
                              capture_output=True, text=True, check=False,
                              env=env, timeout=120)

    def json_cli(self, user: str, *args: str) -> Any:
        proc = self.run_cli(user, *args, "-f", "json")
        self.assertEqual(0, proc.returncode, proc.stderr)
        return json.loads(proc.stdout)

    def cli_fails(self, user: str, *args: str) -> str:
        proc = self.run_cli(user, *args)
        self.assertEqual(1, proc.returncode, proc.stdout + proc.stderr)
        return proc.stderr

    def policy(self, user: str = "a-member",
               measurement: bytes = MEASUREMENT) -> str:
        resp = self.rest("POST", "/v1/tee/policies", user, json={
            "name": "web", "tee": "amd-sev-snp",
            "measurements": [measurement.hex()]})
        self.assertEqual(201, resp.status_code, resp.text)
        return str(resp.json()["id"])

    def secret(self, user: str = "a-member") -> tuple[str, bytes]:
        key = os.urandom(32)
        resp = self.rest("POST", "/v1/secrets", user, json={
            "name": "disk-key", "payload": base64.b64encode(key).decode(),
            "payload_content_type": "application/octet-stream",
            "payload_content_encoding": "base64"})
        self.assertEqual(201, resp.status_code, resp.text)
        return resp.json()["secret_ref"].rsplit("/", 1)[1], key

    def assertRefused(self, status: int, code: str,
                      resp: requests.Response) -> None:
        self.assertEqual(status, resp.status_code, resp.text)
        self.assertEqual(code, flows.error_code(resp), resp.text)

    # -- tests ---------------------------------------------------------
    def test_tokens_carry_keystones_roles(self) -> None:
        # The roles the other tests rely on, as Keystone issues them.
        self.assertEqual(["member", "reader"],
                         self.keystone.token_roles("a-member"))
        self.assertEqual(["reader"], self.keystone.token_roles("a-reader"))
        self.assertIn("admin", self.keystone.token_roles("a-admin"))
        # Without a token, or with a forged one, the token routes are
        # closed (auth_token answers before our filter).
        self.assertEqual(401, self.rest("GET", "/v1/tee/policies",
                                        None).status_code)
        resp = requests.get(f"{self.url}/v1/tee/policies", timeout=30,
                            headers={"X-Auth-Token": "gAAAAAforged",
                                     "X-Project-Id": "anything",
                                     "X-Roles": "admin"})
        self.assertEqual(401, resp.status_code, resp.text)
        # And the headers of the no-Keystone mode count for nothing.
        resp = requests.post(f"{self.url}/v1/tee/policies", timeout=30,
                             headers={"X-Project-Id": "p", "X-Roles":
                                      "admin", "X-Identity-Status":
                                      "Confirmed"},
                             json={"name": "x", "tee": "amd-sev",
                                   "measurements": ["00" * 32]})
        self.assertEqual(401, resp.status_code, resp.text)

    def test_member_manages_policies_with_the_cli(self) -> None:
        created = self.json_cli(
            "a-member", "tee", "policy", "create", "web-tier", "--tee",
            "amd-sev-snp", "--measurement", MEASUREMENT.hex(),
            "--min-tcb", "snp=22")
        policy_id = created["id"]
        # Stored in project A, as the token says.
        shown = self.rest("GET", f"/v1/tee/policies/{policy_id}",
                          "a-reader")
        self.assertEqual(200, shown.status_code, shown.text)
        self.assertEqual([MEASUREMENT.hex()], shown.json()["measurements"])
        self.assertEqual("web-tier", self.json_cli(
            "a-member", "tee", "policy", "show", policy_id)["name"])
        self.assertIn(policy_id, [p["ID"] for p in self.json_cli(
            "a-member", "tee", "policy", "list")])
        proc = self.run_cli("a-member", "tee", "policy", "delete",
                            policy_id)
        self.assertEqual(0, proc.returncode, proc.stderr)
        self.assertRefused(404, "policy_not_found", self.rest(
            "GET", f"/v1/tee/policies/{policy_id}", "a-member"))

    def test_reader_reads_but_changes_nothing(self) -> None:
        policy_id = self.policy()
        secret_id, _ = self.secret()
        # Reads the policies.
        self.assertIn(policy_id, [p["ID"] for p in self.json_cli(
            "a-reader", "tee", "policy", "list")])
        self.assertEqual(policy_id, self.json_cli(
            "a-reader", "tee", "policy", "show", policy_id)["id"])
        # A secret's binding follows Barbican's secret:get, whose Secure
        # RBAC default gives a reader no secret of a member's: refused as
        # Barbican refuses the secret itself; the member sees it.
        self.assertEqual(403, self.rest(
            "GET", f"/v1/secrets/{secret_id}", "a-reader").status_code)
        self.assertRefused(403, "secret_forbidden", self.rest(
            "GET", f"/v1/tee/secrets/{secret_id}/policy", "a-reader"))
        resp = self.rest("GET", f"/v1/tee/secrets/{secret_id}/policy",
                         "a-member")
        self.assertEqual(200, resp.status_code, resp.text)
        self.assertIsNone(resp.json()["policy_id"])
        # Changes: refused with our codes, through the CLI and the API.
        err = self.cli_fails("a-reader", "tee", "policy", "create", "r",
                             "--tee", "amd-sev-snp", "--measurement",
                             MEASUREMENT.hex())
        self.assertIn("forbidden", err)
        err = self.cli_fails("a-reader", "tee", "policy", "delete",
                             policy_id)
        self.assertIn(f"cannot delete policy {policy_id}", err)
        err = self.cli_fails("a-reader", "tee", "secret", "bind", secret_id,
                             "--policy", policy_id)
        self.assertIn("forbidden", err)
        for method, path, body in (
                ("POST", "/v1/tee/policies", {
                    "name": "r", "tee": "amd-sev-snp",
                    "measurements": [MEASUREMENT.hex()]}),
                ("DELETE", f"/v1/tee/policies/{policy_id}", None),
                ("PUT", f"/v1/tee/secrets/{secret_id}/policy",
                 {"policy_id": policy_id}),
                ("DELETE", f"/v1/tee/secrets/{secret_id}/policy", None)):
            with self.subTest(method=method, path=path):
                self.assertRefused(403, "forbidden", self.rest(
                    method, path, "a-reader", json=body))
        # Nothing changed: the policy is there, the secret unbound.
        self.assertEqual(200, self.rest(
            "GET", f"/v1/tee/policies/{policy_id}", "a-member").status_code)
        self.assertIsNone(self.rest(
            "GET", f"/v1/tee/secrets/{secret_id}/policy",
            "a-member").json()["policy_id"])
        # Barbican's own API refuses the reader a secret too.
        self.assertEqual(403, self.rest("POST", "/v1/secrets", "a-reader",
                                        json={"name": "r"}).status_code)

    def test_admin_manages_the_projects_policies(self) -> None:
        policy_id = self.policy("a-member")
        secret_id, _ = self.secret("a-member")
        self.assertIn(policy_id, [p["ID"] for p in self.json_cli(
            "a-admin", "tee", "policy", "list")])
        bound = self.json_cli("a-admin", "tee", "secret", "bind", secret_id,
                              "--policy", policy_id)
        self.assertEqual(policy_id, bound["policy_id"])
        proc = self.run_cli("a-admin", "tee", "secret", "unbind", secret_id)
        self.assertEqual(0, proc.returncode, proc.stderr)
        proc = self.run_cli("a-admin", "tee", "policy", "delete", policy_id)
        self.assertEqual(0, proc.returncode, proc.stderr)
        # Admin of A is no one in B.
        theirs = self.policy("b-member")
        self.assertRefused(404, "policy_not_found", self.rest(
            "GET", f"/v1/tee/policies/{theirs}", "a-admin"))
        self.assertRefused(404, "policy_not_found", self.rest(
            "DELETE", f"/v1/tee/policies/{theirs}", "a-admin"))

    def test_other_project_sees_and_binds_nothing(self) -> None:
        policy_id = self.policy("a-member")
        secret_id, _ = self.secret("a-member")
        mine = self.policy("b-member")
        listed = [p["ID"] for p in self.json_cli(
            "b-member", "tee", "policy", "list")]
        self.assertIn(mine, listed)
        self.assertNotIn(policy_id, listed)
        err = self.cli_fails("b-member", "tee", "policy", "show", policy_id)
        self.assertIn("policy_not_found", err)
        err = self.cli_fails("b-member", "tee", "secret", "bind", secret_id,
                             "--policy", mine)
        self.assertIn("secret_not_found", err)
        for method, path, body in (
                ("GET", f"/v1/tee/policies/{policy_id}", None),
                ("DELETE", f"/v1/tee/policies/{policy_id}", None)):
            self.assertRefused(404, "policy_not_found", self.rest(
                method, path, "b-member", json=body))
        for method, body in (("PUT", {"policy_id": mine}),
                             ("DELETE", None), ("GET", None)):
            self.assertRefused(404, "secret_not_found", self.rest(
                method, f"/v1/tee/secrets/{secret_id}/policy", "b-member",
                json=body))
        # A's member cannot bind A's secret to B's policy either.
        self.assertRefused(404, "policy_not_found", self.rest(
            "PUT", f"/v1/tee/secrets/{secret_id}/policy", "a-member",
            json={"policy_id": mine}))
        # Positive control: A's member binds it to A's policy.
        self.assertEqual(200, self.rest(
            "PUT", f"/v1/tee/secrets/{secret_id}/policy", "a-member",
            json={"policy_id": policy_id}).status_code)

    def test_bind_release_unbind_with_keystone_in_the_pipeline(self) -> None:
        secret_id, key = self.secret("a-member")
        self.assertRefused(403, "secret_sealed", self.rest(
            "GET", f"/v1/secrets/{secret_id}/payload", "a-member"))
        policy_id = self.json_cli(
            "a-member", "tee", "policy", "create", "p", "--tee",
            "amd-sev-snp", "--measurement", MEASUREMENT.hex())["id"]
        href = f"{self.url}/v1/secrets/{secret_id}"
        bound = self.json_cli("a-member", "tee", "secret", "bind", href,
                              "--policy", policy_id)
        self.assertEqual(secret_id, bound["secret_id"])
        # The guest's routes take no token: challenge and release pass
        # auth_token untouched, and the evidence decides.
        good = flows.SNPGuest(self.sp, MEASUREMENT, HOST_DATA)
        resp, _ = good.release(self.url, secret_id)
        self.assertEqual(200, resp.status_code, resp.text)
        self.assertEqual(key, good.open(resp))
        wrong = flows.SNPGuest(self.sp, OTHER_MEASUREMENT, HOST_DATA)
        resp, _ = wrong.release(self.url, secret_id)
        self.assertRefused(403, "policy_measurement", resp)
        self.assertNotIn("jwe", resp.json())
        # A token on a guest route changes nothing (and needs none).
        nonce = requests.post(f"{self.url}/v1/tee/challenge", timeout=30,
                              headers=self.auth("b-member"),
                              json={"secret_id": secret_id})
        self.assertEqual(201, nonce.status_code, nonce.text)
        # The reader cannot unbind; the member can, and then no guest
        # gets the key.
        err = self.cli_fails("a-reader", "tee", "secret", "unbind",
                             secret_id)
        self.assertIn("forbidden", err)
        resp, _ = good.release(self.url, secret_id)
        self.assertEqual(200, resp.status_code, resp.text)
        proc = self.run_cli("a-member", "tee", "secret", "unbind", href)
        self.assertEqual(0, proc.returncode, proc.stderr)
        resp, _ = good.release(self.url, secret_id)
        self.assertRefused(403, "secret_no_policy", resp)
