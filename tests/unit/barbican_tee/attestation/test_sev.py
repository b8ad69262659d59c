"""Guest-owner SEV launch: session, measurement, secret injection."""

from __future__ import annotations

import base64
from collections.abc import Callable
import hashlib
import json
import os
import pickle
import shutil
import subprocess
import tempfile
import uuid

from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from barbican_tee.attestation import errors
from barbican_tee.attestation import sev
from barbican_tee.attestation import sev_certs
from openstack_tee_demo.sp_model import sev as sp_model
from tests import base

VECTORS = json.loads(base.read_fixture("virtee-sev",
                                       "sev_legacy_test_vectors.json"))
LUKS = uuid.UUID("736869e5-84f0-4973-92ec-06879ce3da0b")
OTHER = uuid.UUID("2b6f2e4e-5c4f-4a3b-9d8e-1f2a3b4c5d6e")
FIRMWARE = b"OVMF" + bytes(range(256)) * 64
POLICY = 0x1
TOOL = "/usr/bin/virt-qemu-sev-validate"
SYSTEM_PYTHON = "/usr/bin/python3"
PLATFORM = sp_model.SevPlatform()


def flip(data: bytes, index: int, mask: int = 0x01) -> bytes:
    out = bytearray(data)
    out[index] ^= mask
    return bytes(out)


class TestVectors(base.TestCase):

    def test_launch_measure_vector(self) -> None:
        v = VECTORS["sev_launch_measure"]
        tik = bytes.fromhex(v["tik"])
        digest = bytes.fromhex(v["ld_digest_sha256"])
        mnonce = bytes.fromhex(v["mnonce"])
        got = sev.compute_launch_measurement(
            tik, v["api_major"], v["api_minor"], v["build"], v["policy"],
            digest, mnonce)
        self.assertEqual(v["expected_measure"], got.hex())
        measurement = bytes.fromhex(v["expected_measure"]) + mnonce
        other = hashlib.sha256(b"other").digest()
        matched = sev.verify_launch_measurement(
            tik, base64.b64encode(measurement).decode(), v["api_major"],
            v["api_minor"], v["build"], v["policy"], [other, digest])
        self.assertEqual(digest, matched)

    def test_kdf_vector(self) -> None:
        v = VECTORS["kdf_sev_master_secret"]
        got = sev.kdf(bytes.fromhex(v["key"]), v["label"].encode(),
                      bytes.fromhex(v["ctx"]), v["size"])
        self.assertEqual(v["expected"], got.hex())

    def test_kdf_multi_block(self) -> None:
        long = sev.kdf(b"k" * 16, b"label", b"ctx", 40)
        self.assertEqual(40, len(long))
        # The length word differs, so a prefix is not the shorter output.
        self.assertNotEqual(sev.kdf(b"k" * 16, b"label", b"ctx", 16),
                            long[:16])

    def test_hmac_vector(self) -> None:
        v = VECTORS["hmac_zero"]
        got = sev.hmac_sha256(bytes.fromhex(v["key"]),
                              bytes.fromhex(v["data"]))
        self.assertEqual(v["expected"], got.hex())

    def test_session_blob_vector(self) -> None:
        # virtee/sev src/session/mod.rs, test "session": all-zero inputs.
        blob = sev.build_session_blob(bytes(16), bytes(16), bytes(16),
                                      bytes(16), bytes(16), 0)
        self.assertEqual(128, len(blob))
        self.assertEqual(bytes(16), blob[:16])
        self.assertEqual("2137bc7f9bb8bd7c3e55a576a15d3454"
                         "b3856b8ba27afadf46dcfee9f02c02c4", blob[16:48].hex())
        self.assertEqual(bytes(16), blob[48:64])
        self.assertEqual("3176c0752738bd9d5e86689534020f52"
                         "8c088f16238826b000b327dee6aeed7d", blob[64:96].hex())
        self.assertEqual(VECTORS["hmac_zero"]["expected"], blob[96:].hex())


