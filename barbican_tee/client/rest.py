"""REST client for the ``/v1/tee/...`` contract (ARCHITECTURE.md).

With a keystoneauth1 session the token routes (policies, bindings) are
authenticated by the session; without one, ``requests`` is used directly,
which is all the evidence-authenticated routes (challenge, release) need.
Every failure is a :class:`TEEClientError`: HTTP errors carry the status
and the service's stable ``code``; network failures have ``status=None``
and ``code="network_error"``.
"""

from __future__ import annotations

import json
from typing import Any
from urllib import parse

from keystoneauth1 import exceptions as ksa_exc
from keystoneauth1 import session as ksa_session
import requests

USER_AGENT = "openstack-tee-client"
NETWORK_ERROR = "network_error"
BAD_RESPONSE = "bad_response"


class TEEClientError(Exception):
    """A request to the TEE service failed.

    ``status`` is the HTTP status (``None`` when no answer came back),
    ``code`` the service's stable error code (or ``network_error``,
    ``bad_response``, ``http_<status>``), ``message`` what went wrong.
    """

    def __init__(self, status: int | None, code: str,
                 message: str) -> None:
        super().__init__(status, code, message)
        self.status = status
        self.code = code
        self.message = message

    def __str__(self) -> str:
        where = f"HTTP {self.status}" if self.status is not None else (
            "no answer")
        return f"{self.code} ({where}): {self.message}"


def _error_from_response(status: int, body: bytes) -> TEEClientError:
    try:
        doc = json.loads(body)
    except ValueError:
        doc = None
    if isinstance(doc, dict):
        err = doc.get("error")
        if isinstance(err, dict) and isinstance(err.get("code"), str):
            message = err.get("message")
            return TEEClientError(status, err["code"],
                                  str(message) if message is not None
                                  else "")
        # Barbican's own error body: {"code": 403, "title", "description"}
        title = doc.get("title")
        desc = doc.get("description")
        if isinstance(title, str) or isinstance(desc, str):
            text = ": ".join(str(p) for p in (title, desc) if p)
            return TEEClientError(status, f"http_{status}", text)
    text = body[:200].decode("utf-8", "replace").strip()
    return TEEClientError(status, f"http_{status}",
                          text or "the service gave no reason")


