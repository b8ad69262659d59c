"""Platform TCB floors: ``/v1/tee/floors`` and the check at release.

An administrator sets, per product, the lowest TCB a platform may report
for any key to be released: for AMD SEV-SNP per Milan, Genoa and Turin
the security patch levels (bootloader, tee, snp, microcode; fmc on
Turin), for Intel TDX the accepted TCB statuses and a minimum TEE TCB SVN.

* ``GET /v1/tee/floors``: every product's floor (``tee:floor:get``); a
  product whose floor cannot be given (a stored row that does not
  authenticate, say) has an error entry with its code instead, so that a
  client refuses that product only;
* ``GET /v1/tee/floors/{product}``: one (``tee:floor:get``);
* ``PUT /v1/tee/floors/{product}``: set one (``tee:floor:set``), with an
  audit notification ``tee.floor.updated`` (old and new values, who).

One source of truth, two layers. The deployment's trusted minimum stays in
the config (``[tee_attestation] tcb_floor_*``): only whoever writes
barbican.conf changes it. The API-set floor is a row in ``tee_floors``
with a MAC under a key derived from the KEK, so a database writer without
the KEK cannot forge one; a row that does not authenticate refuses every
release of its product (``tcb_floor_tampered``), never falls back to the
config. The effective floor is the higher of the two, field by field (for
TDX: the statuses both accept, the higher SVN byte by byte), and a policy's
``min_tcb`` can only raise it further. What the MAC cannot stop: a writer
who kept an older row (or deletes the row) can put the floor back to an
earlier API-set value (or to the config's), never below the config. A floor
meant to hold against a database writer belongs in the config too.

The check at release (:func:`check_snp`, :func:`check_tdx`) is a separate
step on the verified evidence's TCB, after the signature, chain and policy
checks; evidence below the effective floor is refused with
``tcb_below_floor`` whatever the owner's policy says.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import threading
from typing import Any
import weakref

from oslo_config import cfg
from oslo_db import exception as db_exc
from oslo_log import log as logging
from oslo_policy import policy as oslo_policy
import sqlalchemy as sa

from barbican_tee.api import db
from barbican_tee.attestation import errors
from barbican_tee.attestation import policy as policy_mod
from barbican_tee.attestation import snp
from barbican_tee.attestation.snp_certs import Product
from barbican_tee.plugin import keyring as keyring_mod

LOG = logging.getLogger(__name__)

SNP_PRODUCTS = {"milan": Product.MILAN, "genoa": Product.GENOA,
                "turin": Product.TURIN}
TDX = "tdx"
PRODUCTS = (*SNP_PRODUCTS, TDX)
SNP_FIELDS = ("bootloader", "tee", "snp", "microcode")
# Statuses a floor may accept: Revoked never.
TDX_STATUSES = tuple(s for s in policy_mod.TDX_TCB_STATUSES
                     if s != "Revoked")
TEE_TCB_SVN_SIZE = 16
EVENT = "tee.floor.updated"
# Read on every release: built once (see db._HIT_COUNT).
_FLOOR_OF = db.FLOORS.select().where(db.FLOORS.c.product == sa.bindparam("p"))

RULES = [
    oslo_policy.RuleDefault(
        "tee:floor:get", "role:admin or role:service",
        "Show the platform TCB floors (administrators, and Nova's service "
        "user for TEEFilter)."),
    oslo_policy.RuleDefault(
        "tee:floor:set", "role:admin",
        "Set a product's platform TCB floor for every release and "
        "placement."),
]


class FloorError(Exception):
    """A request or release refused: ``status``, stable ``code``."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class FloorTampered(FloorError):
    """A stored floor that does not authenticate (fail closed)."""

    def __init__(self, product: str) -> None:
        super().__init__(
            403, "tcb_floor_tampered",
            f"the stored TCB floor for {product} does not authenticate "
            "(changed in the database, or MACed under a KEK that is no "
            "longer configured); every release of the product is refused "
            f"until an administrator sets it again (openstack tee floor "
            f"set {product})")


