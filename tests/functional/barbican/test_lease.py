"""Leases and ``tee-guest renew`` against a real barbican-api.

One server for the class (see .stestr.conf's group_regex). The guest is
the software secure-processor model behind a fake configfs-tsm, run
through ``tee-guest`` itself; its clock is the test's where a lease must
have ended (no sleeps). The operator's lease bound is one hour here.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import sys
import tempfile
import time
from typing import Any

import requests

from barbican_tee.client import guest
from barbican_tee.cmd import tee_guest
from openstack_tee_demo.sp_model import configfs
from tests.functional.barbican import test_release

OWNER = test_release.OWNER
ZERO_TCB = {"bootloader": 0, "tee": 0, "snp": 0, "microcode": 0}
CONFIG_MILAN = {"bootloader": 3, "tee": 0, "snp": 8, "microcode": 115}


def _header(token: str) -> dict[str, Any]:
    part = token.split(".")[0]
    doc: dict[str, Any] = json.loads(
        base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    return doc


class LeaseTest(test_release._ServerTestBase):  # noqa: SLF001

    # Replaces the base class's [tee_attestation] (SEV roots: not used).
    EXTRA_CONF = {"tee_attestation": {"lease_max_age": "3600"}}

    def setUp(self) -> None:
        super().setUp()
        self.tmp_dir = tempfile.mkdtemp(dir=self.tmp)
        self.key_file = os.path.join(self.tmp_dir, "disk.key")
        self.marker = os.path.join(self.tmp_dir, "on-failure")
        self.tsm = self.useFixture(configfs.FakeConfigfsTsm(
            sp=self.sp, report_kwargs={"measurement":
                                       test_release.MEASUREMENT}))

    def _guest(self, command: str, *extra: str,
               clock: float | None = None) -> tuple[int, str]:
        err = io.StringIO()
        argv = [command, "--secret", self.secret_id, "--endpoint", self.url,
                "--tsm-root", self.tsm.root, "--out", self.key_file,
                *extra]
        rc = tee_guest.main(
            argv, stdout=io.BytesIO(), stderr=err,
            clock=(lambda: clock) if clock is not None else time.time)
        return rc, err.getvalue()

    def _on_failure(self) -> list[str]:
        script = ("import os, sys; open(sys.argv[1], 'w').write("
                  "os.environ['TEE_GUEST_FAILURE_CODE'])")
        return ["--on-failure",
                f"{sys.executable} -c \"{script}\" {self.marker}"]

    def _lease(self) -> dict[str, Any]:
        with open(self.key_file + tee_guest.LEASE_SUFFIX) as f:
            doc: dict[str, Any] = json.load(f)
        return doc

    def _set_floor(self, body: dict[str, Any]) -> None:
        resp = requests.put(f"{self.url}/v1/tee/floors/milan", json=body,
                            headers=self._headers(OWNER, "admin"),
                            timeout=30)
        self.assertEqual(200, resp.status_code, resp.text)

    def test_without_max_age_the_answer_is_unchanged(self) -> None:
        secret_id, key = self._bound_secret()
        resp, guest_key = self._attempt(secret_id)
        self.assertEqual(200, resp.status_code, resp.text)
        self.assertEqual(["jwe"], sorted(resp.json()))
        header = _header(resp.json()["jwe"])
        self.assertEqual({"alg", "enc", "kid", "epk"}, set(header))
        self.assertEqual(key, guest.decrypt(resp.json()["jwe"], guest_key))
        policy = requests.get(
            f"{self.url}/v1/tee/policies/{self._policy()}",
            headers=self._headers(OWNER), timeout=30).json()
        self.assertNotIn("max_age", policy)

    def test_max_age_is_validated_and_bounded_by_the_operator(self) -> None:
        for bad in (0, -5, "60", True, 1.5, 3601):
            with self.subTest(max_age=bad):
                resp = requests.post(
                    f"{self.url}/v1/tee/policies", timeout=30,
                    headers=self._headers(OWNER),
                    json={"tee": "amd-sev-snp", "max_age": bad,
                          "measurements": [test_release.MEASUREMENT.hex()]})
                self.assertEqual(400, resp.status_code, resp.text)
                self.assertEqual("policy_max_age",
                                 resp.json()["error"]["code"])
        policy_id = self._policy(max_age=3600)
        shown = requests.get(f"{self.url}/v1/tee/policies/{policy_id}",
                             headers=self._headers(OWNER), timeout=30)
        self.assertEqual(3600, shown.json()["max_age"])

    def test_lease_is_in_the_encrypted_answer(self) -> None:
        secret_id, key = self._bound_secret(max_age=600)
        before = int(time.time())
        resp, guest_key = self._attempt(secret_id)
        after = int(time.time())
        self.assertEqual(200, resp.status_code, resp.text)
        answer = resp.json()
        self.assertEqual(600, answer["max_age"])
        header = _header(answer["jwe"])
        self.assertEqual(600, header["tee_max_age"])
        self.assertTrue(before + 600 <= header["tee_lease_exp"]
                        <= after + 600)
        self.assertEqual(guest.iso_time(header["tee_lease_exp"]),
                         answer["lease_expires_at"])
        self.assertEqual(key, guest.decrypt(answer["jwe"], guest_key))
        # The granted audit record carries the lease.
        self.assertIn(f'"lease_expires_at": "{answer["lease_expires_at"]}"',
                      self._log())

    def test_lease_expires_and_renewal_follows(self) -> None:
        self.secret_id, key = self._bound_secret(max_age=1)
        rc, err = self._guest("fetch")
        self.assertEqual(0, rc, err)
        self.assertIn("max_age 1 s", err)
        first = self._lease()
        self.assertEqual(1, first["max_age"])
        self.assertLessEqual(first["expires_at"], int(time.time()) + 1)
        inode = os.stat(self.key_file).st_ino
        # The lease has ended (the guest's clock): renewal attests again
        # and gets the key with a new lease.
        later = first["expires_at"] + 5.0
        rc, err = self._guest("renew", *self._on_failure(), clock=later)
        self.assertEqual(0, rc, err)
        self.assertIn("renewed", err)
        with open(self.key_file, "rb") as f:
            self.assertEqual(key, f.read())
        self.assertNotEqual(inode, os.stat(self.key_file).st_ino)
        self.assertGreaterEqual(self._lease()["expires_at"],
                                first["expires_at"])
        self.assertFalse(os.path.exists(self.marker))
        self.assertIsNotNone(re.search(
            rf"tee\.release\.granted secret={self.secret_id} codes=- "
            r"evidence=\w+ client=\S+ renewal=claimed", self._log()))
        # The lease ends and renewal fails (barbican-api unreachable):
        # the key is dropped and the operator's action runs.
        ended = self._lease()["expires_at"] + 1.0
        err_io = io.StringIO()
        rc = tee_guest.main(
            ["renew", "--secret", self.secret_id,
             "--endpoint", "http://127.0.0.1:9", "--tsm-root",
             self.tsm.root, "--out", self.key_file, *self._on_failure()],
            stdout=io.BytesIO(), stderr=err_io, clock=lambda: ended)
        # 3: the key file was dropped (the failure itself was the network).
        self.assertEqual(tee_guest.EXIT_REFUSED, rc, err_io.getvalue())
        self.assertIn("[network_error]", err_io.getvalue())
        self.assertIn("its lease ended", err_io.getvalue())
        self.assertFalse(os.path.exists(self.key_file))
        with open(self.marker) as f:
            self.assertEqual("network_error", f.read())

    def test_renewal_after_a_floor_raise_is_refused_and_audited(
            self) -> None:
        self.addCleanup(self._set_floor, ZERO_TCB)
        # A policy that asks for no TCB: only the operator's floor acts.
        self.secret_id, key = self._bound_secret(max_age=3600,
                                                 min_tcb=ZERO_TCB)
        rc, err = self._guest("fetch")
        self.assertEqual(0, rc, err)
        # Positive control: renewal works before the floor moves.
        rc, err = self._guest("renew", *self._on_failure())
        self.assertEqual(0, rc, err)
        self._set_floor(dict(CONFIG_MILAN, snp=9))
        rc, err = self._guest("renew", *self._on_failure())
        self.assertEqual(tee_guest.EXIT_REFUSED, rc, err)
        self.assertIn("[tcb_below_floor]", err)
        # Refused while the lease still ran: dropped all the same.
        self.assertFalse(os.path.exists(self.key_file))
        self.assertFalse(os.path.exists(
            self.key_file + tee_guest.LEASE_SUFFIX))
        with open(self.marker) as f:
            self.assertEqual("tcb_below_floor", f.read())
        log = self._log()
        self.assertIsNotNone(re.search(
            rf"tee\.release\.denied secret={self.secret_id} "
            r"codes=tcb_below_floor evidence=\w+ client=\S+ "
            r"renewal=claimed", log))
        notices = [line for line in log.splitlines()
                   if '"event_type": "tee.release.denied"' in line
                   and self.secret_id in line and "tcb_below_floor" in line]
        self.assertTrue(notices, "no notification of the refusal")
        self.assertIn('"renewal": true', notices[-1])
        self.assertNotIn(key.hex(), log)
        # Saying "renewal" buys nothing: a new fetch is refused the same.
        rc, err = self._guest("fetch")
        self.assertEqual(tee_guest.EXIT_REFUSED, rc, err)
        self.assertIn("[tcb_below_floor]", err)
        # Floor lowered again: the guest fetches its key again.
        self._set_floor(CONFIG_MILAN)
        rc, err = self._guest("fetch")
        self.assertEqual(0, rc, err)
