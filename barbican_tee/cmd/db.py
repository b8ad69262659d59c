"""``openstack-tee db``: the suite's tables in Barbican's database.

``upgrade`` brings them to the schema this release needs (alembic, with
its own version table ``tee_alembic_version``; Barbican's
``alembic_version`` is never touched); run it after ``barbican-manage db
upgrade``, before starting barbican-api with this release. It holds the
database's upgrade lock throughout: a second ``upgrade`` run at the same
time (another host, a config-management run) waits for the first, up to
``--lock-timeout`` seconds, then finds the tables current and does
nothing. Migrations go forward only: ``downgrade`` is refused; to go back
to an earlier release, restore the backup taken before the upgrade.
``current`` says where the database stands; ``check`` exits 1 unless it is
at this release's schema (barbican-api refuses to start then too).

The database is Barbican's ``[database] connection``, with Barbican's
engine options, read from ``--config-file`` (default: oslo.config's
search for ``barbican.conf``: ``~/.barbican/``, ``~/``,
``/etc/barbican/``, ``/etc/``).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
import sys
from typing import Any

from oslo_config import cfg

EXIT_OK = 0
EXIT_NOT_AT_HEAD = 1
EXIT_UNUSABLE = 2

# barbican_tee.migrations.DEFAULT_LOCK_TIMEOUT (not imported here: the
# parser is built without the database libraries).
DEFAULT_LOCK_TIMEOUT = 300.0

DOWNGRADE_REFUSED = (
    "openstack-tee's migrations go forward only, as Barbican's and "
    "Nova's do: there is no downgrade, and nothing was changed. To go "
    "back to an earlier release, restore the backup of Barbican's "
    "database taken before `barbican-manage db upgrade` and "
    "`openstack-tee db upgrade` (see \"Database\" in the install guide), "
    "then install the earlier release")


def _seconds(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a number of seconds") from None
    if not 0 < seconds <= 86400:
        raise argparse.ArgumentTypeError(
            "must be more than 0 and at most 86400 seconds")
    return seconds


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config-file", metavar="FILE", action="append", default=[],
        help="barbican.conf with [database] connection (repeatable; "
             "default: barbican.conf in ~/.barbican/, ~/, /etc/barbican/ "
             "or /etc/)")
    p = sub.add_parser(
        "db", help="the openstack-tee tables in Barbican's database "
                   "(schema migrations)", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    actions = p.add_subparsers(dest="db_command", required=True,
                               parser_class=type(p))
    up = actions.add_parser(
        "upgrade", parents=[common],
        help="bring the tables to this release's schema (after "
             "barbican-manage db upgrade)")
    up.add_argument(
        "--lock-timeout", metavar="SECONDS", type=_seconds,
        default=DEFAULT_LOCK_TIMEOUT,
        help="how long to wait for another `openstack-tee db upgrade` "
             "of the same database to finish (default: "
             f"{DEFAULT_LOCK_TIMEOUT:g})")
    up.set_defaults(func=run_upgrade)
    down = actions.add_parser(
        "downgrade", parents=[common],
        help="refused: migrations go forward only (restore the backup "
             "taken before the upgrade instead)")
    down.add_argument("revision", nargs="?", help=argparse.SUPPRESS)
    down.set_defaults(func=run_downgrade)
    actions.add_parser(
        "current", parents=[common],
        help="where the tables stand").set_defaults(func=run_current)
    actions.add_parser(
        "check", parents=[common],
        help="exit 1 unless the tables are at this release's schema"
    ).set_defaults(func=run_check)


def load_conf(config_files: Sequence[str]) -> cfg.ConfigOpts:
    """Barbican's ``[database]`` options from ``config_files``."""
    from oslo_db import options as db_options

    conf = cfg.ConfigOpts()
    # No default connection: Barbican's own (sqlite:///barbican.sqlite,
    # relative to the working directory) is never the database an
    # operator means to upgrade.
    db_options.set_defaults(conf)
    args: list[str] = []
    for path in config_files:
        args += ["--config-file", path]
    conf(args, project="barbican", default_config_files=None
         if not config_files else [])
    if not conf.config_file:
        raise cfg.Error("no barbican.conf found in ~/.barbican/, ~/, "
                        "/etc/barbican/ or /etc/: name it with "
                        "--config-file")
    if not conf.database.connection:
        raise cfg.Error(f"{', '.join(conf.config_file)} sets no [database] "
                        "connection")
    return conf


def _engine(conf: cfg.ConfigOpts) -> Any:
    from barbican_tee.api import db

    return db.make_engine(conf.database.connection, conf)


def upgrade(config_files: Sequence[str],
            lock_timeout: float = DEFAULT_LOCK_TIMEOUT) -> str:
    """Upgrade the database ``config_files`` name; what was done."""
    from barbican_tee import migrations

    engine = _engine(load_conf(config_files))
    try:
        return migrations.upgrade(
            engine, lock_timeout=lock_timeout).describe()
    finally:
        engine.dispose()


def _fail(args: argparse.Namespace, exc: Exception) -> int:
    if isinstance(exc, ImportError):
        print(f"openstack-tee db {args.db_command}: the database driver is "
              f"not installed ({exc}): install the one the [database] "
              "connection URL names (PyMySQL for mysql+pymysql://, "
              "psycopg2 for postgresql://)", file=sys.stderr)
    else:
        print(f"openstack-tee db {args.db_command}: {exc}", file=sys.stderr)
    return EXIT_UNUSABLE


def _errors() -> tuple[type[Exception], ...]:
    from oslo_db import exception as db_exc
    import sqlalchemy as sa

    from barbican_tee import migrations

    # ImportError: the URL's driver (PyMySQL, psycopg2) is not installed.
    return (migrations.SchemaError, db_exc.DBError, sa.exc.SQLAlchemyError,
            cfg.Error, ImportError)


def run_upgrade(args: argparse.Namespace) -> int:
    try:
        print(upgrade(args.config_file, args.lock_timeout))
    except _errors() as exc:
        return _fail(args, exc)
    return EXIT_OK


def run_downgrade(args: argparse.Namespace) -> int:
    """Refused, touching nothing: migrations go forward only."""
    print(f"openstack-tee db downgrade: {DOWNGRADE_REFUSED}",
          file=sys.stderr)
    return EXIT_UNUSABLE


def _state(args: argparse.Namespace) -> Any:
    from barbican_tee import migrations

    engine = _engine(load_conf(args.config_file))
    try:
        with engine.connect() as conn:
            return migrations.state(conn)
    finally:
        engine.dispose()


def run_current(args: argparse.Namespace) -> int:
    try:
        state = _state(args)
    except _errors() as exc:
        return _fail(args, exc)
    print(f"openstack-tee tables: {state.describe()}")
    return EXIT_OK


def run_check(args: argparse.Namespace) -> int:
    from barbican_tee import migrations

    try:
        state = _state(args)
    except _errors() as exc:
        return _fail(args, exc)
    print(f"openstack-tee tables: {state.describe()}")
    if not state.at_head:
        print(f"to upgrade: {migrations.UPGRADE_HINT}")
        return EXIT_NOT_AT_HEAD
    return EXIT_OK