@dataclasses.dataclass(frozen=True)
class TdxFloor:
    """Accepted TCB statuses (None: any) and the lowest TEE TCB SVN."""

    tcb_statuses: tuple[str, ...] | None
    min_tee_tcb_svn: bytes | None

    def as_dict(self) -> dict[str, Any]:
        return {"tcb_statuses": (None if self.tcb_statuses is None
                                 else list(self.tcb_statuses)),
                "min_tee_tcb_svn": (None if self.min_tee_tcb_svn is None
                                    else self.min_tee_tcb_svn.hex())}


Floor = snp.TcbVersion | TdxFloor


@dataclasses.dataclass(frozen=True)
class Stored:
    """An authenticated ``tee_floors`` row."""

    floor: Floor
    updated_at: datetime.datetime
    updated_by: str


class FloorUnavailable(FloorError):
    """The stored floor could not be read (a database error): refuse."""

    def __init__(self, product: str) -> None:
        super().__init__(
            503, "tcb_floor_unavailable",
            f"the TCB floor for {product} cannot be read from the database "
            "right now; nothing of the product is released until it can "
            "be (try again later)")


# -- parsing --------------------------------------------------------------
def _invalid(message: str) -> FloorError:
    return FloorError(400, "floor_invalid", message)


def product_name(product: str) -> str:
    if product not in PRODUCTS:
        raise FloorError(404, "floor_product_unknown",
                         f"no product {product[:20]!r}: floors are set "
                         f"for {', '.join(PRODUCTS)}")
    return product


def _svn(text: Any, what: str) -> bytes:
    try:
        value = bytes.fromhex(str(text))
    except ValueError:
        value = b""
    if not isinstance(text, str) or len(value) != TEE_TCB_SVN_SIZE:
        raise _invalid(f"{what} must be {2 * TEE_TCB_SVN_SIZE} hex digits "
                       "(the TD report's TEE_TCB_SVN)")
    return value


def parse(product: str, body: dict[str, Any]) -> Floor:
    """A floor from a PUT body (or a stored document)."""
    if product == TDX:
        unknown = sorted(set(body) - {"tcb_statuses", "min_tee_tcb_svn"})
        if unknown:
            raise _invalid("a TDX floor takes tcb_statuses and "
                           "min_tee_tcb_svn")
        statuses = body.get("tcb_statuses")
        if not isinstance(statuses, list) or not statuses or not all(
                s in TDX_STATUSES for s in statuses):
            raise _invalid("tcb_statuses must be a non-empty list of "
                           f"{', '.join(TDX_STATUSES)}")
        svn = body.get("min_tee_tcb_svn")
        return TdxFloor(tuple(dict.fromkeys(statuses)),
                        None if svn is None
                        else _svn(svn, "min_tee_tcb_svn"))
    fields = SNP_FIELDS + (("fmc",) if product == "turin" else ())
    unknown = sorted(set(body) - set(fields))
    missing = [f for f in SNP_FIELDS if f not in body]
    if unknown or missing:
        raise _invalid(f"a {product} floor takes {', '.join(fields)} "
                       f"({', '.join(SNP_FIELDS)} required)")
    for name in fields:
        value = body.get(name, 0)
        if isinstance(value, bool) or not isinstance(value, int) or not (
                0 <= value <= 255):
            raise _invalid(f"{name} must be an integer 0-255 (a security "
                           "patch level)")
    return snp.TcbVersion.from_dict(body)


def as_dict(floor: Floor | None) -> dict[str, Any] | None:
    return None if floor is None else floor.as_dict()


def config_floor(conf: cfg.ConfigOpts, product: str) -> Floor | None:
    """The deployment's trusted minimum (``[tee_attestation]``)."""
    group = conf.tee_attestation
    if product != TDX:
        try:
            return snp.tcb_floor_from_conf(
                getattr(group, f"tcb_floor_{product}"),
                SNP_PRODUCTS[product])
        except errors.InvalidInput as exc:
            raise FloorError(500, exc.code, exc.message) from None
    statuses = tuple(group.tcb_floor_tdx_statuses) or None
    svn_text = group.tcb_floor_tdx_tee_tcb_svn
    if (statuses is None and not svn_text):
        return None
    if statuses is not None and not set(statuses) <= set(TDX_STATUSES):
        raise FloorError(500, "config_tcb_floor",
                         "[tee_attestation] tcb_floor_tdx_statuses takes "
                         f"{', '.join(TDX_STATUSES)}")
    try:
        svn = _svn(svn_text, "tcb_floor_tdx_tee_tcb_svn") if svn_text else (
            None)
    except FloorError:
        raise FloorError(500, "config_tcb_floor",
                         "[tee_attestation] tcb_floor_tdx_tee_tcb_svn "
                         "takes 32 hex digits") from None
    return TdxFloor(statuses, svn)


