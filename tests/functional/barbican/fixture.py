"""A real barbican-api (Barbican 23.0.0) under gunicorn, for tests."""

from __future__ import annotations

from collections.abc import Mapping
from collections.abc import Sequence
import shutil
import signal
import tempfile

import fixtures

from barbican_tee import server


class BarbicanServer(fixtures.Fixture):
    """gunicorn + barbican-api on sqlite in a temporary directory.

    ``paste_filters`` is the /v1 pipeline (default: the full one, with the
    ``tee_api`` filter); ``stores`` the secret store backends (default:
    store_crypto + simple_crypto, and tee_sealed); ``extra_conf`` extra
    ``barbican.conf`` options, ``{section: {option: value}}``. With
    ``preflight`` (the default) the app is built once before gunicorn
    starts; without, a failure shows up as gunicorn exiting.

    Startup failures raise :class:`barbican_tee.server.ServerError` (the
    plugin check's :class:`~barbican_tee.server.PluginLoadError` message
    included) from ``setUp``.
    """

    def __init__(self, workers: int = 2,
                 extra_conf: Mapping[str, Mapping[str, str]] | None = None,
                 paste_filters: Sequence[str] = server.DEFAULT_PIPELINE,
                 stores: Sequence[server.Store] = server.DEFAULT_STORES,
                 trust_root: str | None = None,
                 preflight: bool = True) -> None:
        super().__init__()
        self.workers = workers
        self.extra_conf = extra_conf
        self.paste_filters = tuple(paste_filters)
        self.stores = tuple(stores)
        self.trust_root = trust_root
        self.preflight = preflight
        self.server: server.Server | None = None

    def setUp(self) -> None:
        # fixtures wraps a failing _setUp in MultipleExceptions (with a
        # SetupError): give callers the ServerError and its message.
        try:
            super().setUp()
        except fixtures.MultipleExceptions as exc:
            first = exc.args[0][1]
            if isinstance(first, server.ServerError):
                raise first from None
            raise

    def _setUp(self) -> None:
        self.data_dir = tempfile.mkdtemp(prefix="openstack-tee-barbican-")
        self.addCleanup(shutil.rmtree, self.data_dir, ignore_errors=True)
        self.port = server.free_port()
        self.layout = server.prepare(
            self.data_dir, self.port, stores=self.stores,
            pipeline=self.paste_filters, trust_root=self.trust_root,
            extra_conf=self.extra_conf, check=self.preflight)
        self.server = server.Server(self.layout, self.port, self.workers)
        self.addCleanup(self.server.stop)
        self.server.start()

    @property
    def _srv(self) -> server.Server:
        assert self.server is not None, "BarbicanServer is not set up"
        return self.server

    @property
    def url(self) -> str:
        return self._srv.url

    @property
    def pid(self) -> int | None:
        return self._srv.pid

    @property
    def conf_path(self) -> str:
        return self.layout.conf_path

    @property
    def log_path(self) -> str:
        return self.layout.log_path

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """``sig`` to gunicorn's master and workers (our process group)."""
        self._srv.kill(sig)

    def restart(self) -> None:
        """Stop (if still running) and start again on the same port."""
        self._srv.stop()
        self._srv.start()

    def headers(self, project: str, roles: str = "member",
                user: str = "user") -> dict[str, str]:
        """The headers that stand for a token (no Keystone here)."""
        return {"X-Project-Id": project, "X-Roles": roles,
                "X-User-Id": user}
