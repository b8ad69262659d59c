"""Sealing, KEK rotation and row MACs of the sealed store."""

from __future__ import annotations

import os
import tempfile

from barbican_tee.api import db
from barbican_tee.plugin import keyring
from barbican_tee.plugin import store
from tests import base


def _kek(tmp: str, name: str) -> str:
    path = os.path.join(tmp, name)
    keyring.write_key_file(path)
    return path


class SealTest(base.TestCase):

    def setUp(self) -> None:
        super().setUp()
        self.tmp = tempfile.mkdtemp()
        self.old = _kek(self.tmp, "old")
        self.new = _kek(self.tmp, "new")

    def test_round_trip_and_chunking(self) -> None:
        ring = keyring.Keyring.from_files(self.old, [])
        for size in (0, 1, 32, 1000):
            secret = os.urandom(size)
            meta = store.seal(ring, secret, "opaque")
            self.assertTrue(all(len(v) <= 255 for v in meta.values()))
            if size >= 16:  # shorter hex can occur by chance
                self.assertNotIn(secret.hex(), str(meta))
            self.assertEqual(secret, store.unseal(ring, meta))

    def test_records_cannot_be_swapped_or_edited(self) -> None:
        ring = keyring.Keyring.from_files(self.old, [])
        a = store.seal(ring, b"A" * 32, "symmetric")
        b = store.seal(ring, b"B" * 32, "symmetric")
        swapped = dict(a, tee_ct_0=b["tee_ct_0"])
        for bad in (swapped, dict(a, tee_type="opaque"),
                    dict(a, tee_record=b["tee_record"]),
                    {k: v for k, v in a.items() if k != "tee_ct_0"}):
            with self.assertRaises(store.SealedSecretError) as ctx:
                store.unseal(ring, bad)
            self.assertEqual("sealed_record_corrupt", ctx.exception.code)

    def test_rotation_keeps_every_secret(self) -> None:
        before = keyring.Keyring.from_files(self.old, [])
        metas = [store.seal(before, os.urandom(32), "symmetric")
                 for _ in range(5)]
        plain = [store.unseal(before, m) for m in metas]
        after = keyring.Keyring.from_files(self.new, [self.old])
        self.assertEqual(plain, [store.unseal(after, m) for m in metas])
        resealed = [store.reseal(after, m) for m in metas]
        self.assertTrue(all(r is not None for r in resealed))
        only_new = keyring.Keyring.from_files(self.new, [])
        self.assertEqual(plain, [store.unseal(only_new, r)
                                 for r in resealed if r])
        self.assertIsNone(store.reseal(after, resealed[0]))
        with self.assertRaises(store.SealedSecretError) as ctx:
            store.unseal(only_new, metas[0])
        self.assertEqual("sealed_kek_unknown", ctx.exception.code)

    def test_bad_kek_files_are_clear(self) -> None:
        bad = os.path.join(self.tmp, "bad")
        with open(bad, "w") as f:
            f.write("c2hvcnQ=\n")
        cases = [(None, "kek_file is not set"),
                 ("/nonexistent", "cannot read the KEK file"),
                 (bad, "is 5 bytes, not 32")]
        for path, text in cases:
            with self.subTest(path=path):
                with self.assertRaises(keyring.KeyringError) as ctx:
                    keyring.Keyring.from_files(path, [])
                self.assertIn(text, str(ctx.exception))
        self.assertRaises(FileExistsError, keyring.write_key_file, self.old)


class RowMacTest(base.TestCase):

    def test_tampered_rows_fail(self) -> None:
        tmp = tempfile.mkdtemp()
        ring = keyring.Keyring.from_files(_kek(tmp, "k"), [])
        st = db.Store(db.make_engine(f"sqlite:///{tmp}/t.sqlite"), ring)
        st.create_policy("p1", "proj", {"tee": "amd-sev-snp"})
        st.bind("s1", "p1", "proj")
        row = st.get_policy("p1")
        self.assertTrue(st.policy_intact(row))
        self.assertFalse(st.policy_intact(dict(
            row, document='{"tee": "amd-sev-snp", "measurements": []}')))
        binding = st.get_binding("s1")
        self.assertTrue(st.binding_intact(binding))
        self.assertFalse(st.binding_intact(dict(binding, policy_id="p2")))
        self.assertFalse(st.binding_intact(dict(binding, project_id="x")))

    def test_spent_nonce_is_spent_once_and_pruned_after_expiry(
            self) -> None:
        tmp = tempfile.mkdtemp()
        ring = keyring.Keyring.from_files(_kek(tmp, "k"), [])
        st = db.Store(db.make_engine(f"sqlite:///{tmp}/t.sqlite"), ring)
        self.assertTrue(st.spend_nonce("a" * 64, 1000, 0))
        self.assertFalse(st.spend_nonce("a" * 64, 1000, 0))
        self.assertTrue(st.spend_nonce("b" * 64, 5000, 0))
        # Spending another prunes the rows that expired before the cutoff
        # (only those): "a" can be recorded again, "b" cannot.
        self.assertTrue(st.spend_nonce("c" * 64, 5000, 2000))
        self.assertTrue(st.spend_nonce("a" * 64, 1000, 0))
        self.assertFalse(st.spend_nonce("b" * 64, 5000, 0))
        with st.engine.connect() as conn:
            rows = conn.execute(db.SPENT_NONCES.select()).all()
        self.assertEqual(3, len(rows))

    def test_rate_limit(self) -> None:
        tmp = tempfile.mkdtemp()
        ring = keyring.Keyring.from_files(_kek(tmp, "k"), [])
        st = db.Store(db.make_engine(f"sqlite:///{tmp}/t.sqlite"), ring)
        self.assertEqual([True] * 3 + [False],
                         [st.hit("b", 1, 3) for _ in range(4)])
        self.assertTrue(st.hit("b", 2, 3))


class RemacTest(base.TestCase):

    def test_rows_move_to_the_new_kek_and_tampered_rows_do_not(self) -> None:
        tmp = tempfile.mkdtemp()
        old, new = _kek(tmp, "old"), _kek(tmp, "new")
        url = f"sqlite:///{tmp}/t.sqlite"
        st = db.Store(db.make_engine(url),
                      keyring.Keyring.from_files(old, []))
        st.create_policy("p1", "proj", {"tee": "amd-sev-snp"})
        st.create_policy("p2", "proj", {"tee": "amd-sev-snp"})
        st.bind("s1", "p1", "proj")
        with st.engine.begin() as conn:
            conn.execute(db.POLICIES.update().where(
                db.POLICIES.c.id == "p2").values(document="{}"))
        rotated = db.Store(db.make_engine(url),
                           keyring.Keyring.from_files(new, [old]))
        self.assertEqual((2, 1), rotated.remac_rows())
        retired = db.Store(db.make_engine(url),
                           keyring.Keyring.from_files(new, []))
        self.assertTrue(retired.policy_intact(retired.get_policy("p1")))
        self.assertTrue(retired.binding_intact(retired.get_binding("s1")))
        self.assertFalse(retired.policy_intact(retired.get_policy("p2")))
