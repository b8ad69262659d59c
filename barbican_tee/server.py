"""A local barbican-api (Barbican 23.0.0's own app) on sqlite, under gunicorn.

Used by ``openstack-tee serve``, the functional tests and the demo. It
writes ``barbican.conf`` and a paste file into a data directory, creates
the keys the stores need, upgrades the database with ``barbican-manage``,
checks once in a separate process that the app and every configured store
plugin load (:func:`preflight`), and runs gunicorn (gevent workers) on
127.0.0.1 with :mod:`barbican_tee.wsgi` as the application.

Barbican 23.0.0 logs a store or crypto plugin whose module or constructor
fails and carries on with the others, so a server could come up storing
new secrets somewhere else than configured. :func:`strict_plugin_loading`
and :func:`check_plugins_loaded` (called by :mod:`barbican_tee.wsgi`) turn
that into a :class:`PluginLoadError` that stops the worker, hence gunicorn.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from collections.abc import Iterator
from collections.abc import Mapping
from collections.abc import Sequence
import configparser
import contextlib
import dataclasses
import http.client
import importlib.metadata
import importlib.resources
import io
import os
import re
import signal
import socket
import subprocess
import sys
import time
from typing import Any

ENV_PASTE = "OPENSTACK_TEE_PASTE"
ENV_CONF = "OPENSTACK_TEE_CONF"

HOST = "127.0.0.1"
CONF_NAME = "barbican.conf"
PASTE_NAME = "barbican-api-paste.ini"
DB_NAME = "barbican.sqlite"
LOG_NAME = "barbican-api.log"
TEE_KEK_NAME = "tee-kek"
SIMPLE_KEK_NAME = "simple-crypto-kek"

# wsgi.py writes this line to stderr once a worker's app is built and
# checked; the readiness check counts it.
READY_MARKER = "openstack-tee: barbican-api worker ready"

STORE_NAMESPACE = "barbican.secretstore.plugin"
CRYPTO_NAMESPACE = "barbican.crypto.plugin"

# tee_public (challenge, release) sits before the context middleware, which
# would refuse their token-less requests, and in front of cors, request_id
# and http_proxy_to_wsgi, which they do without; tee_api (policies,
# bindings, SEV sessions, the sealed payload check) after it; tee_peer
# keeps the connection's address before http_proxy_to_wsgi may rewrite
# REMOTE_ADDR, and before tee_public counts the client by it.
DEFAULT_PIPELINE: tuple[str, ...] = (
    "tee_peer", "tee_public", "cors", "request_id", "http_proxy_to_wsgi",
    "tee_request_id", "unauthenticated-context", "tee_api", "microversion",
    "apiapp")
PIPELINE_WITHOUT_TEE_API: tuple[str, ...] = tuple(
    f for f in DEFAULT_PIPELINE if f not in ("tee_api", "tee_public"))

_PIPELINE_SECTION = "[pipeline:barbican_tee_api]"

# The headers a client sends instead of a Keystone token. There are no
# implied roles without Keystone: admin does not give member or reader.
CLIENT_HEADERS = {"X-Project-Id": "<project id>",
                  "X-User-Id": "<user id>",
                  "X-Roles": "member,reader  (comma-separated; no implied "
                             "roles: list each one)"}


class ServerError(Exception):
    """The server could not be configured or started."""


class PluginLoadError(ServerError):
    """A configured Barbican store or crypto plugin did not load."""


@dataclasses.dataclass(frozen=True)
class Store:
    """One ``[secretstore:<suffix>]`` backend of Barbican."""

    suffix: str
    store_plugin: str
    crypto_plugin: str | None = None
    global_default: bool = False


SOFTWARE_STORE = Store("software", "store_crypto", "simple_crypto",
                       global_default=True)
TEE_SEALED_STORE = Store("tee_sealed", "tee_sealed")
DEFAULT_STORES: tuple[Store, ...] = (SOFTWARE_STORE, TEE_SEALED_STORE)


@dataclasses.dataclass(frozen=True)
class Layout:
    """Where a server's files live, all inside ``data_dir``.

    The database is the sqlite file ``barbican.sqlite`` there unless
    ``database_url`` (an SQLAlchemy URL: MariaDB, PostgreSQL) is given.
    """

    data_dir: str
    database_url: str | None = None

    def _path(self, name: str) -> str:
        return os.path.join(self.data_dir, name)

    @property
    def conf_path(self) -> str:
        return self._path(CONF_NAME)

    @property
    def paste_path(self) -> str:
        return self._path(PASTE_NAME)

    @property
    def db_path(self) -> str:
        return self._path(DB_NAME)

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.db_path}"

    @property
    def log_path(self) -> str:
        return self._path(LOG_NAME)

    @property
    def tee_kek_path(self) -> str:
        return self._path(TEE_KEK_NAME)

    @property
    def simple_kek_path(self) -> str:
        return self._path(SIMPLE_KEK_NAME)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def ensure_key_file(path: str, *, urlsafe: bool = False) -> str:
    """Create ``path`` with the base64 of 32 random bytes unless it exists.

    Mode 0600 from the start (``O_EXCL``), so the key is never readable by
    others. Returns the key's base64 text. ``urlsafe`` gives the Fernet
    encoding that Barbican's simple_crypto plugin wants.
    """
    encode = base64.urlsafe_b64encode if urlsafe else base64.b64encode
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        with open(path, encoding="ascii") as f:
            return f.read().strip()
    text = encode(os.urandom(32)).decode("ascii")
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(text + "\n")
    return text


def database_url(url: str | None,
                 extra_conf: Mapping[str, Mapping[str, str]] | None = None
                 ) -> str | None:
    """The database a server uses, None for its own sqlite file.

    ``url`` if given, else a ``[database] connection`` in ``extra_conf``
    (the operator's configuration), so that the URL Barbican reads and
    the one ``barbican-manage db upgrade`` upgrades are always the same.
    """
    if url:
        return url
    connection = (extra_conf or {}).get("database", {}).get("connection")
    return connection or None


def safe_url(url: str) -> str:
    """``url`` with its password masked, for messages."""
    return re.sub(r"(://[^:/@]*:)[^@/]*@", r"\1***@", url)


def render_conf(layout: Layout, port: int, *,
                stores: Sequence[Store] = DEFAULT_STORES,
                trust_root: str | None = None,
                extra_conf: Mapping[str, Mapping[str, str]] | None = None
                ) -> str:
    """The text of ``barbican.conf`` for a server on ``port``."""
    if sum(1 for s in stores if s.global_default) != 1:
        raise ServerError("exactly one secret store must be the global "
                          "default")
    parser = configparser.RawConfigParser()
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_dict({
        "DEFAULT": {"host_href": f"http://{HOST}:{port}"},
        "database": {"connection": layout.db_url},
        "oslo_policy": {"enforce_scope": "False"},
        "secretstore": {
            "enable_multiple_secret_stores": "True",
            "stores_lookup_suffix": ", ".join(s.suffix for s in stores),
        },
    })
    for store in stores:
        section = {"secret_store_plugin": store.store_plugin,
                   "global_default": str(store.global_default)}
        if store.crypto_plugin:
            section["crypto_plugin"] = store.crypto_plugin
        parser.read_dict({f"secretstore:{store.suffix}": section})
    if any(s.crypto_plugin == "simple_crypto" for s in stores):
        kek = ensure_key_file(layout.simple_kek_path, urlsafe=True)
        parser.read_dict({"simple_crypto_plugin": {"kek": kek}})
    parser.read_dict({"tee_sealed": {"kek_file": layout.tee_kek_path}})
    if trust_root:
        parser.read_dict({"tee_attestation": {
            "extra_snp_trust_roots": os.path.abspath(trust_root)}})
    if extra_conf:
        parser.read_dict({k: dict(v) for k, v in extra_conf.items()})
    # The database upgraded is the database used, whatever extra_conf says.
    parser.read_dict({"database": {"connection": layout.db_url}})
    out = io.StringIO()
    parser.write(out)
    return out.getvalue()


def packaged_paste() -> str:
    """Our paste file, as shipped in ``barbican_tee/etc``."""
    return (importlib.resources.files("barbican_tee") / "etc" /
            PASTE_NAME).read_text(encoding="utf-8")


def render_paste(pipeline: Sequence[str] = DEFAULT_PIPELINE) -> str:
    """The packaged paste file with ``pipeline`` as the /v1 pipeline."""
    lines = packaged_paste().splitlines()
    try:
        start = lines.index(_PIPELINE_SECTION)
    except ValueError:
        raise ServerError(f"the packaged paste file has no "
                          f"{_PIPELINE_SECTION} section") from None
    for i in range(start + 1, len(lines)):
        if lines[i].startswith("pipeline ="):
            lines[i] = "pipeline = " + " ".join(pipeline)
            break
    else:
        raise ServerError(f"{_PIPELINE_SECTION} has no pipeline line")
    return "\n".join(lines) + "\n"


def _write_private(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.chmod(path, 0o600)


def write_config(data_dir: str, port: int, *,
                 stores: Sequence[Store] = DEFAULT_STORES,
                 pipeline: Sequence[str] = DEFAULT_PIPELINE,
                 trust_root: str | None = None,
                 extra_conf: Mapping[str, Mapping[str, str]] | None = None,
                 db_url: str | None = None) -> Layout:
    """Write ``barbican.conf``, the paste file and the keys; the layout.

    ``db_url``: see :func:`database_url` (default: sqlite in
    ``data_dir``).
    """
    data_dir = os.path.abspath(data_dir)
    os.makedirs(data_dir, mode=0o700, exist_ok=True)
    layout = Layout(data_dir, database_url(db_url, extra_conf))
    ensure_key_file(layout.tee_kek_path)
    _write_private(layout.conf_path,
                   render_conf(layout, port, stores=stores,
                               trust_root=trust_root,
                               extra_conf=extra_conf))
    _write_private(layout.paste_path, render_paste(pipeline))
    return layout


def _run_checked(argv: Sequence[str], what: str, cwd: str,
                 env: Mapping[str, str] | None = None,
                 timeout: float = 120, stdin: str | None = None) -> None:
    proc = subprocess.run(  # noqa: S603 - our own interpreter, fixed args
        list(argv), env=dict(env) if env is not None else None, cwd=cwd,
        capture_output=True, text=True, timeout=timeout, check=False,
        input=stdin)
    if proc.returncode != 0:
        output = (proc.stderr.strip() or proc.stdout.strip())
        raise ServerError(f"{what} failed (exit {proc.returncode}): "
                          f"{_reason(output)}\n{_tail(output)}")


def _tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.splitlines()[-lines:])


_ERROR_LINE = re.compile(r"\b[\w.]*(?:Error|Exception): .+$", re.MULTILINE)


def _reason(text: str) -> str:
    """The last ``SomeError: message`` of a log, else its last lines."""
    found = _ERROR_LINE.findall(text)
    return found[-1] if found else _tail(text, 5)


# What ``barbican-manage db upgrade --db-url URL`` runs, with the URL read
# from stdin: on a command line, any local user could read the database
# password in /proc/PID/cmdline.
_BARBICAN_UPGRADE = (
    "import sys\n"
    "from barbican.model.migration import commands\n"
    "commands.upgrade(to_version='head', sql_url=sys.stdin.read())\n")


def db_upgrade(layout: Layout) -> None:
    """Barbican's ``db upgrade``, then ours, on the server's database.

    Barbican's migrations are run with the URL given explicitly (Barbican
    23.0.0's ``barbican-manage db upgrade`` reads the connection from the
    global configuration, parsed from the default locations, not from
    ``--config-file``; without one it upgrades ``sqlite:///barbican.sqlite``
    relative to the working directory), through stdin, never argv.
    """
    _run_checked([sys.executable, "-c", _BARBICAN_UPGRADE],
                 "barbican-manage db upgrade", cwd=layout.data_dir,
                 env=server_env(layout), stdin=layout.db_url)
    tee_db_upgrade(layout.conf_path)


# The install guide's workaround for Barbican 23.0.0's simple_crypto on
# PostgreSQL ("Known issue: Barbican's own secrets on PostgreSQL"), shipped
# with the package.
POSTGRESQL_WORKAROUND = os.path.join(os.path.dirname(__file__), "etc",
                                     "postgresql-kek-data.sql")


def sa_url_dialect(url: str) -> str:
    """The dialect an SQLAlchemy URL names (``postgresql``, ``sqlite``...)."""
    import sqlalchemy as sa

    return sa.make_url(url).get_backend_name()


def apply_postgresql_workaround(url: str) -> None:
    """Run ``postgresql-kek-data.sql`` on the PostgreSQL database ``url``.

    After Barbican's migrations (its tables must exist); idempotent. What
    the install guide has operators run with ``psql``: without it,
    Barbican's own store answers 500 from a project's second secret on.
    """
    import sqlalchemy as sa

    with open(POSTGRESQL_WORKAROUND, encoding="utf-8") as f:
        sql = f.read()
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql(sql)
    finally:
        engine.dispose()


def tee_db_upgrade(conf_path: str) -> None:
    """``openstack-tee db upgrade`` on the database ``conf_path`` names.

    After Barbican's own upgrade: the suite's tables, by its migrations
    (barbican-api refuses to start without them).
    """
    from barbican_tee.cmd import db as db_cmd

    try:
        db_cmd.upgrade([conf_path])
    except Exception as exc:
        raise ServerError(f"openstack-tee db upgrade failed: "
                          f"{type(exc).__name__}: {exc}") from exc


def server_env(layout: Layout) -> dict[str, str]:
    """The environment :mod:`barbican_tee.wsgi` reads its paths from."""
    env = dict(os.environ)
    env[ENV_CONF] = layout.conf_path
    env[ENV_PASTE] = layout.paste_path
    return env


def preflight(layout: Layout) -> None:
    """Build the app once in a separate process, as a worker would.

    Fails with the worker's own message (say a :class:`PluginLoadError`)
    before gunicorn starts; it also creates Barbican's secret store rows,
    so that the workers do not race to insert them.
    """
    _run_checked([sys.executable, "-m", "barbican_tee.wsgi"],
                 "barbican-api preflight", cwd=layout.data_dir,
                 env=server_env(layout))


# gevent workers: a connection waiting for a slow client's request costs a
# greenlet, not a worker, so W half-open connections (a slowloris) no
# longer stop W sync workers from answering anyone. Each worker still
# handles one request's CPU work at a time, as a sync worker would.
WORKER_CLASS = "gevent"
WORKER_CONNECTIONS = 1000


def _has_control_socket() -> bool:
    """Whether gunicorn (25.1.0 and later) opens a control socket."""
    try:
        version = importlib.metadata.version("gunicorn")
    except importlib.metadata.PackageNotFoundError:
        return False
    parts = re.findall(r"\d+", version)[:2]
    return tuple(int(p) for p in parts) >= (25, 1)


def gunicorn_argv(port: int, workers: int) -> list[str]:
    # gunicorn 25.1.0's control socket (for gunicornc) is one path per
    # user ($HOME/.gunicorn/gunicorn.ctl) that every server of that user
    # takes over, and stopping it costs the master about 4 s: nothing here
    # uses it.
    no_ctl = ["--no-control-socket"] if _has_control_socket() else []
    return [sys.executable, "-m", "gunicorn",
            "--bind", f"{HOST}:{port}",
            "--workers", str(workers),
            "--worker-class", WORKER_CLASS,
            "--worker-connections", str(WORKER_CONNECTIONS),
            "--timeout", "120",
            "--graceful-timeout", "5",
            *no_ctl,
            "barbican_tee.wsgi:application"]


# ---------------------------------------------------------------------------
# Inside the barbican-api process (called by barbican_tee.wsgi).

def configure_barbican(conf_path: str) -> None:
    """Make every Barbican configuration object read ``conf_path``.

    Barbican parses its global configuration and one private configuration
    per plugin module at import time, each from oslo.config's default
    files (``/etc/barbican/barbican.conf`` ...). Wrap
    ``barbican.common.config.parse_args`` so that those parsed from now on
    read ``conf_path``, and parse again the ones already created.
    """
    if not os.path.isfile(conf_path):
        raise ServerError(f"barbican configuration {conf_path!r} does not "
                          "exist")
    from barbican.common import config as bconfig

    original: Callable[..., None] = getattr(
        bconfig, "_tee_original_parse_args", bconfig.parse_args)

    def parse_args(conf: Any, args: Any = None, usage: Any = None,
                   default_config_files: Any = None) -> None:
        original(conf, args=args, usage=usage,
                 default_config_files=[conf_path])

    bconfig._tee_original_parse_args = original  # noqa: SLF001
    bconfig.parse_args = parse_args
    seen: set[int] = set()
    for conf in [bconfig.CONF, *bconfig._CONFIGS.values()]:  # noqa: SLF001
        if id(conf) not in seen:
            seen.add(id(conf))
            parse_args(conf)


def _missing_reason(namespace: str, name: str) -> str:
    eps = importlib.metadata.entry_points(group=namespace, name=name)
    if not eps:
        return (f"no plugin named {name!r} is installed (no entry point "
                f"{name!r} in {namespace!r})")
    ep = next(iter(eps))
    try:
        ep.load()
    except Exception as exc:
        return (f"its entry point {ep.value!r} does not import: "
                f"{type(exc).__name__}: {exc}")
    return f"stevedore did not load entry point {ep.value!r}"


def _plugin_error(manager: Any, name: str, reason: str) -> PluginLoadError:
    namespace = getattr(manager, "namespace", "?")
    kind = "crypto" if namespace == CRYPTO_NAMESPACE else "secret store"
    return PluginLoadError(
        f"Barbican {kind} plugin {name!r} failed to load: {reason}. "
        "Refusing to start barbican-api with a store configuration other "
        "than the one in the configuration file.")


def strict_instantiate_plugins(extension_manager: Any,
                               invoke_args: Sequence[Any] = (),
                               invoke_kwargs: Mapping[str, Any] | None = None
                               ) -> None:
    """``barbican.plugin.util.utils.instantiate_plugins``, raising.

    Barbican's version logs a constructor that raises and goes on; this
    one raises :class:`PluginLoadError`, and also for a configured name
    that stevedore could not find or import.
    """
    kwargs = dict(invoke_kwargs or {})
    namespace = getattr(extension_manager, "namespace", "?")
    loaded = {ext.name for ext in extension_manager.extensions}
    for name in getattr(extension_manager, "_names", None) or ():
        if name not in loaded:
            raise _plugin_error(extension_manager, name,
                                _missing_reason(namespace, name))
    for ext in extension_manager.extensions:
        if ext.obj:
            continue
        try:
            ext.obj = ext.plugin(*invoke_args, **kwargs)
        except Exception as exc:
            raise _plugin_error(
                extension_manager, ext.name,
                f"its constructor raised {type(exc).__name__}: "
                f"{exc}") from exc


def strict_plugin_loading() -> None:
    """Make Barbican's plugin managers raise instead of skipping a plugin."""
    from barbican.plugin.util import utils as plugin_utils

    plugin_utils.instantiate_plugins = strict_instantiate_plugins


