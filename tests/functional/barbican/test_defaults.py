"""Secure defaults, against a real barbican-api with the SNP model.

The smallest policy a project can write (one launch measurement) must not
release a key to a host with an all-zero TCB, to a guest at VMPL 3, on a
report signed by a VLEK, to a guest that allows a migration agent, or to a
debuggable guest. Each is refused with its own code next to a positive
control; each but the operator's TCB floor is granted once the policy
relaxes that point, and only then.
"""

from __future__ import annotations

import copy
from typing import Any

import requests

from barbican_tee.attestation import snp
from barbican_tee.client import guest
from openstack_tee_demo.sp_model import snp as sp_model
from tests.functional.barbican import test_release

MEASUREMENT = test_release.MEASUREMENT
DEBUG = 0x30000 | 1 << 19
MIGRATE_MA = 0x30000 | 1 << 18


class SecureDefaultsTest(test_release._ServerTestBase):

    def _smallest(self, **relax: Any) -> tuple[str, bytes]:
        """A secret bound to a policy that names one measurement only."""
        doc = {"tee": "amd-sev-snp", "measurements": [MEASUREMENT.hex()]}
        doc.update(relax)
        secret_id, key = self._secret()
        resp = self._post_policy(doc)
        self.assertEqual(201, resp.status_code, resp.text)
        self._bind(secret_id, resp.json()["id"])
        return secret_id, key

    def _post_policy(self, doc: dict[str, Any]) -> Any:
        return requests.post(f"{self.url}/v1/tee/policies", json=doc,
                             headers=self._headers(test_release.OWNER),
                             timeout=30)

    def _old_firmware(self) -> sp_model.SecureProcessor:
        """The model's chip, running an all-zero TCB (a VCEK for it)."""
        zero = snp.TcbVersion(bootloader=0, tee=0, snp=0, microcode=0)
        old = copy.copy(self.sp)
        old.tcb = zero
        old.vcek_der = old.endorsement_cert(
            old.vcek_key, "SEV-VCEK", old.ask_key, f"SEV-{old.product}",
            zero, hwid=old._hwid())
        return old

    def _granted(self, secret_id: str, key: bytes, **kw: Any) -> None:
        resp, guest_key = self._attempt(secret_id, **kw)
        self.assertEqual(200, resp.status_code, resp.text)
        self.assertEqual(key, guest.decrypt(resp.json()["jwe"], guest_key))

    def _cases(self) -> list[tuple[str, dict[str, Any]]]:
        return [
            ("snp_tcb_below_floor", dict(sp=self._old_firmware())),
            ("policy_vmpl", dict(vmpl=3)),
            ("policy_signer", dict(signer="vlek")),
            ("policy_migrate_ma", dict(policy=MIGRATE_MA)),
            ("policy_debug", dict(policy=DEBUG)),
        ]

    def test_smallest_policy_refuses_each_lax_point(self) -> None:
        secret_id, key = self._smallest()
        self._granted(secret_id, key)  # positive control
        for code, kw in self._cases():
            with self.subTest(code=code):
                self._refused(code, secret_id, **kw)
        # Nothing was spent but the refused attempts' own nonces.
        self._granted(secret_id, key)

    def test_the_stored_policy_shows_the_defaults(self) -> None:
        resp = self._post_policy({"tee": "amd-sev-snp",
                                  "measurements": [MEASUREMENT.hex()]})
        shown = requests.get(
            f"{self.url}/v1/tee/policies/{resp.json()['id']}", timeout=30,
            headers=self._headers(test_release.OWNER)).json()
        self.assertEqual(["vcek"], shown["signers"])
        self.assertEqual(0, shown["vmpl"])
        self.assertIs(False, shown["guest_policy"]["migrate_ma"])
        self.assertIs(False, shown["guest_policy"]["debug"])
        # ... and is accepted back as it is.
        self.assertEqual(201, self._post_policy(shown).status_code)

    def test_each_point_is_granted_only_when_relaxed(self) -> None:
        relaxed = [
            ("policy_vmpl", {"vmpl": [0, 3]}, dict(vmpl=3)),
            ("policy_signer", {"signers": ["vcek", "vlek"]},
             dict(signer="vlek")),
            ("policy_migrate_ma", {"guest_policy": {"migrate_ma": True}},
             dict(policy=MIGRATE_MA)),
            ("policy_debug", {"guest_policy": {"debug": True}},
             dict(policy=DEBUG)),
        ]
        for code, relax, kw in relaxed:
            with self.subTest(code=code):
                secret_id, key = self._smallest(**relax)
                self._granted(secret_id, key, **kw)
                # The relaxation is for that point only.
                self._granted(secret_id, key)
                others = [(c, k) for c, k in self._cases() if c != code]
                for other, other_kw in others:
                    self._refused(other, secret_id, **other_kw)

    def test_a_policy_cannot_lower_the_operator_floor(self) -> None:
        secret_id, key = self._smallest(min_tcb={
            "bootloader": 0, "tee": 0, "snp": 0, "microcode": 0})
        self._refused("snp_tcb_below_floor", secret_id,
                      sp=self._old_firmware())
        self._granted(secret_id, key)
        # A policy minimum above the floor raises it.
        secret_id, _ = self._smallest(min_tcb={"snp": 9})
        self._refused("policy_tcb_below_minimum", secret_id)
