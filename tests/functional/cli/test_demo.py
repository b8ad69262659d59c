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
    # Trust over time: a floor raise, a lease, the report.
    "guest on snp-stale fetches its key (tee-guest)":
        "granted (lease 300 s)",
    "its renewal before the floor moves": "renewed",
    "new guest on snp-stale after the raise": "refused (below the floor)",
    "the guest on snp-stale renews after the raise":
        "denied (tcb_below_floor), key dropped",
    "the refused renewal in the audit log":
        "tee.release.denied (renewal=claimed)",
    "tcb report lists snp-stale and its guest":
        "snp-stale: below the floor, 1 guest",
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
                              env=env, timeout=900)
        self.assertEqual(0, proc.returncode, proc.stdout + proc.stderr)
        out = proc.stdout
        for what, observed in VERDICTS.items():
            self.assertIn(f"[OK  ] {what}: {observed}\n", out)
            self.assertRegex(out, rf"  OK    {re.escape(what)} +"
                                  rf"{re.escape(observed)} +\d+ ms\n")
        self.assertNotIn("[FAIL]", out)
        self.assertIn(f"{len(VERDICTS)}/{len(VERDICTS)} expected verdicts",
                      out)
        self.assertEqual(13, len(VERDICTS))
        # What the scheduler decided and why, and the launch XML.
        self.assertIn("TEEFilter: host snp-stale fails: SNP TCB below "
                      "minimum", out)
        self.assertIn('<launchSecurity type="sev-snp"', out)
        self.assertIn("<hostData>", out)
        self.assertIn('<launchSecurity type="sev">', out)
        self.assertIn("started-paused -> secret-injected -> resumed", out)
        # The last chapter: the refusal, the audit line, the report.
        self.assertIn("TEEFilter: host snp-stale fails: SNP TCB below the "
                      "milan platform floor in snp", out)
        self.assertRegex(out, r"openstack-tee audit tee\.release\.denied "
                              r"secret=\S+ codes=tcb_below_floor .* "
                              r"renewal=claimed\n")
        self.assertRegex(out, r"\n      snp-stale +milan +3\.0\.8\.115 +"
                              r"3\.0\.22\.115 +[0-9a-f-]{36} ")
        self.assertNotRegex(out, r"Traceback")
