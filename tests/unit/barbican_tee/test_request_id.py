"""Request ids of the token-less routes served in front of request_id."""

from __future__ import annotations

from typing import Any

from oslo_middleware import request_id as oslo_request_id
import webob  # type: ignore[import-untyped]

from barbican_tee.api import request_id
from tests import base

GLOBAL = "req-0123abcd-0123-4567-89ab-0123456789ab"


def _app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    # What the route sees: its request id and the global one.
    local = environ.get(request_id.ENV_REQUEST_ID)
    body = f"{local} {environ.get(request_id.GLOBAL_REQ_ID)}".encode()
    start_response("200 OK", [("Content-Length", str(len(body)))])
    return [body]


def _ensuring(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    return _app(environ, request_id.ensure(environ, start_response))


class EnsureTest(base.TestCase):

    def _both(self, headers: dict[str, str]
              ) -> tuple[webob.Response, webob.Response]:
        """(ours, oslo.middleware's request_id filter) for one request."""
        return tuple(  # type: ignore[return-value]
            webob.Request.blank("/v1/tee/challenge", method="POST",
                                headers=headers).get_response(app)
            for app in (_ensuring, oslo_request_id.RequestId(_app)))

    def test_as_oslo_request_id_gives_one(self) -> None:
        ours, oslo = self._both({})
        for resp in (ours, oslo):
            rid = resp.headers["x-openstack-request-id"]
            self.assertRegex(rid, oslo_request_id.ID_FORMAT)
            self.assertEqual(f"{rid} None", resp.text)
        self.assertEqual(1, len(ours.headers.getall(
            "x-openstack-request-id")))

    def test_a_well_formed_global_id_is_taken(self) -> None:
        for resp in self._both({"X-OpenStack-Request-ID": GLOBAL}):
            rid = resp.headers["x-openstack-request-id"]
            self.assertNotEqual(GLOBAL, rid)  # the local id is new
            self.assertEqual(f"{rid} {GLOBAL}", resp.text)

    def test_any_other_global_id_is_ignored(self) -> None:
        for bad in (GLOBAL.upper(), GLOBAL + "0", "req-1", "x" + GLOBAL,
                    "<script>"):
            ours = self._both({"X-OpenStack-Request-ID": bad})[0]
            self.assertTrue(ours.text.endswith(" None"), bad)
            self.assertNotIn(bad, ours.headers.values())

    def test_a_request_with_an_id_is_left_alone(self) -> None:
        # A request_id filter in front of tee_public (an earlier layout):
        # its id stands, and it adds the header itself.
        resp = webob.Request.blank("/v1/tee/challenge", method="POST"
                                   ).get_response(
            oslo_request_id.RequestId(_ensuring))
        rid = resp.headers["x-openstack-request-id"]
        self.assertEqual(f"{rid} None", resp.text)
        self.assertEqual(1, len(resp.headers.getall(
            "x-openstack-request-id")))

    def test_the_header_is_not_sent_twice(self) -> None:
        def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
            start_response("200 OK", [("X-OpenStack-Request-ID", "mine")])
            return [b""]
        req = webob.Request.blank("/")
        resp = req.get_response(
            lambda e, s: app(e, request_id.ensure(e, s)))
        self.assertEqual(["mine"],
                         resp.headers.getall("x-openstack-request-id"))
        self.assertRegex(req.environ[request_id.ENV_REQUEST_ID],
                         oslo_request_id.ID_FORMAT)
