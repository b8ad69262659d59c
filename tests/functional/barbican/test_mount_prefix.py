"""/v1/tee under a path, as devstack serves Barbican (``/key-manager``).

devstack puts barbican-api behind Apache's ``ProxyPass /key-manager``
(uwsgi): the application gets ``SCRIPT_NAME=/key-manager`` and the rest of
the path in ``PATH_INFO``, so paste's urlmap leaves ``/key-manager/v1`` in
``SCRIPT_NAME``. gunicorn does the same with ``SCRIPT_NAME`` in its
environment: a real barbican-api so mounted, and every kind of /v1/tee
route through it.
"""

from __future__ import annotations

import io
import os
import tempfile

import requests

from barbican_tee.client import guest
from barbican_tee.cmd import tee_guest
from openstack_tee_demo.sp_model import configfs
from tests.functional.barbican import test_release

PREFIX = "/key-manager"


class MountPrefixTest(test_release._ServerTestBase):  # noqa: SLF001

    PREFIX = PREFIX
    WORKERS = 1
    # Barbican's links from the request, prefix included (devstack sets
    # host_href to its .../key-manager endpoint instead).
    EXTRA_CONF = {"DEFAULT": {"host_href": ""}}

    def test_the_server_is_mounted_there(self) -> None:
        # Positive control of the setup: Barbican's own API under the
        # prefix, and nothing outside it.
        headers = self._headers(test_release.OWNER)
        resp = requests.get(f"{self.url}/v1/secrets", headers=headers,
                            timeout=30)
        self.assertEqual(200, resp.status_code, resp.text)
        resp = requests.get(f"{self.server.url}/v1/secrets",
                            headers=headers, timeout=30)
        self.assertNotEqual(200, resp.status_code, resp.text)

    def test_a_guest_gets_its_key_through_the_prefix(self) -> None:
        # Token routes (policy, binding) and the token-less ones
        # (challenge, release).
        secret_id, key = self._bound_secret()
        resp, guest_key = self._attempt(secret_id)
        self.assertEqual(200, resp.status_code, resp.text)
        self.assertEqual(key, guest.decrypt(resp.json()["jwe"], guest_key))
        self.assertIn(f"tee.release.granted secret={secret_id}",
                      self._log())
        # tee-guest with the endpoint as the catalog gives it.
        tsm = self.useFixture(configfs.FakeConfigfsTsm(
            sp=self.sp, report_kwargs={
                "measurement": test_release.MEASUREMENT}))
        out = os.path.join(tempfile.mkdtemp(), "disk.key")
        stderr = io.StringIO()
        status = tee_guest.main(
            ["fetch", "--secret", secret_id, "--endpoint", self.url,
             "--out", out, "--tsm-root", tsm.root],
            stdout=io.StringIO(), stderr=stderr)
        self.assertEqual(0, status, stderr.getvalue())
        with open(out, "rb") as f:
            self.assertEqual(key, f.read())

    def test_refusals_and_the_sealed_payload_check(self) -> None:
        secret_id, _ = self._bound_secret()
        self._refused("policy_measurement", secret_id,
                      measurement=b"\x01" * 48)
        resp = requests.get(
            f"{self.url}/v1/secrets/{secret_id}/payload",
            headers=dict(self._headers(test_release.OWNER),
                         Accept="application/octet-stream"), timeout=30)
        self.assertEqual(403, resp.status_code, resp.text)
        self.assertEqual("secret_sealed", resp.json()["error"]["code"])
        # An unknown /v1/tee route is ours to answer, in our shape.
        resp = requests.get(f"{self.url}/v1/tee/nothing-here",
                            headers=self._headers(test_release.OWNER),
                            timeout=30)
        self.assertEqual(404, resp.status_code, resp.text)
        self.assertEqual("not_found", resp.json()["error"]["code"])