class TEEClient:
    """Client of the TEE service under Barbican's ``/v1``."""

    def __init__(self, endpoint: str,
                 session: ksa_session.Session | None = None,
                 headers: dict[str, str] | None = None,
                 timeout: float = 30) -> None:
        base = endpoint.rstrip("/")
        if base.endswith("/v1"):
            base = base[:-3]
        if parse.urlsplit(base).scheme not in ("http", "https"):
            raise ValueError(f"endpoint {endpoint!r} is not an http(s) URL")
        self.endpoint = base
        self.session = session
        self.headers = dict(headers or {})
        self.timeout = timeout

    # -- transport -------------------------------------------------------
    def _url(self, *parts: str) -> str:
        quoted = "/".join(parse.quote(p, safe="") for p in parts)
        return f"{self.endpoint}/v1/tee/{quoted}"

    def _request(self, method: str, url: str,
                 body: dict[str, Any] | None = None) -> Any:
        headers = {"Accept": "application/json"}
        headers.update(self.headers)
        try:
            if self.session is not None:
                resp = self.session.request(
                    url, method, json=body, headers=headers,
                    raise_exc=False, timeout=self.timeout,
                    user_agent=USER_AGENT)
            else:
                headers.setdefault("User-Agent", USER_AGENT)
                resp = requests.request(method, url, json=body,
                                        headers=headers,
                                        timeout=self.timeout,
                                        allow_redirects=False)
        except (ksa_exc.ConnectionError, ksa_exc.RequestTimeout,
                ksa_exc.ConnectTimeout) as exc:
            raise TEEClientError(
                None, NETWORK_ERROR,
                f"cannot reach the TEE service at {self.endpoint}: "
                f"{type(exc).__name__}") from None
        except ksa_exc.HttpError as exc:
            # Raised by the auth plugin while getting a token.
            raise TEEClientError(exc.http_status, "auth_failed",
                                 f"authentication failed: {exc.message}"
                                 ) from None
        except ksa_exc.ClientException as exc:
            raise TEEClientError(None, "auth_failed",
                                 f"authentication failed: {exc}") from None
        except requests.Timeout:
            raise TEEClientError(
                None, NETWORK_ERROR,
                f"the TEE service at {self.endpoint} did not answer in "
                f"{self.timeout:g} s") from None
        except requests.ConnectionError as exc:
            raise TEEClientError(
                None, NETWORK_ERROR,
                f"cannot connect to the TEE service at {self.endpoint}: "
                f"{_reason(exc)}") from None
        except requests.RequestException as exc:
            raise TEEClientError(
                None, NETWORK_ERROR,
                f"request to the TEE service at {self.endpoint} failed: "
                f"{type(exc).__name__}") from None
        status = int(resp.status_code)
        content = resp.content or b""
        if status >= 300:
            raise _error_from_response(status, content)
        if status == 204 or not content:
            return None
        try:
            return json.loads(content)
        except ValueError:
            raise TEEClientError(status, BAD_RESPONSE,
                                 f"{method} {url} answered {status} with "
                                 "a body that is not JSON") from None

    @staticmethod
    def _dict(doc: Any, what: str, *keys: str) -> dict[str, Any]:
        if not isinstance(doc, dict):
            raise TEEClientError(None, BAD_RESPONSE,
                                 f"the {what} answer is not a JSON object")
        for key in keys:
            if not isinstance(doc.get(key), str) or not doc[key]:
                raise TEEClientError(None, BAD_RESPONSE,
                                     f"the {what} answer has no {key!r}")
        return doc

    # -- token routes ----------------------------------------------------
    def create_policy(self, doc: dict[str, Any]) -> dict[str, Any]:
        """``POST /v1/tee/policies`` -> ``{id, policy_ref}``."""
        return self._dict(self._request("POST", self._url("policies"), doc),
                          "create policy", "id")

    def list_policies(self) -> list[dict[str, Any]]:
        """``GET /v1/tee/policies``: a list of policies."""
        doc = self._request("GET", self._url("policies"))
        if isinstance(doc, dict):
            doc = doc.get("policies")
        if not isinstance(doc, list) or not all(
                isinstance(p, dict) for p in doc):
            raise TEEClientError(None, BAD_RESPONSE,
                                 "the policy list is not a list of objects")
        return doc

    def get_policy(self, policy_id: str) -> dict[str, Any]:
        """``GET /v1/tee/policies/{id}``."""
        return self._dict(
            self._request("GET", self._url("policies", policy_id)),
            "get policy")

    def delete_policy(self, policy_id: str) -> None:
        """``DELETE /v1/tee/policies/{id}`` (204)."""
        self._request("DELETE", self._url("policies", policy_id))

    def create_secret(self, doc: dict[str, Any]) -> dict[str, Any]:
        """``POST /v1/tee/secrets`` -> ``{secret_ref[, policy_id]}``.

        ``doc`` has Barbican's secret fields (a ``payload``, or
        ``algorithm`` and ``bit_length`` to generate a key) and optionally
        ``policy``.
        """
        return self._dict(self._request("POST", self._url("secrets"), doc),
                          "create secret", "secret_ref")

    def bind_secret(self, secret_id: str,
                    policy_id: str) -> dict[str, Any]:
        """``PUT /v1/tee/secrets/{secret_id}/policy``."""
        doc = self._request("PUT", self._url("secrets", secret_id, "policy"),
                            {"policy_id": policy_id})
        return self._dict(doc, "bind secret") if doc is not None else {}

    def unbind_secret(self, secret_id: str) -> None:
        """``DELETE /v1/tee/secrets/{secret_id}/policy``."""
        self._request("DELETE", self._url("secrets", secret_id, "policy"))

    def secret_binding(self, secret_id: str) -> dict[str, Any]:
        """``GET /v1/tee/secrets/{secret_id}/policy``.

        ``{secret_id, policy_id (or None), sealed}``; never the payload.
        A secret that is not sealed is a :class:`TEEClientError` with
        status 409 and code ``secret_not_sealed``.
        """
        return self._dict(
            self._request("GET", self._url("secrets", secret_id, "policy")),
            "secret binding", "secret_id")

    def list_floors(self) -> list[dict[str, Any]]:
        """``GET /v1/tee/floors``: every product's TCB floor.

        Each ``{product, config, set, effective, updated_at, updated_by}``.
        """
        doc = self._request("GET", self._url("floors"))
        floors = doc.get("floors") if isinstance(doc, dict) else None
        if not isinstance(floors, list) or not all(
                isinstance(f, dict) and isinstance(f.get("product"), str)
                for f in floors):
            raise TEEClientError(None, BAD_RESPONSE,
                                 "the floor list is not a list of floors")
        return floors

    def get_floor(self, product: str) -> dict[str, Any]:
        """``GET /v1/tee/floors/{product}``."""
        return self._dict(self._request("GET", self._url("floors", product)),
                          "get floor", "product")

    def set_floor(self, product: str,
                  floor: dict[str, Any]) -> dict[str, Any]:
        """``PUT /v1/tee/floors/{product}``: the floor as it now stands."""
        return self._dict(
            self._request("PUT", self._url("floors", product), floor),
            "set floor", "product")

    def import_endorsements(self, bundle: dict[str, Any]
                            ) -> list[dict[str, Any]]:
        """``POST /v1/tee/endorsements``: the entries, each with ``new``."""
        return self._entries(self._request(
            "POST", self._url("endorsements"), bundle))

    def list_endorsements(self, **filters: str) -> list[dict[str, Any]]:
        """``GET /v1/tee/endorsements`` (kind, product, subject prefix)."""
        query = parse.urlencode({k: v for k, v in filters.items() if v})
        return self._entries(self._request(
            "GET", self._url("endorsements") + (f"?{query}" if query
                                                else "")))

    @staticmethod
    def _entries(doc: Any) -> list[dict[str, Any]]:
        entries = doc.get("endorsements") if isinstance(doc, dict) else None
        if not isinstance(entries, list) or not all(
                isinstance(e, dict) and isinstance(e.get("id"), str)
                for e in entries):
            raise TEEClientError(None, BAD_RESPONSE, "the endorsement list "
                                 "is not a list of endorsements")
        return entries

    # -- evidence-authenticated routes -----------------------------------
    def challenge(self, secret_id: str) -> tuple[str, str]:
        """``POST /v1/tee/challenge`` -> ``(nonce, expires_at)``."""
        doc = self._dict(
            self._request("POST", self._url("challenge"),
                          {"secret_id": secret_id}),
            "challenge", "nonce")
        expires = doc.get("expires_at")
        return doc["nonce"], str(expires) if expires is not None else ""

    def bind_instance(self, instance_uuid: str, secret_id: str,
                      project_id: str) -> dict[str, Any]:
        """Tie ``secret_id`` to the instance booting with it (service)."""
        return self._dict(
            self._request("PUT", self._url("instances", instance_uuid,
                                           "secrets", secret_id),
                          {"project_id": project_id}),
            "instance binding", "secret_id")

    def unbind_instance(self, instance_uuid: str) -> None:
        """Drop every secret binding of a deleted instance (service)."""
        self._request("DELETE", self._url("instances", instance_uuid))

    def sev_session(self, secret_id: str, policy: int, pdh: str,
                    cert_chain: str, instance_uuid: str) -> dict[str, Any]:
        """``POST /v1/tee/sev/sessions`` (service role).

        ``pdh`` and ``cert_chain`` are base64, as libvirt's node SEV info
        gives them. Returns ``{session_id, dh_cert, session}``.
        """
        return self._dict(
            self._request("POST", self._url("sev", "sessions"), {
                "secret_id": secret_id, "policy": policy, "pdh": pdh,
                "cert_chain": cert_chain, "instance_uuid": instance_uuid}),
            "SEV session", "session_id", "dh_cert", "session")

    def sev_measurement(self, session_id: str, measurement: str,
                        api_major: int, api_minor: int, build_id: int,
                        policy: int) -> dict[str, Any]:
        """``POST .../measurement`` -> ``{secret_header, secret}``."""
        return self._dict(
            self._request("POST", self._url("sev", "sessions", session_id,
                                            "measurement"), {
                "measurement": measurement, "api_major": api_major,
                "api_minor": api_minor, "build_id": build_id,
                "policy": policy}),
            "SEV secret", "secret_header", "secret")

    def release(self, secret_id: str, nonce: str, evidence: dict[str, Any],
                public_key_jwk: dict[str, Any]) -> str:
        """``POST /v1/tee/release`` -> the secret as a compact JWE."""
        jwe: str = self.release_answer(secret_id, nonce, evidence,
                                       public_key_jwk)["jwe"]
        return jwe

    def release_answer(self, secret_id: str, nonce: str,
                       evidence: dict[str, Any],
                       public_key_jwk: dict[str, Any],
                       renewal: bool = False) -> dict[str, Any]:
        """``POST /v1/tee/release`` -> the whole answer (``jwe``, and
        ``max_age`` and ``lease_expires_at`` when the policy gives a lease).

        ``renewal`` tells the service (for its audit record only) that
        this guest held the key already.
        """
        body: dict[str, Any] = {
            "secret_id": secret_id,
            "nonce": nonce,
            "evidence": evidence,
            "public_key": public_key_jwk,
        }
        if renewal:
            body["renewal"] = True
        return self._dict(
            self._request("POST", self._url("release"), body),
            "release", "jwe")


def _reason(exc: requests.ConnectionError) -> str:
    """A short reason (refused, unknown host) without the whole chain."""
    text = str(exc)
    for hint in ("Connection refused", "Name or service not known",
                 "No route to host", "Network is unreachable",
                 "Temporary failure in name resolution",
                 "certificate verify failed", "timed out"):
        if hint in text:
            return hint.lower()
    return type(exc).__name__