def effective(a: Floor | None, b: Floor | None) -> Floor | None:
    """The higher of two floors of one product, field by field."""
    if a is None or b is None:
        return a if b is None else b
    if isinstance(a, snp.TcbVersion) and isinstance(b, snp.TcbVersion):
        fmc = (None if a.fmc is None and b.fmc is None
               else max(a.fmc or 0, b.fmc or 0))
        return snp.TcbVersion(
            bootloader=max(a.bootloader, b.bootloader),
            tee=max(a.tee, b.tee), snp=max(a.snp, b.snp),
            microcode=max(a.microcode, b.microcode), fmc=fmc)
    assert isinstance(a, TdxFloor) and isinstance(b, TdxFloor)
    if a.tcb_statuses is None or b.tcb_statuses is None:
        statuses = a.tcb_statuses if b.tcb_statuses is None else (
            b.tcb_statuses)
    else:
        statuses = tuple(s for s in a.tcb_statuses if s in b.tcb_statuses)
    if a.min_tee_tcb_svn is None or b.min_tee_tcb_svn is None:
        svn = a.min_tee_tcb_svn if b.min_tee_tcb_svn is None else (
            b.min_tee_tcb_svn)
    else:
        svn = bytes(max(x, y) for x, y in zip(a.min_tee_tcb_svn,
                                              b.min_tee_tcb_svn,
                                              strict=True))
    return TdxFloor(statuses, svn)


# -- storage --------------------------------------------------------------
def _mac_input(row: dict[str, Any]) -> bytes:
    # The product is in the MAC: a Milan row copied to Genoa's does not
    # authenticate.
    return json.dumps(["floor", row["product"], row["document"],
                       row["updated_at"].isoformat(), row["updated_by"]],
                      separators=(",", ":")).encode()


# engine -> product -> the newest updated_at seen in that database (one
# engine per database and process: barbican_tee.api.db.process_engine).
_SEEN: weakref.WeakKeyDictionary[sa.Engine, dict[str, datetime.datetime]] = (
    weakref.WeakKeyDictionary())
_SEEN_LOCK = threading.Lock()