def check_plugins_loaded() -> None:
    """Raise :class:`PluginLoadError` unless every configured plugin runs.

    Builds (or reuses) Barbican's secret store and crypto plugin managers
    and compares what they hold with what the configuration names.
    """
    from barbican.plugin.crypto import manager as crypto_manager
    from barbican.plugin.interface import secret_store

    managers = [secret_store.get_manager()]
    store_names = list(getattr(managers[0], "_names", None) or ())
    if "store_crypto" in store_names:
        managers.append(crypto_manager.get_manager())
    for manager in managers:
        namespace = getattr(manager, "namespace", "?")
        by_name = {ext.name: ext for ext in manager.extensions}
        for name in getattr(manager, "_names", None) or ():
            ext = by_name.get(name)
            if ext is None:
                raise _plugin_error(manager, name,
                                    _missing_reason(namespace, name))
            if not ext.obj:
                raise _plugin_error(manager, name,
                                    "its constructor failed (see the log)")


# ---------------------------------------------------------------------------
# The gunicorn process.

def _probe(port: int, timeout: float = 2.0, script_name: str = "") -> bool:
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        # gunicorn refuses a path outside the SCRIPT_NAME it was given.
        conn.request("GET", script_name.rstrip("/") + "/")
        return conn.getresponse().status < 500
    except OSError:
        return False
    finally:
        conn.close()


