"""The floor arithmetic and the TDX check of barbican_tee.api.floors."""

from __future__ import annotations

import datetime
import shutil
import tempfile
from unittest import mock

from oslo_config import cfg

from barbican_tee.api import db
from barbican_tee.api import floors
from barbican_tee.attestation import snp
from barbican_tee import conf as tee_conf
from barbican_tee import migrations
from barbican_tee.plugin import keyring
from tests import base
from tests.unit.barbican_tee import test_sealed

SVN_3 = bytes([3] + [0] * 15)


class EffectiveTest(base.TestCase):

    def test_snp_field_by_field_maximum(self) -> None:
        a = snp.TcbVersion(bootloader=3, tee=0, snp=8, microcode=115)
        b = snp.TcbVersion(bootloader=2, tee=1, snp=9, microcode=100,
                           fmc=4)
        self.assertEqual(snp.TcbVersion(bootloader=3, tee=1, snp=9,
                                        microcode=115, fmc=4),
                         floors.effective(a, b))
        self.assertEqual(a, floors.effective(a, None))
        self.assertEqual(b, floors.effective(None, b))
        self.assertIsNone(floors.effective(None, None))

    def test_tdx_statuses_both_accept_and_higher_svn(self) -> None:
        a = floors.TdxFloor(("UpToDate", "SWHardeningNeeded"),
                            bytes([3, 1] + [0] * 14))
        b = floors.TdxFloor(("UpToDate", "OutOfDate"),
                            bytes([2, 5] + [0] * 14))
        self.assertEqual(floors.TdxFloor(("UpToDate",),
                                         bytes([3, 5] + [0] * 14)),
                         floors.effective(a, b))
        self.assertEqual(a, floors.effective(a, floors.TdxFloor(None,
                                                                None)))


class ScratchFloorStore(base.TestCase):
    """A floor store on a scratch database (migrated), and its config."""

    def setUp(self) -> None:
        super().setUp()
        tmp = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, tmp)
        ring = keyring.Keyring.from_files(test_sealed._kek(tmp, "k"), [])
        engine = db.make_engine(f"sqlite:///{tmp}/t.sqlite")
        self.addCleanup(engine.dispose)
        migrations.upgrade(engine)
        self.store = floors.FloorStore(engine, ring)
        self.conf = cfg.ConfigOpts()
        tee_conf.register_opts(self.conf)
        self.conf([])

    def _code(self, status: str, svn: bytes) -> str | None:
        try:
            floors.check_tdx(self.store, self.conf, status, svn)
        except floors.FloorError as exc:
            return exc.code
        return None