class FloorStore:
    """``tee_floors`` rows, authenticated on every read."""

    def __init__(self, engine: sa.Engine,
                 keyring: keyring_mod.Keyring) -> None:
        self.engine = engine
        self.keyring = keyring
        # product -> the newest updated_at this process has authenticated
        # in this database, whichever filter (token routes or token-less
        # release) read it.
        with _SEEN_LOCK:
            self._seen = _SEEN.setdefault(engine, {})
        self._seen_lock = _SEEN_LOCK

    def read(self, product: str) -> db.Read:
        """The query :meth:`get` makes, for a release's admission to run."""
        return db.Read.of(self.engine, _FLOOR_OF, {"p": product})

    @db._retry  # noqa: SLF001 - the suite's own retry policy
    def _row(self, product: str) -> dict[str, Any] | None:
        rows = db.prefetched(self.engine, _FLOOR_OF, {"p": product})
        if rows is None:
            with self.engine.connect() as conn:
                rows = conn.execute(_FLOOR_OF,
                                    {"p": product}).mappings().all()
        for row in rows:
            if row["product"] == product:
                return dict(row)
        return None

    def get(self, product: str) -> Stored | None:
        """The API-set floor; :class:`FloorTampered` if it is forged.

        Also refused: a row gone, or older than one this process has
        already authenticated (a deleted or replayed row that would lower
        the floor; there is no route that deletes one). Across processes
        and restarts that is the documented limit: such a row can only
        take the floor back to an earlier API-set value, never below the
        config's.
        """
        try:
            row = self._row(product)
        except (sa.exc.SQLAlchemyError, db_exc.DBError) as exc:
            # What the retries could not mend: a refusal with its code
            # (audited by the caller), never a release and never a 500.
            LOG.error("openstack-tee: cannot read the %s TCB floor: %s",
                      product, type(exc).__name__)
            raise FloorUnavailable(product) from None
        if row is None:
            with self._seen_lock:
                if product in self._seen:
                    raise FloorTampered(product)
            return None
        try:
            intact = self.keyring.check_mac(row["mac_kek"], _mac_input(row),
                                            bytes.fromhex(row["mac"]))
        except ValueError:
            intact = False
        if not intact:
            raise FloorTampered(product)
        try:
            floor = parse(product, json.loads(row["document"]))
        except (FloorError, ValueError):
            raise FloorTampered(product) from None
        with self._seen_lock:
            seen = self._seen.get(product)
            if seen is not None and row["updated_at"] < seen:
                raise FloorTampered(product)
            self._seen[product] = row["updated_at"]
        return Stored(floor, row["updated_at"], row["updated_by"])

    @db.again_on_duplicate
    @db._retry  # noqa: SLF001 - the suite's own retry policy
    def put(self, product: str, floor: Floor, user: str) -> None:
        """Set the floor, dated no earlier than the row it replaces.

        Whole seconds (MariaDB's DATETIME keeps no fraction, and the MAC
        covers the value as read back); never before the authenticated
        row it replaces nor the newest this process has seen, whatever
        this host's clock says: a floor set from an API node whose clock
        is behind another's is not older than what the workers have seen
        (a rollback to them). An equal date is not older.
        """
        now = db.utcnow().replace(microsecond=0)
        with self._seen_lock:
            seen = self._seen.get(product)
        if seen is not None:
            now = max(now, seen)
        kid = self.keyring.current.kid
        with self.engine.begin() as conn:
            for found in conn.execute(_FLOOR_OF, {"p": product}).mappings():
                old = dict(found)
                if old["product"] == product and self.keyring.check_mac(
                        old["mac_kek"], _mac_input(old), old["mac"]):
                    now = max(now, old["updated_at"])
            row: dict[str, Any] = {
                "product": product,
                "document": json.dumps(floor.as_dict(), sort_keys=True),
                "updated_at": now, "updated_by": user, "mac_kek": kid}
            row["mac"] = self.keyring.mac(kid, _mac_input(row)).hex()
            conn.execute(db.FLOORS.delete().where(
                db.FLOORS.c.product == product))
            conn.execute(db.FLOORS.insert().values(**row))

    @db._retry  # noqa: SLF001 - the suite's own retry policy
    def remac(self) -> tuple[int, int]:
        """Re-MAC the rows under the current KEK (``openstack-tee rewrap``).

        As for policy rows: only a row that authenticates under the key it
        names is re-MACed (a tampered row stays tampered), its content
        unchanged, and only if it is still the row that was read (a
        concurrent ``PUT`` wins). One transaction. Returns (re-MACed,
        refused).
        """
        kid = self.keyring.current.kid
        done = refused = 0
        with self.engine.begin() as conn:
            rows = conn.execute(db.FLOORS.select().where(
                db.FLOORS.c.mac_kek != kid)).mappings().all()
            for found in rows:
                row = dict(found)
                data = _mac_input(row)
                try:
                    intact = self.keyring.check_mac(
                        row["mac_kek"], data, bytes.fromhex(row["mac"]))
                except ValueError:
                    intact = False
                if not intact:
                    refused += 1
                    continue
                result = conn.execute(db.FLOORS.update().where(
                    (db.FLOORS.c.product == row["product"])
                    & (db.FLOORS.c.mac_kek == row["mac_kek"])
                    & (db.FLOORS.c.mac == row["mac"])).values(
                    mac_kek=kid, mac=self.keyring.mac(kid, data).hex()))
                if result.rowcount == 1:
                    done += 1
                else:
                    refused += 1
        return done, refused



# -- views ----------------------------------------------------------------
def view(store: FloorStore, conf: cfg.ConfigOpts,
         product: str) -> dict[str, Any]:
    """What ``GET /v1/tee/floors/{product}`` answers."""
    configured = config_floor(conf, product)
    stored = store.get(product)
    api = stored.floor if stored else None
    return {"product": product,
            "config": as_dict(configured),
            "set": as_dict(api),
            "effective": as_dict(effective(configured, api)),
            "updated_at": (stored.updated_at.isoformat() + "Z"
                           if stored else None),
            "updated_by": stored.updated_by if stored else None}


