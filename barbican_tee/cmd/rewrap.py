"""``openstack-tee rewrap``: move everything onto the current KEK.

After a KEK rotation (new ``kek_file``, the old one moved to
``previous_kek_files``), run this once on one barbican-api host; afterwards
the old KEK file can be retired. Sealed secrets are re-sealed and the
attestation tables' row MACs (policies, platform TCB floors, cached CRLs
and TDX collateral) recomputed;
what is already under the current KEK is skipped, so it is safe to run
again after an interruption. Rows that do not authenticate are left as
they are and counted as failed.

It also upgrades the secrets sealed by earlier releases (record version 1,
not yet bound to their secret) to version 2: each is sealed to the secret
whose rows hold it, with the binding its old, still authenticating,
binding rows gave. Run it right after the upgrade, from a database you
trust at that moment; until then such secrets are refused with
``sealed_record_unbound``.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

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

    Sealed secrets get new ciphertext, policy, floor and endorsement-cache
    rows a new MAC, all under the current KEK.
    """
    # Barbican-side modules: imported here so that the rest of the
    # openstack-tee command works on hosts without Barbican.
    from barbican_tee.api import db
    from barbican_tee.plugin import store as sealed_store

    from barbican_tee import migrations

    ring = sealed_store.load_keyring(conf)
    engine = db.make_engine(conf.database.connection, conf)
    migrations.check(engine)
    store = db.Store(engine, ring)
    done = current = failed = 0
    for secret_id in store.sealed_secret_ids(sealed_store.PLUGIN_PATH):
        meta = store.store_metadata(secret_id)
        try:
            if meta.get("tee_v", sealed_store.BLOB_VERSION) == (
                    sealed_store.BLOB_VERSION):
                new: dict[str, str] | None = _upgrade(
                    ring, store, meta, secret_id)
            else:
                new = sealed_store.reseal(ring, meta, secret_id)
            if new is None:
                current += 1
            elif store.replace_store_metadata(secret_id, meta, new):
                done += 1
            else:
                failed += 1
        except (sealed_store.SealedSecretError, KeyError, ValueError,
                TypeError) as exc:
            # This secret's rows are not a record it can seal again (say
            # one written to the database by hand): counted, and the
            # others carry on. The error's class only: its text could
            # quote a row.
            print(f"openstack-tee rewrap: secret {secret_id}: "
                  f"{getattr(exc, 'code', type(exc).__name__)}",
                  file=sys.stderr)
            failed += 1
    remaced, refused = store.remac_rows()
    floors_remaced, floors_refused = _remac_floors(engine, ring)
    endorsements_remaced = _remac_endorsements(engine, ring)
    return (done + remaced + floors_remaced + endorsements_remaced,
            current, failed + refused + floors_refused)


def _remac_floors(engine: Any, ring: keyring_mod.Keyring
                  ) -> tuple[int, int]:
    """The platform TCB floor rows under the current KEK: (done, refused).

    Without it, every floor set through the API would stop authenticating
    (``tcb_floor_tampered``) once the old KEK is retired.
    """
    from barbican_tee.api import floors

    return floors.FloorStore(engine, ring).remac()


def _remac_endorsements(engine: Any, ring: keyring_mod.Keyring) -> int:
    """The cached CRLs and TDX collateral under the current KEK.

    Without it they stop authenticating (``endorsement_tampered``, the
    product's releases refused) once the old KEK is retired.
    """
    from barbican_tee.api import endorsements

    return endorsements.remac(engine, ring)


def _upgrade(ring: keyring_mod.Keyring, store: Any, meta: dict[str, str],
             secret_id: str) -> dict[str, str]:
    """A version 1 record sealed to its secret, old binding carried over."""
    from barbican_tee.api import db
    from barbican_tee.plugin import store as sealed_store

    project = store.secret_project(secret_id)
    if project is None:
        raise sealed_store.SealedSecretError("the secret is gone",
                                             "sealed_record_corrupt")
    policy_id, instance, retired = store.legacy_binding(secret_id)
    pin = None
    row = store.get_policy(policy_id) if policy_id else None
    if row is not None and store.policy_intact(row) and (
            row["project_id"] == project):
        pin = db.policy_pin(row)
    else:
        policy_id = None
    binding = sealed_store.Binding(
        generation=1, policy_id=policy_id, policy_pin=pin,
        instance_uuid=instance, retired=retired)
    return sealed_store.upgrade_v1(ring, meta, secret_id, project, binding)


def run(args: argparse.Namespace) -> int:
    """Exit 0: done; 1: some rows failed; 2: nothing could be done."""
    from oslo_db import exception as db_exc
    from oslo_db import options as db_options
    import sqlalchemy as sa

    from barbican_tee import migrations

    conf = cfg.ConfigOpts()
    db_options.set_defaults(conf)
    tee_conf.register_opts(conf)
    try:
        conf(["--config-file", args.config_file], project="barbican")
        if not conf.database.connection:
            raise cfg.Error(f"{args.config_file} sets no [database] "
                            "connection")
        done, current, failed = rewrap(conf)
    except (keyring_mod.KeyringError, migrations.SchemaError, cfg.Error,
            sa.exc.SQLAlchemyError, db_exc.DBError, ImportError) as exc:
        # The error's class and text; a database error's text may hold a
        # statement, never a key (rows are sealed or MACed).
        reason = (str(exc).splitlines() or [""])[0][:300]
        print(f"openstack-tee rewrap: {type(exc).__name__}: {reason}",
              file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - exit 1 means "rows failed"
        # Anything else stopped it midway: not "some rows failed" (1),
        # after which an operator might retire the old KEK.
        print(f"openstack-tee rewrap: stopped by {type(exc).__name__}; "
              "the rows not reached are still under their old KEK: do "
              "not retire it", file=sys.stderr)
        return 2
    print(f"re-sealed or re-MACed {done}, already current {current}, "
          f"failed {failed}")
    return 1 if failed else 0
