"""``openstack-tee rewrap``: move everything onto the current KEK.

After a KEK rotation (new ``kek_file``, the old one moved to
``previous_kek_files``), run this once on one barbican-api host; afterwards
the old KEK file can be retired. Sealed secrets are re-sealed and the
attestation tables' row MACs recomputed; what is already under the current
KEK is skipped, so it is safe to run again after an interruption. Rows
that do not authenticate are left as they are and counted as failed.
"""

from __future__ import annotations

import argparse

from oslo_config import cfg

from barbican_tee import conf as tee_conf
from barbican_tee.plugin import keyring as keyring_mod


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("rewrap", help="re-seal sealed secrets under the "
                                      "current KEK after a rotation")
    p.add_argument("--config-file", required=True, metavar="FILE",
                   help="barbican.conf with [database] and [tee_sealed]")
    p.set_defaults(func=run)


def rewrap(conf: cfg.ConfigOpts) -> tuple[int, int, int]:
    """(re-sealed or re-MACed, already current, failed) counts.

    Sealed secrets get new ciphertext, policy and binding rows a new MAC,
    both under the current KEK.
    """
    # Barbican-side modules: imported here so that the rest of the
    # openstack-tee command works on hosts without Barbican.
    from barbican_tee.api import db
    from barbican_tee.plugin import store as sealed_store

    ring = sealed_store.load_keyring(conf)
    store = db.Store(db.make_engine(conf.database.connection), ring)
    done = current = failed = 0
    for secret_id in store.sealed_secret_ids(sealed_store.PLUGIN_PATH):
        meta = store.store_metadata(secret_id)
        try:
            new = sealed_store.reseal(ring, meta)
        except sealed_store.SealedSecretError:
            failed += 1
            continue
        if new is None:
            current += 1
        elif store.replace_store_metadata(secret_id, meta, new):
            done += 1
        else:
            failed += 1
    remaced, refused = store.remac_rows()
    return done + remaced, current, failed + refused


def run(args: argparse.Namespace) -> int:
    conf = cfg.ConfigOpts()
    conf.register_opts([cfg.StrOpt("connection", secret=True)],
                       group="database")
    tee_conf.register_opts(conf)
    conf(["--config-file", args.config_file], project="barbican")
    try:
        done, current, failed = rewrap(conf)
    except keyring_mod.KeyringError as exc:
        print(f"openstack-tee rewrap: {exc}")
        return 2
    print(f"re-sealed or re-MACed {done}, already current {current}, "
          f"failed {failed}")
    return 1 if failed else 0