def views(store: FloorStore, conf: cfg.ConfigOpts) -> list[dict[str, Any]]:
    """What ``GET /v1/tee/floors`` answers: one entry per product.

    A product whose floor cannot be given (a stored row that does not
    authenticate, a configured floor that does not parse) has an error
    entry ``{"product", "error": {"code", "message"}, "effective":
    {"error": code}}`` instead of a view: a client refuses that product
    (as a release does), and only that one. ``effective`` is there for
    clients of earlier releases, which expect every product's entry to
    have one: no floor reader takes that object for a floor, so they fail
    closed (they never read it as "no floor", which ``null`` would be). A
    database that cannot be read at all fails the whole answer
    (:class:`FloorUnavailable`).
    """
    out = []
    for product in PRODUCTS:
        try:
            out.append(view(store, conf, product))
        except FloorUnavailable:
            raise
        except FloorError as exc:
            out.append({"product": product,
                        "error": {"code": exc.code, "message": str(exc)},
                        "effective": {"error": exc.code}})
    return out


def set_floor(store: FloorStore, conf: cfg.ConfigOpts, product: str,
              body: dict[str, Any], user: str,
              notifier: Any) -> dict[str, Any]:
    """Store ``body`` as the product's floor; audit it; the new view.

    A stored row that does not authenticate is replaced (that is how an
    administrator recovers from it) and the audit event says so.
    """
    floor = parse(product, body)
    try:
        old = store.get(product)
        before: dict[str, Any] | None | str = as_dict(
            old.floor if old else None)
    except FloorTampered:
        before = "tampered"
    store.put(product, floor, user)
    payload = {"product": product, "old": before,
               "new": floor.as_dict(), "user_id": user}
    LOG.info("openstack-tee audit %s product=%s old=%s new=%s user=%s",
             EVENT, product, json.dumps(before, sort_keys=True),
             json.dumps(floor.as_dict(), sort_keys=True), user)
    if notifier is not None:
        try:
            notifier.info({}, EVENT, payload)
        except Exception:  # noqa: BLE001 - the log line above stands
            LOG.exception("openstack-tee: audit notification failed")
    return view(store, conf, product)


# -- the check at release -------------------------------------------------
def _effective_for(store: FloorStore, conf: cfg.ConfigOpts,
                   product: str) -> Floor | None:
    stored = store.get(product)
    return effective(config_floor(conf, product),
                     stored.floor if stored else None)


def check_snp(store: FloorStore, conf: cfg.ConfigOpts, product: Product,
              reported: snp.TcbVersion) -> None:
    """Refuse an SNP report whose reported TCB is below the floor."""
    name = product.name.lower()
    floor = _effective_for(store, conf, name)
    if floor is None:
        return
    assert isinstance(floor, snp.TcbVersion)
    low = reported.meets(floor)
    if low:
        raise FloorError(403, "tcb_below_floor",
                         f"the platform's reported TCB is below the "
                         f"operator's floor for {name} in: "
                         f"{', '.join(low)}")


def check_tdx(store: FloorStore, conf: cfg.ConfigOpts, tcb_status: str,
              tee_tcb_svn: bytes) -> None:
    """Refuse a TDX quote whose platform is below the floor."""
    floor = _effective_for(store, conf, TDX)
    if floor is None:
        return
    assert isinstance(floor, TdxFloor)
    if floor.tcb_statuses is not None and (
            tcb_status not in floor.tcb_statuses):
        raise FloorError(403, "tcb_below_floor",
                         f"the platform's TCB status is {tcb_status}; the "
                         f"operator's floor accepts "
                         f"{', '.join(floor.tcb_statuses) or 'none'}")
    if floor.min_tee_tcb_svn is not None and (
            len(tee_tcb_svn) != TEE_TCB_SVN_SIZE or any(
                have < want for have, want in zip(
                    tee_tcb_svn, floor.min_tee_tcb_svn, strict=True))):
        raise FloorError(403, "tcb_below_floor",
                         "the TD's TEE TCB SVN is below the operator's "
                         "floor")


def list_rules() -> list[oslo_policy.RuleDefault]:
    return list(RULES)
