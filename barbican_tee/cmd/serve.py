"""``openstack-tee serve``: a local barbican-api with the whole suite.

Barbican 23.0.0's own API under gunicorn (gevent workers, so slow clients
cannot hold every worker), on sqlite in ``--data-dir`` or on the MariaDB or
PostgreSQL database of ``--database-url`` (upgraded before it starts),
on 127.0.0.1 only, without Keystone: clients send ``X-Project-Id``,
``X-User-Id`` and ``X-Roles`` instead of a token. For development, tests
and the demo; never a production deployment.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import types
from typing import Any

from barbican_tee import extras
from barbican_tee import server

DEFAULT_PORT = 9311
DEFAULT_DATA_DIR = "openstack-tee-data"
# The database URL from the environment, so that its password need not be
# on a command line (which every local user can read).
ENV_DATABASE_URL = "OPENSTACK_TEE_DATABASE_URL"


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``serve`` to an ``add_subparsers()`` object."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "serve",
        help="run a local barbican-api with openstack-tee on 127.0.0.1",
        description=__doc__)
    p.add_argument("--port", type=int, default=DEFAULT_PORT,
                   help=f"TCP port on 127.0.0.1 (default {DEFAULT_PORT})")
    p.add_argument("--data-dir", default=DEFAULT_DATA_DIR, metavar="D",
                   help="configuration, keys, sqlite database and log "
                        f"(default ./{DEFAULT_DATA_DIR}; created 0700)")
    p.add_argument("--database-url", metavar="URL",
                   default=os.environ.get(ENV_DATABASE_URL) or None,
                   help="SQLAlchemy URL of Barbican's database, e.g. "
                        "mysql+pymysql://barbican:PASSWORD@db.example/"
                        "barbican or postgresql+psycopg2://...; "
                        "upgraded with barbican-manage before serving "
                        f"(default: ${ENV_DATABASE_URL}, else sqlite in "
                        "the data directory)")
    p.add_argument("--workers", type=int, default=2, metavar="W",
                   help="gunicorn workers (default 2)")
    p.add_argument("--trust-root", metavar="FILE",
                   help="an extra ARK bundle to trust for SEV-SNP "
                        "(test and demo only)")
    p.set_defaults(func=run)
    return p


def _usage(url: str, layout: server.Layout) -> str:
    return "\n".join([
        f"barbican-api with openstack-tee listening on {url}",
        f"  configuration: {layout.conf_path}",
        f"  database:      {server.safe_url(layout.db_url)}",
        f"  log:           {layout.log_path}",
        "No Keystone: send these headers instead of a token:",
        *(f"  {name}: {value}" for name, value in
          server.CLIENT_HEADERS.items()),
        "For example:",
        f"  curl -H 'X-Project-Id: demo' -H 'X-Roles: member' "
        f"{url}/v1/secrets",
        "Ctrl-C (or SIGTERM) stops it.",
    ])


class _Stop(Exception):
    pass


def _raise_stop(signum: int, frame: types.FrameType | None) -> None:
    raise _Stop(signum)


def run(args: argparse.Namespace) -> int:
    """Prepare, start, print the URL and headers, serve until stopped."""
    problem = extras.check("barbican", "openstack-tee serve")
    if problem:
        print(problem, file=sys.stderr)
        return 2
    if args.workers < 1:
        print("openstack-tee serve: --workers must be at least 1",
              file=sys.stderr)
        return 2
    if args.trust_root and not os.path.isfile(args.trust_root):
        print(f"openstack-tee serve: --trust-root {args.trust_root!r} is "
              "not a file", file=sys.stderr)
        return 2
    srv: server.Server | None = None
    # Both explicitly: SIGINT may arrive ignored (a job started with & by a
    # non-interactive shell) and the server must still stop on Ctrl-C.
    previous = {sig: signal.signal(sig, _raise_stop)
                for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        layout = server.prepare(args.data_dir, args.port,
                                trust_root=args.trust_root,
                                db_url=args.database_url)
        srv = server.Server(layout, args.port, args.workers)
        srv.start()
        print(_usage(srv.url, layout), flush=True)
        status = srv.wait()
        print(f"openstack-tee serve: gunicorn exited with status {status}; "
              f"see {layout.log_path}", file=sys.stderr)
        return 1
    except server.ServerError as exc:
        print(f"openstack-tee serve: {exc}", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, _Stop):
        print("openstack-tee serve: stopping", file=sys.stderr)
        return 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if srv is not None:
            srv.stop()
