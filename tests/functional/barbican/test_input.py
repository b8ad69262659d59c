"""Hostile input against a real barbican-api: 4xx with a code, never a 500.

Each attack sits next to its positive control: deep JSON next to the
deepest accepted body, bad guest keys next to the same nonce releasing to
a good key, chunked bodies that work, and every spelling of the payload
route refused for a sealed secret while it does return a plain secret's
payload (so the spelling really reaches the payload) and ``Accept: */*``
still gets a sealed secret's metadata. A property-based test then throws
random bodies at every ``/v1/tee`` route.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import http.server
import json
from typing import Any
import urllib.parse
import uuid

from cryptography.hazmat.primitives.asymmetric import ec
import hypothesis
from hypothesis import strategies as st
import requests

from barbican_tee.client import guest
from barbican_tee import server
from tests import base
from tests.functional.barbican import fixture
from tests.functional.barbican import osc_cli
from tests.functional.barbican import stores
from tests.functional.barbican import test_release

OWNER = test_release.OWNER
OTHER = test_release.OTHER
MAX_BODY = 256 * 1024


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _nested(depth: int, leaf: Any = 1) -> dict[str, Any]:
    """An object ``depth`` containers deep (objects and arrays)."""
    value = leaf
    for i in range(depth - 1):
        value = [value] if i % 2 else {"a": value}
    return {"a": value}


class _RawMixin:
    url: str

    def _raw(self, method: str, path: str, headers: dict[str, str],
             body: bytes | None = None, chunked: bool = False
             ) -> tuple[int, bytes]:
        """Exactly this request line and body (no client normalising)."""
        parts = urllib.parse.urlparse(self.url)
        conn = http.client.HTTPConnection(parts.hostname, parts.port,
                                          timeout=60)
        try:
            try:
                if chunked:
                    data = body or b""
                    pieces = [data[i:i + 1000]
                              for i in range(0, len(data), 1000)]
                    conn.request(method, path, body=iter(pieces),
                                 headers=dict(headers, **{
                                     "Transfer-Encoding": "chunked"}),
                                 encode_chunked=True)
                else:
                    conn.request(method, path, body=body, headers=headers)
            except (BrokenPipeError, ConnectionResetError):
                # The server answered (a refusal) before reading it all.
                pass
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()


class InputTest(_RawMixin, test_release._ServerTestBase):

    def _assert_error(self, status: int, code: str, resp_status: int,
                      body: bytes) -> dict[str, Any]:
        self.assertEqual(status, resp_status, body)
        doc: dict[str, Any] = json.loads(body)
        self.assertEqual(code, doc["error"]["code"], body)
        # Barbican's shape, for python-barbicanclient.
        self.assertEqual(status, doc["code"])
        self.assertTrue(doc["title"])
        self.assertEqual(doc["error"]["message"], doc["description"])
        return doc

    def _no_traceback(self) -> None:
        self.assertNotIn("Traceback", self._log())

    # -- deep JSON ---------------------------------------------------------
    def test_deep_json_is_400_on_every_route_before_rate_limiting(
            self) -> None:
        secret_id, _ = self._bound_secret()
        owner = self._headers(OWNER)
        rid = str(uuid.uuid4())
        routes = [
            ("POST", "/v1/tee/challenge", {}),
            ("POST", "/v1/tee/release", {}),
            ("POST", "/v1/tee/policies", owner),
            ("PUT", f"/v1/tee/secrets/{secret_id}/policy", owner),
            ("PUT", f"/v1/tee/instances/{rid}/secrets/{secret_id}",
             self._headers(OWNER, "service,admin")),
            ("POST", "/v1/tee/sev/sessions",
             self._headers(OWNER, "service,admin")),
            ("POST", f"/v1/tee/sev/sessions/{rid}/measurement",
             self._headers(OWNER, "service,admin")),
        ]
        bodies = {
            # Past the interpreter's recursion limit: RecursionError.
            "array": b"[" * 100000 + b"]" * 100000,
            "object": b'{"a":' * 40000 + b"1" + b"}" * 40000,
            # Parses, but nests one level too deep.
            "33": json.dumps(dict(_nested(33), secret_id=secret_id)
                             ).encode(),
        }
        # More deep attempts than the per-secret budget (30 a minute).
        for _ in range(2):
            for method, path, headers in routes:
                for name, body in bodies.items():
                    with self.subTest(path=path, body=name):
                        status, data = self._raw(
                            method, path, dict(
                                headers, **{"Content-Type":
                                            "application/json"}), body)
                        self._assert_error(400, "body_too_deep", status,
                                           data)
        # Positive control: 32 levels is accepted, and the secret's rate
        # budget was not spent by the refused bodies.
        resp = requests.post(f"{self.url}/v1/tee/challenge", timeout=30,
                             json=dict(_nested(32), secret_id=secret_id))
        self.assertEqual(201, resp.status_code, resp.text)
        resp, key = self._attempt(secret_id)
        self.assertEqual(200, resp.status_code, resp.text)
        self._no_traceback()

    # -- policy size ---------------------------------------------------
    def test_policy_size_is_limited_alike_on_every_database(self) -> None:
        # 96 hex digits, quotes and ", ": 100 bytes a measurement as
        # stored. 320 and the guest's own: under 32 KiB (accepted on
        # MariaDB too, whose TEXT column holds 64 KiB), released to the
        # genuine guest (parsed on each use: longer than the cache takes).
        others = [hashlib.sha384(str(i).encode()).hexdigest()
                  for i in range(340)]
        secret_id, key = self._bound_secret(
            measurements=[*others[:320], test_release.MEASUREMENT.hex()])
        for _ in range(2):
            resp, key = self._attempt(secret_id)
            self.assertEqual(200, resp.status_code, resp.text)
        # Over 32 KiB: refused with its code, not a database error.
        status, data = self._raw(
            "POST", "/v1/tee/policies",
            dict(self._headers(OWNER), **{"Content-Type":
                                         "application/json"}),
            json.dumps({"tee": "amd-sev-snp",
                        "measurements": others}).encode())
        doc = self._assert_error(400, "policy_too_large", status, data)
        self.assertIn("32768", doc["error"]["message"])
        self._no_traceback()

    # -- the guest's public key --------------------------------------------
    def test_bad_public_keys_are_400_and_spend_no_nonce(self) -> None:
        secret_id, key = self._bound_secret()
        good = guest.public_jwk(guest.make_key())
        numbers = ec.generate_private_key(
            ec.SECP384R1()).public_key().public_numbers()
        x = numbers.x.to_bytes(48, "big")
        y = numbers.y.to_bytes(48, "big")
        off_curve = (numbers.y + 1).to_bytes(48, "big")
        bad = {
            "off_curve": dict(good, x=_b64url(x), y=_b64url(off_curve)),
            "zero": dict(good, x=_b64url(bytes(48)), y=_b64url(bytes(48))),
            "oversized": dict(good, x=_b64url(b"\x00" + x),
                              y=_b64url(b"\x00" + y)),
            "undersized": dict(good, x=_b64url(x[1:]), y=_b64url(y[1:])),
            "not_base64url": dict(good, x="+/" + good["x"][2:]),
            "padded": dict(good, x=base64.urlsafe_b64encode(
                x[:47]).decode()),
            "odd_length": dict(good, x=good["x"] + "A"),
            "not_a_string": dict(good, x=12345),
            "private": dict(good, d=good["x"]),
            "other_curve": dict(good, crv="P-256"),
        }
        resp = requests.post(f"{self.url}/v1/tee/challenge", timeout=30,
                             json={"secret_id": secret_id})
        nonce = resp.json()["nonce"]
        for name, jwk_doc in bad.items():
            with self.subTest(key=name):
                status, data = self._raw(
                    "POST", "/v1/tee/release",
                    {"Content-Type": "application/json"},
                    json.dumps({"secret_id": secret_id, "nonce": nonce,
                                "evidence": {"format":
                                             "amd-sev-snp-report"},
                                "public_key": jwk_doc}).encode())
                self._assert_error(400, "public_key_invalid", status, data)
        # Positive control: the same nonce, never spent, with a genuine
        # key and report releases the key.
        resp, guest_key = self._attempt(secret_id, nonce=nonce)
        self.assertEqual(200, resp.status_code, resp.text)
        self.assertEqual(key, guest.decrypt(resp.json()["jwe"], guest_key))
        self._no_traceback()

    # -- chunked bodies ----------------------------------------------------
    def test_chunked_bodies_are_read(self) -> None:
        secret_id, _ = self._bound_secret()
        json_ct = {"Content-Type": "application/json"}
        status, data = self._raw(
            "POST", "/v1/tee/challenge", json_ct,
            json.dumps({"secret_id": secret_id}).encode(), chunked=True)
        self.assertEqual(201, status, data)
        self.assertIn("nonce", json.loads(data))
        # It was read, not taken for {}: a wrong id in it is refused.
        status, data = self._raw(
            "POST", "/v1/tee/challenge", json_ct,
            json.dumps({"secret_id": "nope"}).encode(), chunked=True)
        self._assert_error(400, "secret_id_invalid", status, data)
        # A token route: the policy in the chunked body is stored.
        doc = {"name": "chunked", "tee": "amd-sev-snp",
               "measurements": ["ab" * 48]}
        status, data = self._raw("POST", "/v1/tee/policies",
                                 self._headers(OWNER),
                                 json.dumps(doc).encode(), chunked=True)
        self.assertEqual(201, status, data)
        shown = requests.get(
            f"{self.url}/v1/tee/policies/{json.loads(data)['id']}",
            headers=self._headers(OWNER), timeout=30).json()
        self.assertEqual("chunked", shown["name"])
        # Bounded: past the limit is 413, however it is sent.
        big = json.dumps({"secret_id": secret_id,
                          "pad": "x" * MAX_BODY}).encode()
        for chunked in (True, False):
            with self.subTest(chunked=chunked):
                status, data = self._raw("POST", "/v1/tee/challenge",
                                         json_ct, big, chunked=chunked)
                self._assert_error(413, "body_too_large", status, data)
        status, data = self._raw("POST", "/v1/tee/challenge", json_ct,
                                 b"[" * 5000, chunked=True)
        self._assert_error(400, "body_too_deep", status, data)
        self._no_traceback()

    # -- the payload route, however it is spelled ---------------------------
    PAYLOAD_SPELLINGS = ("/payload", "/payload/", "/payload.txt",
                         "/payload.json", "/payload.bin",
                         "/payload.txt/", "/payload.TXT", "//payload",
                         "/payload//")
    INDEX_SPELLINGS = ("", "/", ".json", ".bin", ".txt", ".json/", "//")

    def test_payload_is_403_for_every_spelling(self) -> None:
        sealed, _ = self._bound_secret()
        plain, plain_key = self._secret(project=OTHER)
        cases = [(s, a) for s in self.PAYLOAD_SPELLINGS
                 for a in (None, "*/*", "application/octet-stream",
                           "text/plain")]
        cases += [(s, a) for s in self.INDEX_SPELLINGS
                  for a in ("application/octet-stream", "text/plain", "")]
        for spelling, accept in cases:
            with self.subTest(spelling=spelling, accept=accept):
                headers = self._headers(OWNER)
                if accept is not None:
                    headers["Accept"] = accept
                status, data = self._raw(
                    "GET", f"/v1/secrets/{sealed}{spelling}", headers)
                doc = self._assert_error(403, "secret_sealed", status,
                                         data)
                self.assertIn("sealed", doc["description"])
                # Control: the same spelling does reach a plain secret's
                # payload, so the refusal above is the filter's.
                headers = self._headers(OTHER)
                if accept is not None:
                    headers["Accept"] = accept
                if accept == "text/plain":
                    # The plain secret is binary: Barbican would refuse
                    # text/plain (and log its traceback).
                    continue
                status, data = self._raw(
                    "GET", f"/v1/secrets/{plain}{spelling}", headers)
                self.assertEqual(200, status, data)
                self.assertEqual(plain_key, data)
        self._no_traceback()

    def test_metadata_for_json_and_any_accept(self) -> None:
        sealed, _ = self._bound_secret()
        for spelling in self.INDEX_SPELLINGS:
            for accept in (None, "*/*", "application/json"):
                with self.subTest(spelling=spelling, accept=accept):
                    headers = self._headers(OWNER)
                    if accept is not None:
                        headers["Accept"] = accept
                    status, data = self._raw(
                        "GET", f"/v1/secrets/{sealed}{spelling}", headers)
                    self.assertEqual(200, status, data)
                    meta = json.loads(data)
                    self.assertTrue(meta["secret_ref"].endswith(sealed))
        # What curl and python-requests send by default.
        resp = requests.get(f"{self.url}/v1/secrets/{sealed}", timeout=30,
                            headers={k: v for k, v in self._headers(
                                OWNER).items() if k != "Content-Type"})
        self.assertEqual("*/*", resp.request.headers["Accept"])
        self.assertEqual(200, resp.status_code, resp.text)
        self.assertEqual("ACTIVE", resp.json()["status"])
        self._no_traceback()

    def test_errors_have_barbicans_shape(self) -> None:
        status, data = self._raw("GET", "/v1/tee/nowhere",
                                 self._headers(OWNER))
        self._assert_error(404, "not_found", status, data)
        status, data = self._raw("POST", "/v1/tee/challenge",
                                 {"Content-Type": "application/json"},
                                 b"not json")
        doc = self._assert_error(400, "body_not_json", status, data)
        self.assertEqual("Bad Request", doc["title"])


class StoreRefusalTest(_RawMixin, base.TestCase):
    """Without the filter, the store plugin's refusal is itself a 403."""

    def test_store_refuses_with_403(self) -> None:
        srv = fixture.BarbicanServer(
            workers=1, paste_filters=server.PIPELINE_WITHOUT_TEE_API)
        self.useFixture(srv)
        self.url = srv.url
        headers = test_release._ServerTestBase._headers(OWNER)
        stores.prefer_sealed_store(self.url, headers)
        resp = requests.post(f"{self.url}/v1/secrets", headers=headers,
                             timeout=30, json={
                                 "name": "k", "payload": "c2VjcmV0",
                                 "payload_content_type":
                                     "application/octet-stream",
                                 "payload_content_encoding": "base64"})
        self.assertEqual(201, resp.status_code, resp.text)
        ref = resp.json()["secret_ref"]
        resp = requests.get(ref + "/payload", timeout=30, headers=dict(
            headers, Accept="application/octet-stream"))
        self.assertEqual(403, resp.status_code, resp.text)
        self.assertIn("sealed", resp.json()["description"])
        # Control: the metadata is there.
        resp = requests.get(ref, headers=headers, timeout=30)
        self.assertEqual(200, resp.status_code, resp.text)


