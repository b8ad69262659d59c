"""``openstack-tee db``: the suite's tables in Barbican's database.

``upgrade`` brings them to the schema this release needs (alembic, with
its own version table ``tee_alembic_version``; Barbican's
``alembic_version`` is never touched); run it after ``barbican-manage db
upgrade``, on one host, before starting barbican-api with this release.
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

# Barbican's own default (barbican.common.config).
BARBICAN_DEFAULT_CONNECTION = "sqlite:///barbican.sqlite"


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
    actions.add_parser(
        "upgrade", parents=[common],
        help="bring the tables to this release's schema (after "
             "barbican-manage db upgrade)").set_defaults(func=run_upgrade)
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
    db_options.set_defaults(conf, connection=BARBICAN_DEFAULT_CONNECTION)
    args: list[str] = []
    for path in config_files:
        args += ["--config-file", path]
    conf(args, project="barbican", default_config_files=None
         if not config_files else [])
    return conf


def _engine(conf: cfg.ConfigOpts) -> Any:
    from barbican_tee.api import db

    return db.make_engine(conf.database.connection, conf)


def upgrade(config_files: Sequence[str]) -> str:
    """Upgrade the database ``config_files`` name; what was done."""
    from barbican_tee import migrations

    engine = _engine(load_conf(config_files))
    try:
        return migrations.upgrade(engine).describe()
    finally:
        engine.dispose()


def _fail(args: argparse.Namespace, exc: Exception) -> int:
    print(f"openstack-tee db {args.db_command}: {exc}", file=sys.stderr)
    return EXIT_UNUSABLE


def _errors() -> tuple[type[Exception], ...]:
    from oslo_db import exception as db_exc
    import sqlalchemy as sa

    from barbican_tee import migrations

    return (migrations.SchemaError, db_exc.DBError, sa.exc.SQLAlchemyError,
            cfg.Error)


def run_upgrade(args: argparse.Namespace) -> int:
    try:
        print(upgrade(args.config_file))
    except _errors() as exc:
        return _fail(args, exc)
    return EXIT_OK


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