def launch(policy: int = POLICY,
           platform: sp_model.SevPlatform = PLATFORM
           ) -> tuple[sev.LaunchSession, sp_model.GuestLaunch, bytes]:
    session = sev.create_launch_session(platform.pdh, policy)
    guest = platform.launch_start(session.dh_cert, session.session, policy)
    guest.measure_firmware(FIRMWARE)
    return session, guest, guest.launch_measure()


class TestRoundTrip(base.TestCase):

    def test_full_round_trip(self) -> None:
        sev_certs.verify_platform_chain(PLATFORM.ark, PLATFORM.ask,
                                        PLATFORM.cek, PLATFORM.pek,
                                        PLATFORM.pdh, oca=PLATFORM.oca)
        session, guest, measurement = launch()
        digest = hashlib.sha256(FIRMWARE).digest()
        major, minor = PLATFORM.api
        matched = session.verify_measurement(
            base64.b64encode(measurement).decode(), major, minor,
            PLATFORM.build_id, [hashlib.sha256(b"x").digest(), digest])
        self.assertEqual(digest, matched)
        secrets: dict[uuid.UUID | str, bytes] = {
            LUKS: b"correct horse battery staple",
            str(OTHER): b"\x00\x01second"}
        packet = session.build_secret_packet(measurement, secrets, major,
                                             minor)
        self.assertEqual(52, len(packet.header))
        self.assertEqual(0, len(packet.payload) % 16)
        self.assertEqual(packet.header,
                         base64.b64decode(packet.header_b64))
        self.assertEqual(packet.payload,
                         base64.b64decode(packet.payload_b64))
        got = guest.launch_secret(packet.header, packet.payload)
        self.assertEqual({LUKS: secrets[LUKS], OTHER: secrets[str(OTHER)]},
                         got)

    def test_multiple_update_data_calls(self) -> None:
        session = sev.create_launch_session(PLATFORM.pdh, POLICY)
        guest = PLATFORM.launch_start(session.dh_cert, session.session,
                                      POLICY)
        guest.launch_update_data(FIRMWARE[:100])
        guest.launch_update_data(FIRMWARE[100:])
        m = guest.launch_measure()
        tek, tik = session.export_transport_keys()
        self.assertTrue(sev.launch_digest_matches(
            tik, m, *PLATFORM.api, PLATFORM.build_id, POLICY,
            hashlib.sha256(FIRMWARE).digest()))

    def test_wrong_digest_refused(self) -> None:
        session, _, measurement = launch()
        exc = self.assertRaises(
            errors.VerificationFailed, session.verify_measurement,
            measurement, *PLATFORM.api, PLATFORM.build_id,
            [hashlib.sha256(FIRMWARE + b"!").digest()])
        self.assertEqual("sev_measurement_mismatch", exc.code)

    def test_wrong_platform_version_or_policy_refused(self) -> None:
        session, _, measurement = launch()
        tek, tik = session.export_transport_keys()
        digest = [hashlib.sha256(FIRMWARE).digest()]
        major, minor = PLATFORM.api
        for args in ((major, minor + 1, PLATFORM.build_id, POLICY),
                     (major, minor, PLATFORM.build_id + 1, POLICY),
                     (major, minor, PLATFORM.build_id, POLICY | 4)):
            exc = self.assertRaises(errors.VerificationFailed,
                                    sev.verify_launch_measurement, tik,
                                    measurement, *args, digest)
            self.assertEqual("sev_measurement_mismatch", exc.code)

    def test_tampered_measurement_refused(self) -> None:
        session, _, measurement = launch()
        for index in (0, 31, 32, 47):
            exc = self.assertRaises(
                errors.VerificationFailed, session.verify_measurement,
                flip(measurement, index), *PLATFORM.api, PLATFORM.build_id,
                [hashlib.sha256(FIRMWARE).digest()])
            self.assertEqual("sev_measurement_mismatch", exc.code)

    def test_tampered_secret_packet_refused_by_model(self) -> None:
        session, guest, measurement = launch()
        packet = session.build_secret_packet(measurement, {LUKS: b"s3cret"},
                                             *PLATFORM.api)
        for index in (0, 4, 19, 20, 51):
            exc = self.assertRaises(sp_model.SevModelError,
                                    guest.launch_secret,
                                    flip(packet.header, index),
                                    packet.payload)
            self.assertEqual("header_mac_mismatch", exc.code)
        for index in (0, len(packet.payload) - 1):
            exc = self.assertRaises(sp_model.SevModelError,
                                    guest.launch_secret, packet.header,
                                    flip(packet.payload, index))
            self.assertEqual("header_mac_mismatch", exc.code)
        exc = self.assertRaises(sp_model.SevModelError, guest.launch_secret,
                                packet.header, packet.payload + bytes(16))
        self.assertEqual("header_mac_mismatch", exc.code)
        # The untampered packet still works.
        self.assertEqual({LUKS: b"s3cret"},
                         guest.launch_secret(packet.header, packet.payload))

    def test_packet_bound_to_measurement(self) -> None:
        session, guest, measurement = launch()
        other = flip(measurement, 3)
        packet = session.build_secret_packet(other, {LUKS: b"s"},
                                             *PLATFORM.api)
        exc = self.assertRaises(sp_model.SevModelError, guest.launch_secret,
                                packet.header, packet.payload)
        self.assertEqual("header_mac_mismatch", exc.code)

    def test_session_for_other_pdh_refused(self) -> None:
        other = sp_model.SevPlatform()
        session = sev.create_launch_session(other.pdh, POLICY)
        exc = self.assertRaises(sp_model.SevModelError,
                                PLATFORM.launch_start, session.dh_cert,
                                session.session, POLICY)
        self.assertEqual("wrap_mac_mismatch", exc.code)

    def test_session_with_other_policy_refused(self) -> None:
        session = sev.create_launch_session(PLATFORM.pdh, POLICY)
        exc = self.assertRaises(sp_model.SevModelError,
                                PLATFORM.launch_start, session.dh_cert,
                                session.session, POLICY | 0x4)
        self.assertEqual("policy_failure", exc.code)

    def test_tampered_session_blob_refused(self) -> None:
        session = sev.create_launch_session(PLATFORM.pdh, POLICY)
        for index, code in ((0, "wrap_mac_mismatch"),
                            (20, "wrap_mac_mismatch"),
                            (50, "policy_failure"),
                            (70, "wrap_mac_mismatch"),
                            (100, "policy_failure")):
            exc = self.assertRaises(sp_model.SevModelError,
                                    PLATFORM.launch_start, session.dh_cert,
                                    flip(session.session, index), POLICY)
            self.assertEqual(code, exc.code, str(index))

    def test_owner_cert_format(self) -> None:
        session = sev.create_launch_session(PLATFORM.pdh, POLICY)
        cert = sev_certs.parse_sev_cert(session.dh_cert)
        self.assertEqual(sev_certs.SEV_CERT_SIZE, len(session.dh_cert))
        self.assertEqual(sev_certs.Usage.PDH, cert.usage)
        self.assertEqual(sev_certs.Algorithm.ECDH_SHA256, cert.algorithm)
        self.assertEqual(sev_certs.Curve.P384, cert.curve)
        self.assertTrue(all(s.is_empty for s in cert.signatures))
        self.assertEqual(session.dh_cert,
                         base64.b64decode(session.dh_cert_b64))
        self.assertEqual(session.session,
                         base64.b64decode(session.session_b64))

    def test_session_against_real_pdh(self) -> None:
        pdh = base.read_fixture("virtee-sev", "tests", "rome", "pdh.cert")
        session = sev.create_launch_session(pdh, 0x33)
        self.assertEqual(128, len(session.session))
        self.assertEqual(0x33, session.policy)
        exc = self.assertRaises(
            errors.InvalidInput, sev.create_launch_session,
            base.read_fixture("virtee-sev", "tests", "rome", "pek.cert"), 0)
        self.assertEqual("sev_cert_role", exc.code)