class OpenStackSecretGetTest(test_release._ServerTestBase):
    """``openstack secret get --payload`` tells the user it is sealed."""

    def test_cli_prints_that_the_secret_is_sealed(self) -> None:
        sealed, _ = self._bound_secret()
        cli = osc_cli.secret_get(self, self.url, OWNER, sealed)

        proc = cli("--payload")
        self.assertEqual(1, proc.returncode, proc.stdout)
        self.assertIn("Forbidden: This secret is sealed", proc.stderr)
        self.assertIn("/v1/tee/release", proc.stderr)
        # Control: the metadata, through the same CLI and proxy.
        proc = cli("-f", "json")
        self.assertEqual(0, proc.returncode, proc.stderr)
        self.assertEqual("ACTIVE", json.loads(proc.stdout)["Status"])


# -- property-based: random bodies at every route ----------------------------
_KEYS = ("secret_id", "nonce", "public_key", "evidence", "policy_id",
         "name", "tee", "measurements", "instance_uuid", "policy",
         "project_id", "format", "report", "vcek", "quote", "collateral",
         "min_tcb", "guest_policy", "signers", "kty", "crv", "x", "y",
         "payload", "payload_content_type", "algorithm", "bit_length")
_SCALARS = (st.none() | st.booleans() | st.integers()
            | st.floats(allow_nan=True) | st.text(max_size=40)
            | st.sampled_from(["amd-sev-snp", "intel-tdx", "amd-sev",
                               "EC", "P-384", "amd-sev-snp-report",
                               "intel-tdx-quote", "vcek", "A" * 64]))