class TdxCheckTest(ScratchFloorStore):
    """check_tdx against a stored floor (no TDX model signs quotes)."""

    def test_statuses_and_svn(self) -> None:
        # No floor anywhere: the policy alone decides.
        self.assertIsNone(self._code("OutOfDate", bytes(16)))
        self.store.put("tdx", floors.TdxFloor(("UpToDate",), SVN_3), "adm")
        self.assertIsNone(self._code("UpToDate", SVN_3))
        self.assertEqual("tcb_below_floor",
                         self._code("SWHardeningNeeded", SVN_3))
        self.assertEqual("tcb_below_floor",
                         self._code("UpToDate", bytes([2] + [9] * 15)))
        # The config's floor narrows the statuses further. (The option
        # group is shared by every ConfigOpts that registers it: cleared.)
        self.addCleanup(self.conf.clear_override, "tcb_floor_tdx_statuses",
                        "tee_attestation")
        self.conf.set_override("tcb_floor_tdx_statuses",
                               ["SWHardeningNeeded"], "tee_attestation")
        self.assertEqual("tcb_below_floor", self._code("UpToDate", SVN_3))

    def test_a_floor_set_from_a_host_whose_clock_is_behind(self) -> None:
        # Node A (clock ahead) sets the floor; node B, two minutes behind,
        # sets it again: B's row is still the newer one for every worker
        # that saw A's, not a rollback.
        now = db.utcnow().replace(microsecond=0)
        ahead = now + datetime.timedelta(seconds=120)
        with mock.patch.object(db, "utcnow", return_value=ahead):
            self.store.put("tdx", floors.TdxFloor(("UpToDate",), SVN_3),
                           "a")
        self.assertIsNone(self._code("UpToDate", SVN_3))
        with mock.patch.object(db, "utcnow", return_value=now):
            self.store.put("tdx", floors.TdxFloor(("OutOfDate",), SVN_3),
                           "b")
        self.assertIsNone(self._code("OutOfDate", SVN_3))
        stored = self.store.get("tdx")
        assert stored is not None
        self.assertEqual(ahead, stored.updated_at)
        # A forged row's date is not followed: the next floor is dated by
        # the clock, or the newest this process saw.
        with self.store.engine.begin() as conn:
            conn.execute(db.FLOORS.update().values(
                updated_at=now.replace(year=now.year + 100)))
        with mock.patch.object(db, "utcnow", return_value=now):
            self.store.put("tdx", floors.TdxFloor(("UpToDate",), SVN_3),
                           "c")
        with self.store.engine.connect() as conn:
            [row] = conn.execute(db.FLOORS.select()).mappings().all()
        self.assertEqual(ahead, row["updated_at"])
        self.assertIsNone(self._code("UpToDate", SVN_3))

    def test_forged_row_fails_closed(self) -> None:
        self.store.put("tdx", floors.TdxFloor(("UpToDate",), SVN_3), "adm")
        with self.store.engine.begin() as conn:
            conn.execute(db.FLOORS.update().values(
                document='{"tcb_statuses": ["OutOfDate"], '
                         '"min_tee_tcb_svn": null}'))
        self.assertEqual("tcb_floor_tampered",
                         self._code("OutOfDate", bytes(16)))

    def test_deleted_or_replayed_row_fails_closed(self) -> None:
        # The administrator raises the floor; the store has seen it.
        self.store.put("tdx", floors.TdxFloor(("UpToDate",), SVN_3), "adm")
        with self.store.engine.connect() as conn:
            old = dict(conn.execute(db.FLOORS.select()).mappings().one())
        self.assertIsNone(self._code("UpToDate", SVN_3))
        newer = old["updated_at"].replace(year=old["updated_at"].year + 1)
        self._write(dict(old, updated_at=newer), resign=True)
        self.assertIsNone(self._code("UpToDate", SVN_3))
        # The older row (authentic, with its MAC) put back: refused.
        self._write(old, resign=False)
        self.assertEqual("tcb_floor_tampered",
                         self._code("OutOfDate", bytes(16)))
        # The row deleted: refused, not "no floor".
        with self.store.engine.begin() as conn:
            conn.execute(db.FLOORS.delete())
        self.assertEqual("tcb_floor_tampered",
                         self._code("OutOfDate", bytes(16)))
        # So does another store of this process on the same database (the
        # other filter of the pipeline).
        self.store = floors.FloorStore(self.store.engine, self.store.keyring)
        self.assertEqual("tcb_floor_tampered",
                         self._code("OutOfDate", bytes(16)))
        # Control: a process that never saw a row has no floor.
        floors._SEEN.clear()  # noqa: SLF001
        self.store = floors.FloorStore(self.store.engine, self.store.keyring)
        self.assertIsNone(self._code("OutOfDate", bytes(16)))

    def _write(self, row: dict, resign: bool) -> None:
        row = dict(row)
        if resign:
            # What a later PUT writes: a newer row with its own MAC.
            kid = self.store.keyring.current.kid
            row["mac_kek"] = kid
            row["mac"] = self.store.keyring.mac(
                kid, floors._mac_input(row)).hex()
        with self.store.engine.begin() as conn:
            conn.execute(db.FLOORS.delete())
            conn.execute(db.FLOORS.insert().values(**row))


class PrefetchedFloorTest(ScratchFloorStore):
    """A floor row read ahead by the release's admission (db.Read)."""

    def _prefetched(self, rows: list) -> object:
        read = self.store.read("tdx")
        return db.using_prefetched({read.key: (read, rows)})

    def test_the_prefetched_row_is_checked_like_a_read_one(self) -> None:
        self.store.put("tdx", floors.TdxFloor(("UpToDate",), SVN_3), "adm")
        with self.store.engine.connect() as conn:
            row = dict(conn.execute(db.FLOORS.select()).mappings().one())
        # Served from the admission's answer: the database is not asked.
        with self.store.engine.begin() as conn:
            conn.execute(db.FLOORS.delete())
        with self._prefetched([row]):
            self.assertEqual("tcb_below_floor",
                             self._code("UpToDate", bytes(16)))
        # A forged row served so fails closed as one read would.
        forged = dict(row, document='{"tcb_statuses": ["OutOfDate"], '
                                    '"min_tee_tcb_svn": null}')
        with self._prefetched([forged]):
            self.assertEqual("tcb_floor_tampered",
                             self._code("OutOfDate", bytes(16)))

    def test_an_answer_serves_once_and_only_its_query(self) -> None:
        self.store.put("tdx", floors.TdxFloor(("UpToDate",), SVN_3), "adm")
        self.assertIsNone(self._code("UpToDate", SVN_3))
        with self._prefetched([]):
            # No row (as the admission saw it) for the first read only;
            # this process has read the row written above: a row gone is
            # tampering, never "no floor".
            self.assertEqual("tcb_floor_tampered",
                             self._code("UpToDate", SVN_3))
            # The second read goes to the database, which has the row.
            self.assertIsNone(self._code("UpToDate", SVN_3))
            self.assertEqual("tcb_below_floor",
                             self._code("UpToDate", bytes(16)))
        # Another product's answer is not this one's.
        milan = self.store.read("milan")
        with db.using_prefetched({milan.key: (milan, [])}):
            self.assertIsNone(self._code("UpToDate", SVN_3))