class TestSessionState(base.TestCase):

    def test_state_round_trip(self) -> None:
        session, guest, measurement = launch()
        state = json.loads(json.dumps(session.to_state()))
        again = sev.LaunchSession.from_state(state)
        self.assertEqual(session.export_transport_keys(),
                         again.export_transport_keys())
        self.assertEqual(session.session, again.session)
        self.assertEqual(session.dh_cert, again.dh_cert)
        packet = again.build_secret_packet(measurement, {LUKS: b"k"},
                                           *PLATFORM.api)
        self.assertEqual({LUKS: b"k"},
                         guest.launch_secret(packet.header, packet.payload))

    def test_repr_hides_keys(self) -> None:
        session = sev.create_launch_session(PLATFORM.pdh, POLICY)
        tek, tik = session.export_transport_keys()
        for text in (repr(session), str(session)):
            for key in (tek, tik):
                self.assertNotIn(key.hex(), text)
                self.assertNotIn(base64.b64encode(key).decode(), text)
                self.assertNotIn(repr(key), text)
        self.assertRaises(TypeError, pickle.dumps, session)
        self.assertFalse(hasattr(session, "__dict__"))

    def test_malformed_state(self) -> None:
        good = sev.create_launch_session(PLATFORM.pdh, POLICY).to_state()
        bad_states: list[dict[str, str | int]] = [
            {}, {**good, "version": 2}, {**good, "tek": "!!"},
            {**good, "policy": "1"}, {**good, "tik": 5},
        ]
        for state in bad_states:
            exc = self.assertRaises(errors.InvalidInput,
                                    sev.LaunchSession.from_state, state)
            self.assertEqual("sev_session_state", exc.code)
        exc = self.assertRaises(
            errors.InvalidInput, sev.LaunchSession.from_state,
            {**good, "tek": base64.b64encode(bytes(15)).decode()})
        self.assertEqual("sev_key_size", exc.code)
        exc = self.assertRaises(
            errors.InvalidInput, sev.LaunchSession.from_state,
            {**good, "session": base64.b64encode(bytes(127)).decode()})
        self.assertEqual("sev_session_size", exc.code)
        exc = self.assertRaises(
            errors.InvalidInput, sev.LaunchSession.from_state,
            {**good, "policy": -1})
        self.assertEqual("sev_policy", exc.code)