class Server:
    """gunicorn running barbican-api on ``127.0.0.1:port``.

    The process has its own session (process group), so :meth:`kill`
    reaches the master and its workers, and nothing else.
    """

    def __init__(self, layout: Layout, port: int, workers: int = 2) -> None:
        if workers < 1:
            raise ServerError("workers must be at least 1")
        self.layout = layout
        self.port = port
        self.workers = workers
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def start(self, timeout: float = 60.0) -> None:
        """Start gunicorn and wait until every worker answers."""
        if self.process is not None and self.process.poll() is None:
            raise ServerError(f"already running (pid {self.process.pid})")
        offset = 0
        with contextlib.suppress(FileNotFoundError):
            offset = os.path.getsize(self.layout.log_path)
        env = server_env(self.layout)
        with open(self.layout.log_path, "ab") as log:
            self.process = subprocess.Popen(  # noqa: S603 - fixed argv
                gunicorn_argv(self.port, self.workers),
                stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                env=env, cwd=self.layout.data_dir,
                start_new_session=True)
        try:
            # Mounted under a path (gunicorn's SCRIPT_NAME), it answers
            # only there.
            self._wait_ready(offset, timeout, env.get("SCRIPT_NAME", ""))
        except BaseException:
            self.stop()
            raise

    def _log_since(self, offset: int) -> str:
        try:
            with open(self.layout.log_path, "rb") as f:
                f.seek(offset)
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def _wait_ready(self, offset: int, timeout: float,
                    script_name: str = "") -> None:
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            code = self.process.poll()
            if code is not None:
                log = self._log_since(offset)
                raise ServerError(
                    f"barbican-api (gunicorn) exited with status {code} "
                    f"while starting: {_reason(log)}\n"
                    f"log {self.layout.log_path}:\n{_tail(log)}")
            log = self._log_since(offset)
            if (log.count(READY_MARKER) >= self.workers
                    and _probe(self.port, script_name=script_name)):
                return
            time.sleep(0.1)
        raise ServerError(
            f"barbican-api did not answer on {self.url} within {timeout} s;"
            f" log {self.layout.log_path}:\n"
            f"{_tail(self._log_since(offset))}")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to gunicorn's process group and reap the master."""
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, sig)
        if sig in (signal.SIGKILL, signal.SIGTERM, signal.SIGINT,
                   signal.SIGQUIT):
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=15)

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM (graceful), then SIGKILL; the master's exit status."""
        proc = self.process
        if proc is None:
            return None
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
        # Workers left behind by a master that died: our group only.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=timeout)
        return proc.returncode

    def wait(self) -> int:
        assert self.process is not None
        return self.process.wait()


