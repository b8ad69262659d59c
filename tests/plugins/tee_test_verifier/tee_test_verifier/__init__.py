"""Test plugins for openstack-tee's verifier and endorsement interfaces.

``test-hmac-evidence`` is a made-up evidence format: a set of claims
(measurement, report_data, host_data, hex) and an HMAC-SHA384 over them
with a key from ``[tee_test_verifier] key_file``. It verifies that MAC
(in constant time) and evaluates the owner's SNP policy's measurements
and instance binding, as a real verifier would.

``test-directory`` is an endorsement source: the VCEK for a chip id is
the file ``<chip id, hex>.pem`` in ``[tee_test_verifier]
endorsement_dir``.
"""

from __future__ import annotations

from collections.abc import Mapping
import datetime
import hashlib
import hmac
import json
import os
from typing import Any

from oslo_config import cfg

from barbican_tee.attestation import errors
from barbican_tee.attestation import evidence
from barbican_tee.attestation import policy as policy_mod

FORMAT = "test-hmac-evidence"
GROUP = "tee_test_verifier"
OPTS = [
    cfg.StrOpt("key_file", help="The HMAC key of test-hmac-evidence."),
    cfg.StrOpt("endorsement_dir",
               help="Where test-directory finds <chip id>.pem VCEKs."),
]
# What this format's platform reports: Milan, above the default floor.
PLATFORM_TCB = {"bootloader": 4, "tee": 0, "snp": 24, "microcode": 220}
_FIELDS = {"measurement": 48, "report_data": 64, "host_data": 32}


def mac(key: bytes, claims: Mapping[str, str]) -> str:
    """The MAC of ``claims`` (hex), as a guest of this format sends it."""
    body = json.dumps(dict(claims), sort_keys=True,
                      separators=(",", ":")).encode()
    return hmac.new(key, b"test-hmac-evidence:v1:" + body,
                    hashlib.sha384).hexdigest()


class HmacEvidenceVerifier(evidence.EvidenceVerifier):
    format = FORMAT

    def __init__(self, conf: cfg.ConfigOpts,
                 sources: tuple[evidence.EndorsementSource, ...] = ()
                 ) -> None:
        super().__init__(conf, sources)
        conf.register_opts(OPTS, group=GROUP)
        path = conf.tee_test_verifier.key_file
        if not path:
            raise ValueError("[tee_test_verifier] key_file is required")
        with open(path, "rb") as f:
            self._key = f.read()

    def verify(self, evidence_doc: Mapping[str, Any],
               now: datetime.datetime) -> evidence.VerifiedEvidence:
        claims = evidence_doc.get("claims")
        tag = evidence_doc.get("mac")
        if not isinstance(claims, dict) or not isinstance(tag, str):
            raise evidence.MalformedEvidence(
                "test-hmac-evidence needs claims and mac")
        try:
            values = {name: bytes.fromhex(claims[name])
                      for name in _FIELDS}
            given = bytes.fromhex(tag)
        except (KeyError, TypeError, ValueError):
            raise evidence.MalformedEvidence(
                "test-hmac-evidence claims and mac must be hex") from None
        if set(claims) != set(_FIELDS) or any(
                len(values[n]) != size for n, size in _FIELDS.items()):
            raise evidence.MalformedEvidence(
                "test-hmac-evidence claims are measurement (48 bytes), "
                "report_data (64) and host_data (32)")
        expected = bytes.fromhex(mac(self._key, claims))
        if not hmac.compare_digest(given, expected):
            raise errors.VerificationFailed(
                "the test-hmac-evidence MAC does not verify",
                code="test_hmac_mismatch")
        # The format's platform: a Milan part at the TCB below (what a
        # real verifier reads from the report), so that the operator's
        # platform floor applies to this format too.
        return evidence.VerifiedEvidence(
            format=FORMAT, tee="amd-sev-snp",
            report_data=values["report_data"],
            measurement=values["measurement"],
            instance_data=values["host_data"], product="milan",
            tcb=dict(PLATFORM_TCB), details=claims)

    def evaluate(self, policy: policy_mod.Policy,
                 verified: evidence.VerifiedEvidence,
                 instance_uuid: str | None) -> policy_mod.Result:
        failures: list[policy_mod.Failure] = []
        if policy.tee != verified.tee:
            failures.append(policy_mod.Failure(
                "policy_tee_mismatch",
                f"the policy is for {policy.tee}, the evidence is "
                f"{FORMAT}"))
            return policy_mod.Result(tuple(failures))
        if instance_uuid is not None and not hmac.compare_digest(
                verified.instance_data, hashlib.sha256(
                    b"openstack-tee:v1:" + instance_uuid.encode()).digest()):
            failures.append(policy_mod.Failure(
                "instance_mismatch",
                "the guest is not the instance the secret is bound to"))
            return policy_mod.Result(tuple(failures))
        if policy.measurements and not any(
                hmac.compare_digest(verified.measurement, m)
                for m in policy.measurements):
            failures.append(policy_mod.Failure(
                "policy_measurement",
                "the measurement is not one the policy allows"))
        return policy_mod.Result(tuple(failures))


class FaultyVerifier(HmacEvidenceVerifier):
    """A verifier with a bug: it raises something unexpected."""

    format = "test-faulty-evidence"

    def verify(self, evidence_doc: Mapping[str, Any],
               now: datetime.datetime) -> evidence.VerifiedEvidence:
        raise RuntimeError("a bug in a third-party verifier")


class DirectorySource(evidence.EndorsementSource):
    name = "test-directory"

    def __init__(self, conf: cfg.ConfigOpts) -> None:
        super().__init__(conf)
        conf.register_opts(OPTS, group=GROUP)

    def snp_endorsement(self, chip_id: bytes, reported_tcb: int,
                        signer: str) -> bytes | None:
        folder = self.conf.tee_test_verifier.endorsement_dir
        if not folder or signer != "vcek":
            return None
        try:
            with open(os.path.join(folder, chip_id.hex() + ".pem"),
                      "rb") as f:
                return f.read()
        except FileNotFoundError:
            return None
