"""The owner's and the guest's side of a release, over the REST contract.

Shared by the functional tests, the benchmarks and ``openstack-tee demo``.
Barbican runs without Keystone here, so requests carry ``X-Project-Id``,
``X-User-Id`` and ``X-Roles`` instead of a token.
"""

from __future__ import annotations

import base64
import os
from typing import Any

import requests

from barbican_tee.client import guest
from openstack_tee_demo.sp_model import snp as sp_snp

TIMEOUT = 30


def headers(project: str, roles: str = "admin,member,reader"
            ) -> dict[str, str]:
    return {"X-Project-Id": project, "X-User-Id": "owner",
            "X-Roles": roles, "Content-Type": "application/json"}


def owner_secret(url: str, project: str,
                 policy: dict[str, Any]) -> tuple[str, bytes]:
    """The owner's side: a sealed key of ``project``, bound to ``policy``.

    Created with ``POST /v1/tee/secrets`` (``openstack tee secret
    create``), so the project's preferred store stays as it is. Returns
    the secret's ID and the key (which only the owner and, after
    attestation, the guest ever hold).
    """
    created = requests.post(f"{url}/v1/tee/policies", timeout=TIMEOUT,
                            headers=headers(project), json=policy)
    created.raise_for_status()
    key = os.urandom(32)
    resp = requests.post(f"{url}/v1/tee/secrets", headers=headers(project),
                         timeout=TIMEOUT, json={
                             "name": "disk-key", "secret_type": "symmetric",
                             "payload": base64.b64encode(key).decode(),
                             "payload_content_type":
                                 "application/octet-stream",
                             "payload_content_encoding": "base64",
                             "policy": created.json()["id"]})
    resp.raise_for_status()
    secret_id = resp.json()["secret_ref"].rsplit("/", 1)[1]
    return secret_id, key


def challenge(url: str, secret_id: str) -> str:
    resp = requests.post(f"{url}/v1/tee/challenge", timeout=TIMEOUT,
                         json={"secret_id": secret_id})
    resp.raise_for_status()
    nonce: str = resp.json()["nonce"]
    return nonce


class SNPGuest:
    """A guest's release, its report made by the software secure processor.

    ``measurement`` is what the guest's launch measured (the firmware it
    really booted), ``host_data`` what Nova put in its ``hostData``.
    """

    def __init__(self, sp: sp_snp.SecureProcessor, measurement: bytes,
                 host_data: bytes) -> None:
        self.sp = sp
        self.measurement = measurement
        self.host_data = host_data
        self.key = guest.make_key()

    def release(self, url: str, secret_id: str,
                nonce: str | None = None) -> tuple[requests.Response, str]:
        """Challenge (unless ``nonce`` is given), report, release."""
        nonce = nonce or challenge(url, secret_id)
        report = self.sp.report(
            measurement=self.measurement,
            report_data=guest.report_data(nonce, self.key),
            host_data=self.host_data)
        vcek = ("-----BEGIN CERTIFICATE-----\n"
                + base64.encodebytes(self.sp.vcek_der).decode()
                + "-----END CERTIFICATE-----\n")
        resp = requests.post(f"{url}/v1/tee/release", timeout=TIMEOUT, json={
            "secret_id": secret_id, "nonce": nonce,
            "public_key": guest.public_jwk(self.key),
            "evidence": {"format": "amd-sev-snp-report",
                         "report": base64.b64encode(report).decode(),
                         "vcek": vcek,
                         "cert_chain": self.sp.bundle_pem().decode()}})
        return resp, nonce

    def open(self, resp: requests.Response) -> bytes:
        """The secret, decrypted with this guest's key."""
        return guest.decrypt(resp.json()["jwe"], self.key)


def error_code(resp: requests.Response) -> str:
    """The stable code of a refusal (``""`` if the answer has none)."""
    try:
        return str(resp.json()["error"]["code"])
    except (ValueError, KeyError, TypeError):
        return ""