def prepare(data_dir: str, port: int, *,
            stores: Sequence[Store] = DEFAULT_STORES,
            pipeline: Sequence[str] = DEFAULT_PIPELINE,
            trust_root: str | None = None,
            extra_conf: Mapping[str, Mapping[str, str]] | None = None,
            check: bool = True, db_url: str | None = None) -> Layout:
    """Configuration, database and (``check``) a preflight; the layout.

    ``db_url``: an SQLAlchemy URL (MariaDB, PostgreSQL) instead of the
    sqlite file in ``data_dir``; see :func:`database_url`.
    """
    layout = write_config(data_dir, port, stores=stores, pipeline=pipeline,
                          trust_root=trust_root, extra_conf=extra_conf,
                          db_url=db_url)
    db_upgrade(layout)
    if sa_url_dialect(layout.db_url) == "postgresql":
        apply_postgresql_workaround(layout.db_url)
    if check:
        preflight(layout)
    return layout


@contextlib.contextmanager
def running(data_dir: str, port: int | None = None, workers: int = 2,
            **kwargs: Any) -> Iterator[Server]:
    """A started :class:`Server`, stopped on exit."""
    port = port or free_port()
    layout = prepare(data_dir, port, **kwargs)
    server = Server(layout, port, workers)
    server.start()
    try:
        yield server
    finally:
        server.stop()