_JSON = st.recursive(
    _SCALARS,
    lambda inner: (st.lists(inner, max_size=4)
                   | st.dictionaries(st.sampled_from(_KEYS) | st.text(
                       max_size=8), inner, max_size=5)),
    max_leaves=25)


@st.composite
def _body(draw: st.DrawFn, ids: list[str]) -> bytes:
    kind = draw(st.sampled_from(["object", "any", "deep", "big", "bytes"]))
    if kind == "object":
        doc = draw(st.dictionaries(st.sampled_from(_KEYS), _JSON
                                   | st.sampled_from(ids), max_size=6))
        return json.dumps(doc).encode()
    if kind == "any":
        return json.dumps(draw(_JSON)).encode()
    if kind == "deep":
        depth = draw(st.integers(1, 3000))
        opener = draw(st.sampled_from([b"[", b'{"a":', b'{"evidence":']))
        closer = b"]" if opener == b"[" else b"}"
        return opener * depth + b"1" + closer * depth
    if kind == "big":
        size = draw(st.sampled_from([MAX_BODY - 64, MAX_BODY,
                                     MAX_BODY + 1, 2 * MAX_BODY]))
        return json.dumps({"secret_id": draw(st.sampled_from(ids)),
                           "pad": "x" * size}).encode()
    return draw(st.binary(max_size=200))


