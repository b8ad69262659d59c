"""``openstack-tee demo``, the README's main job, run as a user runs it."""

from __future__ import annotations

import os
import re
import subprocess

from tests import base

VERDICTS = {
    "SNP guest placed on the up-to-date host": "snp-current",
    "hostData binds the instance": "SHA-256(prefix + uuid)",
    "release to the genuine guest": "granted",
    "the same nonce replayed": "denied (nonce_unknown)",
    "guest booted from altered firmware": "denied (policy_measurement)",
    "SEV key injected, decrypted in the guest": "granted",
    "SEV guest on altered firmware": "denied (sev_measurement_mismatch)",
}


class DemoCommandTest(base.TestCase):

    def test_every_verdict_and_exit_zero(self) -> None:
        env = dict(os.environ)
        # Nova's harness runs with its default (eventlet) concurrency, as
        # in the Nova functional tests.
        env.pop("OS_NOVA_DISABLE_EVENTLET_PATCHING", None)
        proc = subprocess.run([base.installed_command("openstack-tee"),
                               "demo"],
                              capture_output=True, text=True, check=False,
                              env=env, timeout=600)
        self.assertEqual(0, proc.returncode, proc.stdout + proc.stderr)
        out = proc.stdout
        for what, observed in VERDICTS.items():
            self.assertIn(f"[OK  ] {what}: {observed}\n", out)
            self.assertRegex(out, rf"  OK    {re.escape(what)} +"
                                  rf"{re.escape(observed)} +\d+ ms\n")
        self.assertNotIn("[FAIL]", out)
        self.assertIn("7/7 expected verdicts", out)
        # What the scheduler decided and why, and the launch XML.
        self.assertIn("TEEFilter: host snp-stale fails: SNP TCB below "
                      "minimum", out)
        self.assertIn('<launchSecurity type="sev-snp"', out)
        self.assertIn("<hostData>", out)
        self.assertIn('<launchSecurity type="sev">', out)
        self.assertIn("started-paused -> secret-injected -> resumed", out)
        self.assertNotRegex(out, r"Traceback")