class TestInputErrors(base.TestCase):

    tik = bytes(16)
    digest = bytes(32)

    def _code(self, fn: Callable[..., object], *args: object) -> str:
        exc = self.assertRaises(errors.InvalidInput, fn, *args)
        return str(exc.code)

    def test_measurement_inputs(self) -> None:
        v = sev.verify_launch_measurement
        m = bytes(48)
        self.assertEqual("sev_measurement_size",
                         self._code(v, self.tik, bytes(47), 0, 1, 2, 0,
                                    [self.digest]))
        self.assertEqual("sev_measurement_encoding",
                         self._code(v, self.tik, "not base64!", 0, 1, 2, 0,
                                    [self.digest]))
        self.assertEqual("sev_measurement_encoding",
                         self._code(v, self.tik, 5, 0, 1, 2, 0,
                                    [self.digest]))
        self.assertEqual("sev_key_size",
                         self._code(v, bytes(15), m, 0, 1, 2, 0,
                                    [self.digest]))
        self.assertEqual("sev_platform_version",
                         self._code(v, self.tik, m, 256, 1, 2, 0,
                                    [self.digest]))
        self.assertEqual("sev_platform_version",
                         self._code(v, self.tik, m, 0, 1, -1, 0,
                                    [self.digest]))
        self.assertEqual("sev_policy",
                         self._code(v, self.tik, m, 0, 1, 2, 1 << 32,
                                    [self.digest]))
        self.assertEqual("sev_digest_size",
                         self._code(v, self.tik, m, 0, 1, 2, 0,
                                    [bytes(48)]))
        self.assertEqual("sev_no_allowed_digests",
                         self._code(v, self.tik, m, 0, 1, 2, 0, []))

    def test_secret_inputs(self) -> None:
        b = sev.build_secret_packet
        m = bytes(48)
        k = bytes(16)
        self.assertEqual("sev_secret_empty",
                         self._code(b, k, k, m, {}, 0, 24))
        self.assertEqual("sev_secret_guid",
                         self._code(b, k, k, m, {"luks": b"x"}, 0, 24))
        self.assertEqual("sev_secret_guid_duplicate",
                         self._code(b, k, k, m,
                                    {LUKS: b"x", str(LUKS): b"y"}, 0, 24))
        self.assertEqual("sev_secret_value",
                         self._code(b, k, k, m, {LUKS: "text"}, 0, 24))
        self.assertEqual("sev_secret_too_large",
                         self._code(b, k, k, m, {LUKS: bytes(4096)}, 0, 24))
        self.assertEqual("sev_api_unsupported",
                         self._code(b, k, k, m, {LUKS: b"x"}, 0, 16))
        self.assertEqual("sev_key_size",
                         self._code(b, bytes(32), k, m, {LUKS: b"x"}, 0, 24))

    def test_secret_table_layout(self) -> None:
        table = sev.build_secret_table({LUKS: b"abc"})
        self.assertEqual(sev.SECRET_TABLE_GUID.bytes_le, table[:16])
        self.assertEqual((20 + 23).to_bytes(4, "little"), table[16:20])
        self.assertEqual(LUKS.bytes_le, table[20:36])
        self.assertEqual((23).to_bytes(4, "little"), table[36:40])
        self.assertEqual(b"abc", table[40:43])
        self.assertEqual(48, len(table))
        # Already aligned tables still get a block of padding (as libvirt).
        aligned = sev.build_secret_table({LUKS: bytes(24)})
        self.assertEqual(80, len(aligned))
        self.assertEqual(bytes(16), aligned[64:])


