"""TEEFilter's floor cache and check (nova_tee.scheduler.floors)."""

from __future__ import annotations

import threading

from oslo_config import fixture as cfg_fixture

from nova_tee import conf as tee_conf
from nova_tee.scheduler import floors
from tests import base

MILAN_9 = {"milan": (3, 0, 9, 115, 0)}


def _views(snp: int = 9) -> list[dict[str, object]]:
    return [{"product": "milan", "effective": {
                "bootloader": 3, "tee": 0, "snp": snp, "microcode": 115}},
            {"product": "genoa", "effective": None},
            {"product": "turin", "effective": {
                "bootloader": 1, "tee": 0, "snp": 1, "microcode": 1,
                "fmc": 2}},
            {"product": "tdx", "effective": None}]


class FloorCacheTest(base.TestCase):

    def setUp(self) -> None:
        super().setUp()
        conf = self.useFixture(cfg_fixture.Config(floors.CONF)).conf
        tee_conf.register_opts(conf)
        conf.set_override("floor_cache_ttl", 60, "tee")
        self.now = 0.0
        self.answers: list[object] = []

    def _read(self) -> floors.Floors:
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        assert isinstance(answer, dict)
        return answer

    def test_stale_floor_stays_in_force_while_barbican_fails(self) -> None:
        cache = floors.FloorCache(self._read, clock=lambda: self.now)
        self.answers = [MILAN_9, floors.FloorReadError("down"),
                        floors.FloorReadError("down"), {}]
        self.assertEqual(MILAN_9, cache.current())
        self.now = 30.0  # within the TTL: not read again
        self.assertEqual(MILAN_9, cache.current())
        self.now = 61.0
        self.assertEqual(MILAN_9, cache.current())
        self.now = 10_000.0
        self.assertEqual(MILAN_9, cache.current())
        self.now = 20_000.0  # Barbican back: what it says now
        self.assertEqual({}, cache.current())
        self.assertEqual([], self.answers)

    def test_never_read_is_none(self) -> None:
        cache = floors.FloorCache(self._read, clock=lambda: self.now)
        self.answers = [floors.FloorReadError("down")]
        self.assertIsNone(cache.current())
        self.assertIn("could ever be read",
                      floors.refusal(None, "milan", (9, 9, 9, 255)) or "")

    def test_first_requests_wait_for_the_first_read(self) -> None:
        # Requests that arrive while the very first read is under way
        # wait for it instead of refusing every host.
        started, release = threading.Event(), threading.Event()

        def slow_read() -> floors.Floors:
            started.set()
            release.wait(10)
            return MILAN_9

        cache = floors.FloorCache(slow_read, clock=lambda: self.now)
        first: list[object] = []
        reader = threading.Thread(target=lambda: first.append(
            cache.current()))
        reader.start()
        self.assertTrue(started.wait(10))
        waiter: list[object] = []
        other = threading.Thread(target=lambda: waiter.append(
            cache.current()))
        other.start()
        other.join(0.2)
        self.assertTrue(other.is_alive())  # waiting, not refused
        release.set()
        reader.join(10)
        other.join(10)
        self.assertEqual([MILAN_9], first)
        self.assertEqual([MILAN_9], waiter)

    def test_parse_and_refusal(self) -> None:
        parsed = floors.parse(_views())
        self.assertEqual({"milan": (3, 0, 9, 115, 0),
                          "turin": (1, 0, 1, 1, 2)}, parsed)
        self.assertRaises(floors.FloorReadError, floors.parse, _views()[:2])
        self.assertIsNone(floors.refusal(parsed, "milan", (3, 0, 9, 115)))
        self.assertIn("snp", floors.refusal(parsed, "milan",
                                            (3, 0, 8, 115)) or "")
        self.assertIsNone(floors.refusal(parsed, "genoa", (0, 0, 0, 0)))
        self.assertIn("fmc", floors.refusal(parsed, "turin",
                                            (1, 0, 1, 1, 1)) or "")
        # A compute that predates tee.snp_product (rolling upgrade): not
        # held at placement (Barbican holds its reports at release).
        self.assertIsNone(floors.refusal(parsed, None, (3, 0, 8, 115)))
        # A product the floors do not name is not "no floor".
        self.assertIn("do not know",
                      floors.refusal(parsed, "Milan", (9, 9, 99, 255)) or "")
        # Never read: refused whatever the host says.
        self.assertIsNotNone(floors.refusal(None, None, (3, 0, 9, 115)))

    def test_error_entry_refuses_that_product_only(self) -> None:
        # Barbican answers a product whose stored floor does not
        # authenticate with an error entry: never "no floor" for it.
        views = _views()
        views[1] = {"product": "genoa", "error": {
            "code": "tcb_floor_tampered", "message": "..."},
            "effective": {"error": "tcb_floor_tampered"}}
        parsed = floors.parse(views)
        self.assertIn("genoa", floors.refusal(parsed, "genoa",
                                              (255, 255, 255, 255)) or "")
        # The other products keep their floors.
        self.assertIsNone(floors.refusal(parsed, "milan", (3, 0, 9, 115)))
        self.assertIn("snp", floors.refusal(parsed, "milan",
                                            (3, 0, 8, 115)) or "")
        # Positive control: the same answer without the error entry.
        self.assertIsNone(floors.refusal(floors.parse(_views()), "genoa",
                                         (255, 255, 255, 255)))
        # Without the marker "effective" (a client must look at "error").
        del views[1]["effective"]
        self.assertIn("genoa", floors.refusal(floors.parse(views), "genoa",
                                              (255, 255, 255, 255)) or "")
        # A TEEFilter of the previous release looks at "effective" only:
        # the marker is no floor, so its read fails (closed), as the
        # previous release's 409 did.
        views[1] = {"product": "genoa",
                    "effective": {"error": "tcb_floor_tampered"}}
        self.assertRaises(floors.FloorReadError, floors.parse, views)
