"""nova-api checks a server's ``tee_secret`` at create, through castellan.

Nova's own API (in-process, through a paste file with our filters), Nova's
castellan configuration (``[key_manager] backend = barbican``,
``[barbican] barbican_endpoint``) and a real barbican-api with the suite.
The harness has no Keystone: Nova runs noauth2 and Barbican its
unauthenticated pipeline, so ``[tee] api_noauth_identity`` has castellan's
Barbican key manager (and our /v1/tee call) send the request's project,
user and roles as headers instead of a token. Everything else is
castellan's own code path.
"""

from __future__ import annotations

import base64
import hashlib
import os
from typing import Any
from unittest import mock

from castellan.key_manager import barbican_key_manager
from castellan import options as castellan_options
from nova.tests.functional.api import client
from oslo_config import cfg
from oslo_utils.fixture import uuidsentinel as uuids
import requests

from openstack_tee_demo import flows
from openstack_tee_demo import nova_harness as base
from tests.functional.nova import barbican_class

OTHER = "0ther0ther0ther0ther0ther0ther00"
MEASUREMENT = hashlib.sha384(b"public image, SNP").hexdigest()


class SecretCheckTest(barbican_class.SNPBarbicanTestBase):

    def setUp(self) -> None:
        super().setUp()
        # Nova's castellan options, as an operator sets them in nova.conf.
        castellan_options.set_defaults(cfg.CONF)
        self.flags(backend="barbican", group="key_manager")
        self.flags(barbican_endpoint=self.barbican.url, group="barbican")
        self.flags(api_noauth_identity=True, group="tee")
        self.project = self.api.project_id
        self.start_tee_compute("snphost", self.snp)

    # -- secrets, made the owner's way -------------------------------------
    def _plain_secret(self, project: str) -> str:
        """A secret in the project's default (not sealed) store."""
        url = self.barbican.url
        stores = requests.get(f"{url}/v1/secret-stores", timeout=30,
                              headers=flows.headers(project)).json()
        sealed = [s for s in stores["secret_stores"]
                  if "tee" in s["name"].lower()][0]
        # The project may prefer the sealed store (owner_secret does).
        unset = requests.delete(sealed["secret_store_ref"] + "/preferred",
                                headers=flows.headers(project), timeout=30)
        self.assertIn(unset.status_code, (204, 404), unset.text)
        resp = requests.post(f"{url}/v1/secrets", timeout=30,
                             headers=flows.headers(project), json={
                                 "payload": base64.b64encode(
                                     os.urandom(32)).decode(),
                                 "payload_content_type":
                                     "application/octet-stream",
                                 "payload_content_encoding": "base64"})
        resp.raise_for_status()
        return str(resp.json()["secret_ref"].rsplit("/", 1)[1])

    def _sealed_unbound(self, project: str) -> str:
        bound, _key = flows.owner_secret(
            self.barbican.url, project,
            {"tee": "amd-sev-snp", "measurements": [MEASUREMENT]})
        requests.delete(
            f"{self.barbican.url}/v1/tee/secrets/{bound}/policy",
            headers=flows.headers(project), timeout=30).raise_for_status()
        return bound

    def _bound(self, project: str) -> str:
        secret_id, _key = flows.owner_secret(
            self.barbican.url, project,
            {"tee": "amd-sev-snp", "measurements": [MEASUREMENT]})
        return secret_id

    # -- servers ------------------------------------------------------------
    def _body(self, secret_id: str,
              flavor: str | None = None) -> dict[str, Any]:
        if flavor is None:
            flavor = self.tee_flavor("amd-sev-snp", attestation="required")
        body = self._build_server(image_uuid=uuids.tee_snp_image,
                                  flavor_id=flavor, networks="none")
        body["metadata"] = {"tee_secret": secret_id}
        return {"server": body}

    def _refused(self, secret_id: str, *reason: str) -> None:
        with base.snp_caps():
            exc = self.assertRaises(client.OpenStackApiException,
                                    self.api.post_server,
                                    self._body(secret_id))
        self.assertEqual(400, exc.response.status_code, exc.response.text)
        message = exc.response.json()["badRequest"]["message"]
        self.assertIn(f"tee_secret {secret_id}", message)
        for part in reason:
            self.assertIn(part, message)
        # Nothing was created.
        self.assertEqual([], self.api.get_servers())

    def test_missing_secret(self) -> None:
        self._refused("6a1d3c55-8a7b-4f8e-9d51-2c0c33c5c0de",
                      "does not exist in Barbican")

    def test_other_projects_secret(self) -> None:
        secret_id = self._bound(OTHER)
        self._refused(secret_id, "cannot be read by you in Barbican",
                      "Forbidden")

    def test_not_sealed(self) -> None:
        self._refused(self._plain_secret(self.project), "is not sealed")

    def test_sealed_without_policy(self) -> None:
        self._refused(self._sealed_unbound(self.project),
                      "bound to no attestation policy")

    def test_sealed_and_bound_boots(self) -> None:
        secret_id = self._bound(self.project)
        real_get = barbican_key_manager.BarbicanKeyManager.get
        calls: list[tuple[Any, str, dict[str, Any]]] = []

        def get(manager: Any, ctx: Any, object_id: str,
                **kwargs: Any) -> Any:
            calls.append((ctx, object_id, kwargs))
            return real_get(manager, ctx, object_id, **kwargs)

        with mock.patch.object(barbican_key_manager.BarbicanKeyManager,
                               "get", get), base.snp_caps():
            created = self.api.post_server(self._body(secret_id))
            server = self._wait_for_state_change(created, "ACTIVE")
        # castellan was asked (and answered, from the real barbican-api),
        # with the request's context, metadata only.
        self.assertEqual(1, len(calls))
        ctx, asked, kwargs = calls[0]
        self.assertEqual(secret_id, asked)
        self.assertEqual({"metadata_only": True}, kwargs)
        self.assertEqual(self.project, ctx.project_id)
        self.assertEqual(secret_id, server["metadata"]["tee_secret"])

    def test_rebuild_with_an_unusable_secret(self) -> None:
        with base.snp_caps():
            server = self._wait_for_state_change(
                self.api.post_server(self._body(self._bound(self.project))),
                "ACTIVE")
            plain = self._plain_secret(self.project)
            exc = self.assertRaises(
                client.OpenStackApiException, self.api.post_server_action,
                server["id"], {"rebuild": {
                    "imageRef": uuids.tee_snp_image,
                    "metadata": {"tee_secret": plain}}})
        self.assertEqual(400, exc.response.status_code)
        self.assertIn("is not sealed", exc.response.text)

    def test_flavor_without_tee_request(self) -> None:
        # An upstream SEV-SNP flavor: the secret would never be bound.
        secret_id = self._bound(self.project)
        upstream = self.tee_flavor("amd-sev-snp")
        with base.snp_caps():
            exc = self.assertRaises(client.OpenStackApiException,
                                    self.api.post_server,
                                    self._body(secret_id, upstream))
        self.assertEqual(400, exc.response.status_code, exc.response.text)
        message = exc.response.json()["badRequest"]["message"]
        self.assertIn(f"flavor {upstream} asks for no attestation", message)
        self.assertEqual([], self.api.get_servers())
        # The same flavor without tee_secret: upstream's behaviour.
        body = self._body(secret_id, upstream)
        del body["server"]["metadata"]
        with base.snp_caps():
            server = self._wait_for_state_change(
                self.api.post_server(body), "ACTIVE")
        self.assertNotIn("tee_secret", server["metadata"])

    def test_tee_secret_fixed_after_create(self) -> None:
        first = self._bound(self.project)
        second = self._bound(self.project)
        with base.snp_caps():
            server = self._wait_for_state_change(
                self.api.post_server(self._body(first)), "ACTIVE")
        sid = server["id"]
        attempts = [
            ("POST", f"/servers/{sid}/metadata",
             {"metadata": {"tee_secret": second}}),
            ("PUT", f"/servers/{sid}/metadata",
             {"metadata": {"tee_secret": second}}),
            ("PUT", f"/servers/{sid}/metadata", {"metadata": {"a": "b"}}),
            ("PUT", f"/servers/{sid}/metadata/tee_secret",
             {"meta": {"tee_secret": second}}),
            ("DELETE", f"/servers/{sid}/metadata/tee_secret", None),
        ]
        for method, path, body in attempts:
            if method == "DELETE":
                exc = self.assertRaises(client.OpenStackApiException,
                                        self.api.api_delete, path)
            else:
                call = (self.api.api_post if method == "POST"
                        else self.api.api_put)
                exc = self.assertRaises(client.OpenStackApiException,
                                        call, path, body)
            self.assertEqual(400, exc.response.status_code,
                             (method, path, exc.response.text))
            self.assertIn("cannot be added, changed or removed",
                          exc.response.text)
        self.assertEqual(
            {"tee_secret": first},
            self.api.get_server(sid)["metadata"])
        # Other keys, and tee_secret given unchanged, pass.
        self.api.post_server_metadata(sid, {"a": "b"})
        self.api.api_put(f"/servers/{sid}/metadata",
                         {"metadata": {"tee_secret": first, "c": "d"}})
        self.api.api_delete(f"/servers/{sid}/metadata/c")
        self.assertEqual({"tee_secret": first},
                         self.api.get_server(sid)["metadata"])

    def test_tee_secret_added_to_a_server_is_refused(self) -> None:
        flavor = self.tee_flavor("amd-sev-snp", attestation="required")
        body = self._body("unused", flavor)
        del body["server"]["metadata"]
        with base.snp_caps():
            server = self._wait_for_state_change(
                self.api.post_server(body), "ACTIVE")
        exc = self.assertRaises(
            client.OpenStackApiException, self.api.post_server_metadata,
            server["id"], {"tee_secret": self._bound(self.project)})
        self.assertEqual(400, exc.response.status_code)
        self.assertEqual({}, self.api.get_server(server["id"])["metadata"])
