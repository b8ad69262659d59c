"""Sealing, KEK rotation and row MACs of the sealed store."""

from __future__ import annotations

import os
import tempfile

import sqlalchemy as sa

from barbican_tee.api import db
from barbican_tee import migrations
from barbican_tee.plugin import keyring
from barbican_tee.plugin import store
from tests import base


def _migrated(url: str) -> sa.Engine:
    """An engine on a new database the migrations brought to head."""
    engine = db.make_engine(url)
    migrations.upgrade(engine)
    return engine


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

    SECRET = "6b1f5c0e-1d2a-4c8e-9f3b-2a7d4e6c8b10"
    OTHER = "0c9e7a5b-3f1d-4b2a-8e6c-1d3f5a7b9c20"

    def test_round_trip_and_chunking(self) -> None:
        ring = keyring.Keyring.from_files(self.old, [])
        for size in (0, 1, 32, 1000):
            secret = os.urandom(size)
            meta = store.seal_secret(ring, secret, "opaque", self.SECRET,
                                     "proj")
            self.assertTrue(all(len(v) <= 255 for v in meta.values()))
            if size >= 16:  # shorter hex can occur by chance
                self.assertNotIn(secret.hex(), str(meta))
            plain, record = store.open_secret(ring, meta, self.SECRET)
            self.assertEqual(secret, plain)
            self.assertEqual(("proj", store.Binding()),
                             (record.project_id, record.binding))
        blob = store.seal(ring, b"state", "sev-session:x")
        self.assertEqual(b"state", store.unseal(ring, blob,
                                                "sev-session:x"))
        self.assertRaises(store.SealedSecretError, store.unseal, ring, blob,
                          "sev-session:y")

    def _codes(self, ring: keyring.Keyring, meta: dict[str, str],
               secret_id: str) -> str:
        with self.assertRaises(store.SealedSecretError) as ctx:
            store.open_secret(ring, meta, secret_id)
        return ctx.exception.code

    def test_records_are_bound_to_their_secret(self) -> None:
        ring = keyring.Keyring.from_files(self.old, [])
        a = store.seal_secret(ring, b"A" * 32, "symmetric", self.SECRET,
                              "proj")
        b = store.seal_secret(ring, b"B" * 32, "symmetric", self.OTHER,
                              "proj")
        # Moved whole onto another secret, with or without its id row.
        self.assertEqual("sealed_record_moved",
                         self._codes(ring, a, self.OTHER))
        self.assertEqual("sealed_record_corrupt", self._codes(
            ring, dict(a, tee_secret=self.OTHER), self.OTHER))
        # Any one row edited, swapped or missing.
        for bad in (dict(a, tee_ct_0=b["tee_ct_0"]),
                    dict(a, tee_type="opaque"),
                    dict(a, tee_project="other"),
                    dict(a, tee_record=b["tee_record"]),
                    dict(a, tee_gen="7"),
                    dict(a, tee_instance=self.OTHER),
                    {k: v for k, v in a.items() if k != "tee_ct_0"},
                    {k: v for k, v in a.items() if k != "tee_instance"}):
            self.assertEqual("sealed_record_corrupt",
                             self._codes(ring, bad, self.SECRET))
        # A record of an earlier release is refused until rewrap binds it.
        old = store.seal(ring, b"A" * 32, "symmetric")
        self.assertEqual("sealed_record_unbound",
                         self._codes(ring, old, self.SECRET))

    def test_rebinding_outdates_every_older_row(self) -> None:
        ring = keyring.Keyring.from_files(self.old, [])
        v0 = store.seal_secret(ring, b"K" * 32, "symmetric", self.SECRET,
                               "proj")
        v1, rec1 = store.rebind(ring, v0, self.SECRET, policy_id="lax",
                                policy_pin="aa" * 32)
        v2, rec2 = store.rebind(ring, v1, self.SECRET, policy_id="strict",
                                policy_pin="bb" * 32)
        self.assertEqual((1, 2), (rec1.binding.generation,
                                  rec2.binding.generation))
        self.assertEqual(rec2, store.open_secret(ring, v2, self.SECRET)[1])
        # Any single row of the older record written back: refused.
        for key in v1:
            if v1[key] != v2[key]:
                self.assertEqual("sealed_record_corrupt", self._codes(
                    ring, dict(v2, **{key: v1[key]}), self.SECRET), key)

    def test_rotation_keeps_every_secret(self) -> None:
        before = keyring.Keyring.from_files(self.old, [])
        metas = [store.seal_secret(before, os.urandom(32), "symmetric",
                                   self.SECRET, "proj") for _ in range(5)]
        plain = [store.open_secret(before, m, self.SECRET)[0] for m in metas]
        after = keyring.Keyring.from_files(self.new, [self.old])
        self.assertEqual(plain, [store.open_secret(after, m, self.SECRET)[0]
                                 for m in metas])
        resealed = [store.reseal(after, m, self.SECRET) for m in metas]
        self.assertTrue(all(r is not None for r in resealed))
        only_new = keyring.Keyring.from_files(self.new, [])
        self.assertEqual(plain, [store.open_secret(only_new, r,
                                                   self.SECRET)[0]
                                 for r in resealed if r])
        self.assertIsNone(store.reseal(after, resealed[0] or {},
                                       self.SECRET))
        self.assertEqual("sealed_kek_unknown",
                         self._codes(only_new, metas[0], self.SECRET))

    def test_bad_kek_files_are_clear(self) -> None:
        bad = os.path.join(self.tmp, "bad")
        with open(bad, "w") as f:
            f.write("c2hvcnQ=\n")
        os.chmod(bad, 0o600)
        # A good key any local user can read: refused before it is read.
        shared = _kek(self.tmp, "shared")
        os.chmod(shared, 0o644)
        cases = [(None, "kek_file is not set"),
                 ("/nonexistent", "cannot read the KEK file"),
                 (bad, "is 5 bytes, not 32"),
                 (shared, "accessible to every local user (mode 0644)")]
        for path, text in cases:
            with self.subTest(path=path):
                with self.assertRaises(keyring.KeyringError) as ctx:
                    keyring.Keyring.from_files(path, [])
                self.assertIn(text, str(ctx.exception))
        self.assertRaises(FileExistsError, keyring.write_key_file, self.old)
        # Its owner and group only (root:barbican 0640): accepted.
        os.chmod(shared, 0o640)
        self.assertEqual(32, len(keyring.load_key_file(shared).material))


