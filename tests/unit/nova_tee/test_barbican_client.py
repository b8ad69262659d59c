"""Nova's one client builder for Barbican (nova_tee.barbican).

nova-compute (attest.client) and nova-scheduler (floors.client) share the
keystoneauth plugin of the process; the scheduler's floor read has its own
short timeout, which also bounds the token request. The slow services are
real sockets that accept a connection and never answer.
"""

from __future__ import annotations

import socket
import threading
import time

from oslo_config import fixture as cfg_fixture

from nova_tee import barbican
from nova_tee import conf as tee_conf
from nova_tee.scheduler import floors
from nova_tee.virt.libvirt import attest
from tests import base


class _Silent:
    """A TCP server on 127.0.0.1 that accepts and never answers."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.held: list[socket.socket] = []
        self.accepted = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.held.append(conn)
            self.accepted.set()

    def close(self) -> None:
        self.sock.close()
        for conn in self.held:
            conn.close()


class ClientBuilderTest(base.TestCase):

    def setUp(self) -> None:
        super().setUp()
        self.conf = self.useFixture(cfg_fixture.Config(barbican.CONF)).conf
        tee_conf.register_opts(self.conf)
        self.conf.set_override("barbican_url", "http://127.0.0.1:9/",
                               "tee")
        self.addCleanup(barbican._auth.clear)
        self.addCleanup(barbican._sessions.clear)

    def _keystone(self, auth_url: str = "http://127.0.0.1:9/identity"
                  ) -> None:
        self.conf.set_override("auth_type", "password", "tee_barbican")
        # The password plugin's options exist once it is loaded.
        from keystoneauth1 import loading as ks_loading

        self.conf.register_opts(
            ks_loading.get_auth_plugin_conf_options("password"),
            group="tee_barbican")
        for name, value in (("auth_url", auth_url), ("username", "nova"),
                            ("password", "pw"), ("project_name", "service"),
                            ("user_domain_name", "Default"),
                            ("project_domain_name", "Default")):
            self.conf.set_override(name, value, "tee_barbican")

    def test_compute_and_scheduler_share_the_auth_per_process(self) -> None:
        self._keystone()
        compute = attest.client()
        scheduler = floors.client()
        # One auth plugin (so one token) for the process, whichever
        # service asks; a session per timeout, kept across reads.
        self.assertIs(compute.session.auth, scheduler.session.auth)
        self.assertIs(scheduler.session, floors.client().session)
        self.assertIs(compute.session, attest.client().session)
        # Each with its own bound: the scheduler's is short.
        self.assertEqual(30.0, compute.timeout)
        self.assertEqual(5.0, scheduler.timeout)
        self.assertEqual(5.0, scheduler.session.timeout)
        self.assertEqual(30.0, compute.session.timeout)
        # Another configuration (a test's, a reload) loads them again.
        auth = scheduler.session.auth
        self.conf.set_override("username", "nova2", "tee_barbican")
        self.assertIsNot(auth, floors.client().session.auth)
        # [tee_barbican] timeout may shorten a bound, never lengthen it.
        self.conf.set_override("timeout", 2, "tee_barbican")
        self.assertEqual(2.0, floors.client().session.timeout)
        self.conf.set_override("timeout", 60, "tee_barbican")
        self.assertEqual(5.0, floors.client().session.timeout)

    def test_noauth_labels_the_service(self) -> None:
        self.conf.set_override("barbican_noauth_project", "nova-service",
                               "tee")
        self.assertEqual("nova-compute",
                         attest.client().headers["X-User-Id"])
        self.assertEqual("nova-scheduler",
                         floors.client().headers["X-User-Id"])
        self.assertIsNone(floors.client().session)

    def _timed_fetch(self) -> tuple[float, BaseException | None]:
        """floors.fetch() in a thread; (seconds, what it raised)."""
        out: list[BaseException | None] = []

        def run() -> None:
            try:
                floors.fetch()
            except BaseException as exc:  # noqa: BLE001 - reported
                out.append(exc)
            else:
                out.append(None)

        start = time.monotonic()
        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        thread.join(20)
        self.assertFalse(thread.is_alive(), "the floor read did not end")
        return time.monotonic() - start, out[0]

    def test_a_silent_barbican_is_bounded_by_floor_read_timeout(
            self) -> None:
        silent = _Silent()
        self.addCleanup(silent.close)
        self.conf.set_override("barbican_url", silent.url, "tee")
        self.conf.set_override("barbican_noauth_project", "nova-service",
                               "tee")
        self.conf.set_override("floor_read_timeout", 0.5, "tee")
        took, exc = self._timed_fetch()
        self.assertTrue(silent.accepted.is_set())
        # Failed closed (no floors), within the bound, not after
        # [tee] attestation_timeout (30 s).
        self.assertIsInstance(exc, floors.FloorReadError)
        self.assertIn("network_error", str(exc))
        self.assertLess(took, 5)

    def test_a_silent_keystone_is_bounded_too(self) -> None:
        silent = _Silent()
        self.addCleanup(silent.close)
        self._keystone(auth_url=silent.url + "/identity")
        self.conf.set_override("floor_read_timeout", 0.5, "tee")
        took, exc = self._timed_fetch()
        self.assertTrue(silent.accepted.is_set())
        self.assertIsNotNone(exc)
        self.assertLess(took, 5)