class TestProperties(base.TestCase):

    @settings(max_examples=200, deadline=None)
    @given(st.one_of(st.binary(max_size=80), st.text(max_size=80)))
    def test_random_measurement(self, data: bytes | str) -> None:
        try:
            sev.verify_launch_measurement(bytes(16), data, 0, 24, 15, 0,
                                          [bytes(32)])
        except errors.AttestationError:
            pass

    @settings(max_examples=100, deadline=None)
    @given(st.binary(max_size=2200))
    def test_random_pdh(self, data: bytes) -> None:
        try:
            sev.create_launch_session(data, 0)
        except errors.AttestationError:
            pass

    @settings(max_examples=100, deadline=None)
    @given(st.integers(0, sev_certs.SEV_CERT_SIZE - 1), st.integers(1, 255))
    def test_pdh_mutation(self, index: int, mask: int) -> None:
        try:
            sev.create_launch_session(flip(PLATFORM.pdh, index, mask), 0)
        except errors.AttestationError:
            pass

    @settings(max_examples=100, deadline=None)
    @given(st.dictionaries(st.sampled_from(["version", "policy", "dh_cert",
                                            "session", "tek", "tik", "x"]),
                           st.one_of(st.integers(), st.text(max_size=40),
                                     st.binary(max_size=40))))
    def test_random_state(self, state: dict[str, str | int]) -> None:
        try:
            sev.LaunchSession.from_state(state)
        except errors.AttestationError:
            pass

    @settings(max_examples=100, deadline=None)
    @given(st.integers(0, 47), st.integers(1, 255))
    def test_measurement_mutation_refused(self, index: int,
                                          mask: int) -> None:
        v = VECTORS["sev_launch_measure"]
        measurement = bytes.fromhex(v["expected_measure"] + v["mnonce"])
        exc = self.assertRaises(
            errors.VerificationFailed, sev.verify_launch_measurement,
            bytes.fromhex(v["tik"]), flip(measurement, index, mask),
            v["api_major"], v["api_minor"], v["build"], v["policy"],
            [bytes.fromhex(v["ld_digest_sha256"])])
        self.assertEqual("sev_measurement_mismatch", exc.code)