class PropertyTest(_RawMixin, test_release._ServerTestBase):
    """No body, path id or header set gets a 5xx from any /v1/tee route."""

    def test_random_input_never_gets_a_5xx(self) -> None:
        secret_id, _ = self._bound_secret()
        policy_id = self._policy()
        ids = [secret_id, policy_id, str(uuid.uuid4())]
        routes = ("POST /v1/tee/challenge", "POST /v1/tee/release",
                  "POST /v1/tee/policies", "GET /v1/tee/policies",
                  "GET /v1/tee/policies/{id}",
                  "DELETE /v1/tee/policies/{id}",
                  "POST /v1/tee/secrets",
                  "PUT /v1/tee/secrets/{id}/policy",
                  "PUT /v1/tee/instances/{id2}/secrets/{id}",
                  "DELETE /v1/tee/instances/{id2}",
                  "POST /v1/tee/sev/sessions",
                  "POST /v1/tee/sev/sessions/{id}/measurement")
        path_ids = st.sampled_from(ids) | st.uuids().map(str) | st.text(
            alphabet="abcdef0123456789-.%", max_size=40)
        auth = st.sampled_from([
            {}, self._headers(OWNER), self._headers(OWNER, "reader"),
            self._headers(OWNER, "service,admin"),
            self._headers(OTHER, "member")])
        seen: dict[int, int] = {}

        @hypothesis.settings(max_examples=200, deadline=None,
                             database=None, derandomize=True,
                             suppress_health_check=list(
                                 hypothesis.HealthCheck))
        @hypothesis.given(route=st.sampled_from(routes), id1=path_ids,
                          id2=path_ids, headers=auth,
                          body=_body(ids), chunked=st.booleans())
        def check(route: str, id1: str, id2: str, headers: dict[str, str],
                  body: bytes, chunked: bool) -> None:
            method, path = route.split(" ")
            path = path.format(id=urllib.parse.quote(id1),
                               id2=urllib.parse.quote(id2))
            status, data = self._raw(method, path, dict(
                headers, **{"Content-Type": "application/json"}), body,
                chunked=chunked)
            seen[status] = seen.get(status, 0) + 1
            self.assertLess(status, 500, f"{method} {path}: {data[:300]!r}")

        check()
        # The test reached the routes, not just the 400s.
        self.assertTrue({200, 400, 403, 404, 413} <= set(seen), seen)
        self.assertNotIn("Traceback", self._log())
