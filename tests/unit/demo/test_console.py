"""The demo's verdict bookkeeping: exit 0 only if every verdict held."""

from __future__ import annotations

import io

from openstack_tee_demo import demo
from tests import base


class ConsoleTest(base.TestCase):

    def _console(self) -> tuple[demo.Console, io.StringIO]:
        out = io.StringIO()
        return demo.Console(out), out

    def test_all_expected(self) -> None:
        console, out = self._console()
        console.verdict("a", "granted", "granted", 0.01)
        console.verdict("b", "denied (x)", "denied (x)", 0.02)
        self.assertTrue(console.summary(2))
        self.assertIn("2/2 expected verdicts", out.getvalue())

    def test_an_unexpected_verdict_fails(self) -> None:
        console, out = self._console()
        console.verdict("a", "denied (x)", "granted", 0.01)
        console.verdict("b", "granted", "granted", 0.01)
        self.assertFalse(console.summary(2))
        self.assertIn("[FAIL] a: granted (expected denied (x))",
                      out.getvalue())
        self.assertIn("1/2 expected verdicts", out.getvalue())

    def test_a_verdict_never_reached_fails(self) -> None:
        console, out = self._console()
        console.verdict("a", "granted", "granted", 0.01)
        self.assertFalse(console.summary(2))
        self.assertIn("1 never reached", out.getvalue())

    def test_a_failed_step_is_shown_and_raised(self) -> None:
        console, out = self._console()

        def boom() -> None:
            with console.step("starting"):
                raise RuntimeError("no")

        self.assertRaises(RuntimeError, boom)
        self.assertIn("... starting  FAILED", out.getvalue())
