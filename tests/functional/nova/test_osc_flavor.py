"""``openstack tee flavor set`` against Nova 34.0.0's real API.

python-openstackclient runs in-process (its shell, our plugin through the
entry point, openstacksdk's compute proxy) and talks to the Nova API of
the functional harness, which carries our extra-spec validators and paste
filter. There is no Keystone here: ``--os-auth-type none``, and the
identity headers the harness's own client sends ride on the no-auth
plugin's headers.
"""

from __future__ import annotations

import contextlib
import io
import json
from typing import Any

import fixtures
from openstackclient import shell

from nova_tee import specs
from openstack_tee_demo import nova_harness as base


class FlavorSetTest(base.TEEServersTestBase):

    def setUp(self) -> None:
        super().setUp()
        self.identity = {"X-Auth-Token": "notused",
                         "X-Auth-User": "admin", "X-User-Id": "admin",
                         "X-Auth-Project-Id": self.api.project_id,
                         "X-Roles": "admin,member,reader"}
        self.useFixture(fixtures.MonkeyPatch(
            "keystoneauth1.noauth.NoAuth.get_headers",
            lambda plugin, session, **kw: dict(self.identity)))
        self.flavor = self._create_flavor(name="conf.small",
                                          extra_spec={"hw:cpu_policy":
                                                      "shared"})

    def osc(self, *args: str) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        argv = ["--os-auth-type", "none",
                "--os-endpoint", self.api_fixture.base_url,
                "--os-compute-api-version", "2.86", *args]
        with contextlib.redirect_stdout(out), \
                contextlib.redirect_stderr(err):
            status = shell.main(argv)
        return status, out.getvalue(), err.getvalue()

    def extra_specs(self) -> dict[str, str]:
        flavor: dict[str, Any] = self.admin_api.api_get(
            f"/flavors/{self.flavor}/os-extra_specs").body
        return dict(flavor["extra_specs"])

    def test_writes_validated_specs_and_explains_each(self) -> None:
        status, out, err = self.osc(
            "tee", "flavor", "set", "conf.small", "--model", "amd-sev-snp",
            "--min-tcb", "snp=22", "--spec", "snp_smt=false",
            "-f", "json")
        self.assertEqual(0, status, err)
        rows = {r["Extra spec"]: r for r in json.loads(out)}
        self.assertEqual({
            "hw:cpu_policy": "shared",
            "hw:mem_encryption": "true",
            "hw:mem_encryption_model": "amd-sev-snp",
            "tee:min_tcb_snp": "22",
            "tee:snp_smt": "false"}, self.extra_specs())
        self.assertEqual(specs.KEYS["tee:min_tcb_snp"][2],
                         rows["tee:min_tcb_snp"]["Meaning"])
        self.assertIn("SEV-SNP", rows["hw:mem_encryption_model"]["Meaning"])
        self.assertNotIn("hw:cpu_policy", rows)

        # Another model: tee: keys that no longer apply are removed.
        status, out, err = self.osc(
            "tee", "flavor", "set", self.flavor, "--model", "amd-sev",
            "--attestation", "required", "-f", "json")
        self.assertEqual(0, status, err)
        self.assertEqual({
            "hw:cpu_policy": "shared",
            "hw:mem_encryption": "true",
            "hw:mem_encryption_model": "amd-sev",
            "tee:attestation": "required"}, self.extra_specs())
        removed = {r["Extra spec"] for r in json.loads(out)
                   if r["Value"] == "(removed)"}
        self.assertEqual({"tee:min_tcb_snp", "tee:snp_smt"}, removed)

    def test_contradictions_are_refused_and_nothing_is_written(self) -> None:
        before = self.extra_specs()
        for args, message in (
                (("--model", "amd-sev", "--min-tcb", "snp=22"),
                 "tee:min_tcb_snp applies to amd-sev-snp"),
                (("--model", "amd-sev-snp", "--spec", "snp_debug=true",
                  "--attestation", "required"),
                 "tee:snp_debug=true conflicts with tee:attestation"),
                (("--model", "amd-sev-snp", "--spec", "warp=9"),
                 "'tee:warp' is not a known tee: extra spec"),
                (("--model", "amd-sev-snp", "--min-tcb", "snp=300"),
                 "tee:min_tcb_snp must be an integer from 0 to 255"),
                (("--model", "amd-sev-snp", "--min-tcb", "turbo=1"),
                 "--min-tcb takes COMPONENT=N")):
            with self.subTest(message=message):
                status, _out, err = self.osc("tee", "flavor", "set",
                                             "conf.small", *args)
                self.assertEqual(1, status)
                self.assertIn(message, err)
        self.assertEqual(before, self.extra_specs())

    def test_dry_run_explains_and_writes_nothing(self) -> None:
        before = self.extra_specs()
        status, out, err = self.osc(
            "tee", "flavor", "set", "conf.small", "--model", "intel-tdx",
            "--dry-run", "-f", "value")
        self.assertEqual(0, status, err)
        self.assertIn("hw:mem_encryption_model intel-tdx", out)
        self.assertEqual(before, self.extra_specs())

    def test_what_nova_refuses_is_reported(self) -> None:
        # Only an admin may change a flavor's extra specs (Nova's policy);
        # the command passes Nova's refusal on and nothing changes.
        before = self.extra_specs()
        self.identity.update({"X-Roles": "member,reader",
                              "X-Auth-User": "tenant",
                              "X-User-Id": "tenant"})
        status, _out, err = self.osc(
            "tee", "flavor", "set", "conf.small", "--model", "amd-sev-snp")
        self.assertEqual(1, status)
        self.assertIn("Nova refused setting the extra specs (HTTP 403)", err)
        self.assertEqual(before, self.extra_specs())
