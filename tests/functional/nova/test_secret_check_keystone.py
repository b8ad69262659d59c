"""nova-api's ``tee_secret`` check through castellan, with a real token.

Nova's castellan path as nova-api takes it (``[key_manager] backend =
barbican``, ``[barbican] auth_endpoint`` and ``barbican_endpoint``), from
a Nova request context that carries a Keystone token, against
barbican-api behind keystonemiddleware (see
tests/functional/barbican/keystone_fixture.py). No header stands for the
token here: castellan re-authenticates with it at Keystone, and our
``GET /v1/tee/secrets/{id}/policy`` call sends it.
"""

from __future__ import annotations

import base64
import contextlib
import os

from castellan import options as castellan_options
from nova import context as nova_context
from oslo_config import cfg
from oslo_config import fixture as config_fixture
import requests

from nova_tee.api import middleware
from tests import base
from tests.functional.barbican import keystone_fixture as kf


class CastellanKeystoneTest(base.TestCase):

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        cls.keystone = kf.KeystoneServer()
        cls.barbican = kf.KeystoneBarbicanServer(cls.keystone, workers=1)
        try:
            cls.keystone.setUp()
            cls.barbican.setUp()
            cls.tokens = {u: cls.keystone.token(u)
                          for u in ("a-member", "a-admin", "b-member")}
            stores = cls._call("GET", "/v1/secret-stores", "a-admin").json()
            sealed = [s["secret_store_ref"] for s in stores["secret_stores"]
                      if "tee" in s["name"].lower()]
            requests.post(sealed[0] + "/preferred", timeout=30, headers={
                "X-Auth-Token": cls.tokens["a-admin"]}).raise_for_status()
            cls.bound = cls._secret()
            cls.unbound = cls._secret()
            policy = cls._call("POST", "/v1/tee/policies", "a-member", json={
                "name": "p", "tee": "amd-sev-snp",
                "measurements": ["5a" * 48]})
            policy.raise_for_status()
            cls._call("PUT", f"/v1/tee/secrets/{cls.bound}/policy",
                      "a-member", json={"policy_id": policy.json()["id"]}
                      ).raise_for_status()
        except BaseException:
            cls._teardown()
            raise

    @classmethod
    def _teardown(cls) -> None:
        for fix in (cls.barbican, cls.keystone):
            with contextlib.suppress(AttributeError):
                fix.cleanUp()

    @classmethod
    def tearDownClass(cls) -> None:
        cls._teardown()
        super().tearDownClass()

    @classmethod
    def _call(cls, method: str, path: str, user: str,
              **kw: object) -> requests.Response:
        return requests.request(method, cls.barbican.url + path, timeout=30,
                                headers={"X-Auth-Token": cls.tokens[user]},
                                **kw)  # type: ignore[arg-type]

    @classmethod
    def _secret(cls) -> str:
        resp = cls._call("POST", "/v1/secrets", "a-member", json={
            "payload": base64.b64encode(os.urandom(32)).decode(),
            "payload_content_type": "application/octet-stream",
            "payload_content_encoding": "base64"})
        resp.raise_for_status()
        return str(resp.json()["secret_ref"].rsplit("/", 1)[1])

    def setUp(self) -> None:
        super().setUp()
        # nova-api parses its configuration before serving; no file here.
        cfg.CONF([], project="nova", default_config_files=[])
        conf = self.useFixture(config_fixture.Config(cfg.CONF))
        castellan_options.set_defaults(
            cfg.CONF, backend="barbican",
            barbican_endpoint=self.barbican.url,
            auth_endpoint=self.keystone.auth_url)
        conf.config(api_noauth_identity=False, group="tee")
        middleware.TEESecretCheck._managers.clear()  # noqa: SLF001

    def ctx(self, user: str) -> nova_context.RequestContext:
        # What keystonemiddleware and Nova's keystonecontext make of the
        # user's token in nova-api.
        who = self.keystone.user(user)
        return nova_context.RequestContext(
            user_id=self.keystone.user_ids[user],
            project_id=self.keystone.project_id(who.project),
            roles=list(who.roles), auth_token=self.tokens[user])

    def test_bound_secret_passes_with_the_members_token(self) -> None:
        middleware.TEESecretCheck.check(self.ctx("a-member"), self.bound)

    def test_unbound_secret_is_refused(self) -> None:
        exc = self.assertRaises(middleware.SecretCheckError,
                                middleware.TEESecretCheck.check,
                                self.ctx("a-member"), self.unbound)
        self.assertIn("bound to no attestation policy", str(exc))

    def test_other_projects_token_is_refused(self) -> None:
        exc = self.assertRaises(middleware.SecretCheckError,
                                middleware.TEESecretCheck.check,
                                self.ctx("b-member"), self.bound)
        self.assertIn("cannot be read by you in Barbican", str(exc))

    def test_a_token_barbican_refuses_is_a_refusal(self) -> None:
        # Expired or revoked: nova-api's own auth_token let it through a
        # moment ago, Keystone and Barbican refuse it now. A 400 with the
        # reason, never an exception out of the filter (a 500).
        ctx = self.ctx("a-member")
        ctx.auth_token = "gAAAAA" + "x" * 180  # noqa: S105 - not a token
        exc = self.assertRaises(middleware.SecretCheckError,
                                middleware.TEESecretCheck.check,
                                ctx, self.bound)
        self.assertIn(f"tee_secret {self.bound} cannot", str(exc))
