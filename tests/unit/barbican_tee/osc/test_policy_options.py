"""``openstack tee policy create``: options that relax a default."""

from __future__ import annotations

from unittest import mock

from osc_lib import exceptions

from barbican_tee.osc.v1 import policy as osc_policy
from tests import base

M = "ab" * 48


class CreatePolicyOptionsTest(base.TestCase):

    def _doc(self, *argv: str) -> dict[str, object]:
        cmd = osc_policy.CreatePolicy(mock.Mock(), mock.Mock())
        args = cmd.get_parser("policy create").parse_args(list(argv))
        return cmd.document(args)

    def test_relaxing_options(self) -> None:
        doc = self._doc("web", "--tee", "amd-sev-snp", "--measurement", M,
                        "--signer", "vcek", "--signer", "vlek",
                        "--vmpl", "0", "--vmpl", "2",
                        "--guest-policy", "migrate_ma=true")
        self.assertEqual(["vcek", "vlek"], doc["signers"])
        self.assertEqual([0, 2], doc["vmpl"])
        self.assertEqual({"migrate_ma": True}, doc["guest_policy"])

    def test_sev_and_tdx_options(self) -> None:
        doc = self._doc("vm", "--tee", "amd-sev", "--measurement", "cd" * 32,
                        "--guest-policy", "sev_nosend=true",
                        "--guest-policy", "sev_key_sharing=false")
        self.assertEqual({"sev_nosend": True, "sev_key_sharing": False},
                         doc["guest_policy"])
        doc = self._doc("td", "--tee", "intel-tdx", "--measurement", M,
                        "--rtmr", f"1={'11' * 48}", "--mr-seam", "5e" * 48,
                        "--xfam", "0x00000000000602e7",
                        "--td-attributes", "0x0000000010000000")
        self.assertEqual([None, "11" * 48, None, None], doc["rtmrs"])
        self.assertEqual("5e" * 48, doc["mr_seam"])

    def test_max_age_is_a_lease(self) -> None:
        self.assertNotIn("max_age", self._doc(
            "web", "--tee", "amd-sev-snp", "--measurement", M))
        doc = self._doc("web", "--tee", "amd-sev-snp", "--measurement", M,
                        "--max-age", "3600")
        self.assertEqual(3600, doc["max_age"])
        exc = self.assertRaises(
            exceptions.CommandError, self._doc, "web", "--tee",
            "amd-sev-snp", "--measurement", M, "--max-age", "0")
        self.assertIn("policy_max_age", str(exc))