class TestAgainstLibvirtTool(base.TestCase):
    """Cross-check against libvirt's independent guest-owner tool.

    tools/install-deps.sh installs it (Debian libvirt-clients-qemu with
    python3-libvirt and python3-lxml); without it these tests fail rather
    than skip, so the cross-check cannot silently stop running.
    """

    def setUp(self) -> None:
        super().setUp()
        if not (os.path.exists(TOOL) and os.path.exists(SYSTEM_PYTHON)):
            self.fail("libvirt's virt-qemu-sev-validate is not installed "
                      "(apt-get install libvirt-clients-qemu "
                      "python3-libvirt python3-lxml python3-cryptography)")
        self.dir = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.dir)

    def _file(self, name: str, data: bytes) -> str:
        path = os.path.join(self.dir, name)
        with open(path, "wb") as f:
            f.write(data)
        return path

    def _tool(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([SYSTEM_PYTHON, TOOL, *args],
                              capture_output=True, text=True, timeout=60,
                              check=False)

    def test_measurement_and_secret_match_tool(self) -> None:
        session, guest, measurement = launch()
        tek, tik = session.export_transport_keys()
        major, minor = PLATFORM.api
        common = ["--measurement", base64.b64encode(measurement).decode(),
                  "--api-major", str(major), "--api-minor", str(minor),
                  "--build-id", str(PLATFORM.build_id),
                  "--policy", str(POLICY),
                  "--tek", self._file("tek", tek),
                  "--tik", self._file("tik", tik)]
        # The tool accepts the model's measurement for the firmware ...
        ok = self._tool(*common, "--firmware",
                        self._file("fw", FIRMWARE))
        self.assertEqual(0, ok.returncode, ok.stderr)
        self.assertIn("OK", ok.stdout)
        # ... and refuses it for other firmware, as we do.
        bad = self._tool(*common, "--firmware",
                         self._file("fw2", FIRMWARE + b"x"))
        self.assertEqual(1, bad.returncode, bad.stdout + bad.stderr)
        # Secret packet: the tool's and ours agree byte for byte.
        # 20 + 35 + 41 = 96 bytes: an aligned table, so the padding rule
        # is cross-checked too.
        secrets: dict[uuid.UUID | str, bytes] = {
            LUKS: b"disk passphrase", OTHER: os.urandom(21)}
        hdr_path = os.path.join(self.dir, "hdr")
        pay_path = os.path.join(self.dir, "pay")
        res = self._tool(*common, "--firmware", self._file("fw", FIRMWARE),
                         "--inject-secret",
                         f"luks-key:{self._file('s1', secrets[LUKS])}",
                         "--inject-secret",
                         f"{OTHER}:{self._file('s2', secrets[OTHER])}",
                         "--secret-header", hdr_path,
                         "--secret-payload", pay_path)
        self.assertEqual(0, res.returncode, res.stderr)
        with open(hdr_path, "rb") as f:
            tool_header = base64.b64decode(f.read())
        with open(pay_path, "rb") as f:
            tool_payload = base64.b64decode(f.read())
        ours = sev.build_secret_packet(tek, tik, measurement, secrets,
                                       major, minor,
                                       iv=tool_header[4:20])
        self.assertEqual(tool_header, ours.header)
        self.assertEqual(tool_payload, ours.payload)
        # And the model accepts the tool's packet.
        self.assertEqual(secrets,
                         guest.launch_secret(tool_header, tool_payload))