class RowMacTest(base.TestCase):

    def test_tampered_rows_fail(self) -> None:
        tmp = tempfile.mkdtemp()
        ring = keyring.Keyring.from_files(_kek(tmp, "k"), [])
        st = db.Store(_migrated(f"sqlite:///{tmp}/t.sqlite"), ring)
        st.create_policy("p1", "proj", {"tee": "amd-sev-snp"})
        row = st.get_policy("p1")
        self.assertTrue(st.policy_intact(row))
        tampered = dict(
            row, document='{"tee": "amd-sev-snp", "measurements": []}')
        self.assertFalse(st.policy_intact(tampered))
        # The pin a sealed record keeps changes with any of its content.
        self.assertNotEqual(db.policy_pin(row), db.policy_pin(tampered))
        self.assertNotEqual(db.policy_pin(row), db.policy_pin(
            dict(row, project_id="other")))

    def test_spent_nonce_is_spent_once_and_pruned_after_expiry(
            self) -> None:
        tmp = tempfile.mkdtemp()
        ring = keyring.Keyring.from_files(_kek(tmp, "k"), [])
        st = db.Store(_migrated(f"sqlite:///{tmp}/t.sqlite"), ring)
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
        st = db.Store(_migrated(f"sqlite:///{tmp}/t.sqlite"), ring)
        self.assertEqual([True] * 3 + [False],
                         [st.hit("b", 1, 3) for _ in range(4)])
        self.assertTrue(st.hit("b", 2, 3))


class RemacTest(base.TestCase):

    def test_rows_move_to_the_new_kek_and_tampered_rows_do_not(self) -> None:
        tmp = tempfile.mkdtemp()
        old, new = _kek(tmp, "old"), _kek(tmp, "new")
        url = f"sqlite:///{tmp}/t.sqlite"
        st = db.Store(_migrated(url), keyring.Keyring.from_files(old, []))
        st.create_policy("p1", "proj", {"tee": "amd-sev-snp"})
        st.create_policy("p2", "proj", {"tee": "amd-sev-snp"})
        with st.engine.begin() as conn:
            conn.execute(db.POLICIES.update().where(
                db.POLICIES.c.id == "p2").values(document="{}"))
        rotated = db.Store(db.make_engine(url),
                           keyring.Keyring.from_files(new, [old]))
        self.assertEqual((1, 1), rotated.remac_rows())
        retired = db.Store(db.make_engine(url),
                           keyring.Keyring.from_files(new, []))
        self.assertTrue(retired.policy_intact(retired.get_policy("p1")))
        self.assertFalse(retired.policy_intact(retired.get_policy("p2")))
