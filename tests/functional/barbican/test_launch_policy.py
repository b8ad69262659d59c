"""SEV/SEV-ES launch policy against the owner's policy (issue 10, item 2).

nova-compute, which is untrusted, chooses the launch policy it posts to
``POST /v1/tee/sev/sessions``. A session that allows debugging, shares
keys, lacks ES under an ``amd-sev-es`` policy, or lacks a bit the owner's
policy demands is refused with its own code before any session exists; a
platform whose firmware API is below the policy's minimum gets no packet.
Each refusal stands next to a positive control whose packet decrypts in
the model's firmware.
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any
import uuid

import requests

from tests.functional.barbican import test_release

SEV_GUID = uuid.UUID("736869e5-84f0-4973-92ec-06879ce3da0b")
NOVA_SEV = 0x33     # SEV | DOMAIN | NOKS | NODBG, nova_tee.specs' default
NOVA_SEV_ES = 0x37  # ... | ES
NODBG, NOKS, ES, NOSEND, DOMAIN, SEV_ONLY = 0x1, 0x2, 0x4, 0x8, 0x10, 0x20


class LaunchPolicyTest(test_release._ServerTestBase):

    FIRMWARE = b"OVMF" * 1024

    def _sev_secret(self, tee: str = "amd-sev",
                    **guest_policy: Any) -> tuple[str, bytes, str]:
        """A secret under an SEV policy, bound to a fresh instance."""
        secret_id, key = self._secret()
        self._bind(secret_id, self._policy(
            tee=tee, min_tcb={}, signers=[], guest_policy=guest_policy,
            measurements=[hashlib.sha256(self.FIRMWARE).hexdigest()]))
        instance = str(uuid.uuid4())
        resp = requests.put(
            f"{self.url}/v1/tee/instances/{instance}/secrets/{secret_id}",
            headers=self._headers("nova-service-project", "service"),
            json={"project_id": test_release.OWNER}, timeout=30)
        self.assertEqual(200, resp.status_code, resp.text)
        return secret_id, key, instance

    def _session(self, secret_id: str, instance: str,
                 launch_policy: int) -> Any:
        chain = self.sev.pek + self.sev.oca + self.sev.cek
        return requests.post(
            f"{self.url}/v1/tee/sev/sessions", timeout=30,
            headers=self._headers("nova-service-project", "service"), json={
                "secret_id": secret_id, "policy": launch_policy,
                "pdh": base64.b64encode(self.sev.pdh).decode(),
                "cert_chain": base64.b64encode(chain).decode(),
                "instance_uuid": instance})

    def _launch(self, secret_id: str, instance: str,
                launch_policy: int) -> tuple[Any, Any]:
        """Session, LAUNCH_START/UPDATE/MEASURE in the model, measurement."""
        resp = self._session(secret_id, instance, launch_policy)
        self.assertEqual(201, resp.status_code, resp.text)
        body = resp.json()
        launch = self.sev.launch_start(base64.b64decode(body["dh_cert"]),
                                       base64.b64decode(body["session"]),
                                       launch_policy)
        launch.launch_update_data(self.FIRMWARE)
        major, minor = self.sev.api
        resp = requests.post(
            f"{self.url}/v1/tee/sev/sessions/{body['session_id']}"
            "/measurement", timeout=30,
            headers=self._headers("nova-service-project", "service"),
            json={"measurement": base64.b64encode(
                launch.launch_measure()).decode(),
                "api_major": major, "api_minor": minor,
                "build_id": self.sev.build_id, "policy": launch_policy})
        return resp, launch

    def _packet_opens(self, secret_id: str, key: bytes, instance: str,
                      launch_policy: int) -> None:
        resp, launch = self._launch(secret_id, instance, launch_policy)
        self.assertEqual(200, resp.status_code, resp.text)
        table = launch.launch_secret(
            base64.b64decode(resp.json()["secret_header"]),
            base64.b64decode(resp.json()["secret"]))
        self.assertEqual(key, table[SEV_GUID])

    def _no_session(self, codes: list[str], secret_id: str, instance: str,
                    launch_policy: int) -> None:
        resp = self._session(secret_id, instance, launch_policy)
        self.assertEqual(403, resp.status_code, resp.text)
        error = resp.json()["error"]
        self.assertEqual(codes[0], error["code"], resp.text)
        self.assertEqual(codes, error.get("codes", [error["code"]]))
        for field in ("session_id", "dh_cert", "session"):
            self.assertNotIn(field, resp.json())

    def test_novas_default_policies_get_a_packet(self) -> None:
        secret_id, key, instance = self._sev_secret()
        self._packet_opens(secret_id, key, instance, NOVA_SEV)
        secret_id, key, instance = self._sev_secret("amd-sev-es")
        self._packet_opens(secret_id, key, instance, NOVA_SEV_ES)

    def test_each_launch_policy_bit_is_refused_with_its_code(self) -> None:
        cases = [
            ("sev_policy_debug", "amd-sev", {}, NOVA_SEV & ~NODBG),
            ("sev_policy_es", "amd-sev-es", {}, NOVA_SEV),
            ("sev_policy_noks", "amd-sev", {}, NOVA_SEV & ~NOKS),
            ("sev_policy_domain", "amd-sev", {"sev_domain": True},
             NOVA_SEV & ~DOMAIN),
            ("sev_policy_sev_only", "amd-sev", {"sev_only": True},
             NOVA_SEV & ~SEV_ONLY),
            ("sev_policy_nosend", "amd-sev", {"sev_nosend": True},
             NOVA_SEV),
        ]
        for code, tee, gp, bad in cases:
            with self.subTest(code=code):
                secret_id, key, instance = self._sev_secret(tee, **gp)
                self._no_session([code], secret_id, instance, bad)
                # Positive control: the same secret, policy and instance,
                # launched with the bits the owner's policy asks for.
                good = (NOVA_SEV_ES if tee == "amd-sev-es" else NOVA_SEV) | (
                    NOSEND if gp.get("sev_nosend") else 0)
                self._packet_opens(secret_id, key, instance, good)

    def test_every_failure_is_named(self) -> None:
        secret_id, key, instance = self._sev_secret(
            "amd-sev-es", sev_domain=True)
        self._no_session(["sev_policy_debug", "sev_policy_noks",
                          "sev_policy_es", "sev_policy_domain"],
                         secret_id, instance, SEV_ONLY)
        self._packet_opens(secret_id, key, instance, NOVA_SEV_ES)

    def test_relaxing_debug_and_key_sharing_is_explicit(self) -> None:
        secret_id, key, instance = self._sev_secret(
            debug=True, sev_key_sharing=True)
        self._packet_opens(secret_id, key, instance,
                           NOVA_SEV & ~NODBG & ~NOKS)

    def test_firmware_api_below_the_minimum_gets_no_packet(self) -> None:
        major, minor = self.sev.api
        newer = f"{major}.{minor + 1}"
        secret_id, _, instance = self._sev_secret(abi_minimum=newer,
                                                  sev_nosend=True)
        resp, _ = self._launch(secret_id, instance, NOVA_SEV | NOSEND)
        self.assertEqual(403, resp.status_code, resp.text)
        self.assertEqual("sev_api_version", resp.json()["error"]["code"])
        self.assertNotIn("secret", resp.json())
        self.assertNotIn("secret_header", resp.json())
        self.assertIn(f"tee.release.denied secret={secret_id} "
                      "codes=sev_api_version", self._log())
        # Without NOSEND, the launch policy's own API fields must keep any
        # platform the guest is sent to at the minimum as well.
        secret_id, _, instance = self._sev_secret(abi_minimum=newer)
        self._no_session(["sev_policy_api_version"], secret_id, instance,
                         NOVA_SEV)
        # Positive control: the platform's own version as the minimum.
        secret_id, key, instance = self._sev_secret(
            abi_minimum=f"{major}.{minor}", sev_nosend=True)
        self._packet_opens(secret_id, key, instance, NOVA_SEV | NOSEND)

    def test_the_measurement_route_checks_the_policy_again(self) -> None:
        # The owner tightens the policy after the session was made: the
        # packet follows the policy in force when it would leave.
        secret_id, _, instance = self._sev_secret()
        resp = self._session(secret_id, instance, NOVA_SEV)
        self.assertEqual(201, resp.status_code, resp.text)
        body = resp.json()
        self._bind(secret_id, self._policy(
            tee="amd-sev", min_tcb={}, signers=[],
            guest_policy={"sev_nosend": True},
            measurements=[hashlib.sha256(self.FIRMWARE).hexdigest()]))
        # Rebinding retires the instance binding; nova binds it again.
        resp = requests.put(
            f"{self.url}/v1/tee/instances/{instance}/secrets/{secret_id}",
            headers=self._headers("nova-service-project", "service"),
            json={"project_id": test_release.OWNER}, timeout=30)
        self.assertEqual(200, resp.status_code, resp.text)
        launch = self.sev.launch_start(base64.b64decode(body["dh_cert"]),
                                       base64.b64decode(body["session"]),
                                       NOVA_SEV)
        launch.launch_update_data(self.FIRMWARE)
        major, minor = self.sev.api
        resp = requests.post(
            f"{self.url}/v1/tee/sev/sessions/{body['session_id']}"
            "/measurement", timeout=30,
            headers=self._headers("nova-service-project", "service"),
            json={"measurement": base64.b64encode(
                launch.launch_measure()).decode(),
                "api_major": major, "api_minor": minor,
                "build_id": self.sev.build_id, "policy": NOVA_SEV})
        self.assertEqual(403, resp.status_code, resp.text)
        self.assertEqual("sev_policy_nosend", resp.json()["error"]["code"])
        self.assertNotIn("secret", resp.json())
