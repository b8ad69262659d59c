"""The ``/v1/tee`` REST contract, as a paste filter in front of Barbican.

Routes (see ARCHITECTURE.md, "REST contract"):

* ``POST/GET /v1/tee/policies``, ``GET/DELETE /v1/tee/policies/{id}``
* ``POST /v1/tee/secrets``: a new secret in the sealed store (a payload
  stored, or a key generated), whatever the project's preferred store,
  optionally bound to a policy at once (:mod:`barbican_tee.api.
  sealed_create`)
* ``PUT``/``DELETE``/``GET /v1/tee/secrets/{secret_id}/policy`` (the
  ``GET`` says whether the secret is sealed and bound, never its payload:
  nova-api checks a server's ``tee_secret`` with it at create)
* ``POST /v1/tee/challenge`` and ``POST /v1/tee/release`` (no token: the
  evidence authenticates; rate limited, see below)

It also answers every ``GET`` that Barbican would route to a sealed
secret's payload (``/v1/secrets/{id}/payload``, with or without an
extension or trailing slash, and ``/v1/secrets/{id}`` when the Accept
header asks for more than JSON, decided as Barbican decides it) with 403,
for every role: the only way out is an attested release. Everything else
passes to Barbican.

Every error body has Barbican's shape (``code``, ``title``,
``description``, which python-barbicanclient prints) and, in ``error``,
this API's stable machine-readable code.

Every release decision past the per-client rate limit (a 429 there is
not audited: the limit keeps a flood out of the log) is logged and sent as
an oslo.messaging notification
(``tee.release.granted`` / ``tee.release.denied``) with the secret id, the
failed check codes and the SHA-256 of the evidence; never key material.

Rate limits, and why anonymous callers cannot lock the guest out: the
challenge and the release take no token, so anyone who knows a secret's id
can call them. Every call counts against its client address
(the connection's, or behind ``[tee_api] trusted_proxies`` the one they
forward: :mod:`barbican_tee.api.client_addr`) and is refused with 429
over ``[tee_api] release_rate_per_client``. The
per-secret budget (``release_rate_per_secret``) is spent only by a release
whose evidence verified and met the owner's policy, just before the key is
unsealed: only a caller who would get the key anyway can use it up, so a
flood of challenges or bad releases for a secret's id, from any number of
addresses, leaves the genuine guest its budget. Challenges write nothing
(the nonce authenticates itself, :mod:`barbican_tee.api.nonce`), so they
cost no row whatever secret id they name, existing or not.
"""

from __future__ import annotations

import base64
import binascii
import collections
from collections.abc import Callable
from collections.abc import Iterable
import datetime
import functools
import hashlib
import hmac
import http
import json
import math
import posixpath
import re
import threading
import time
from typing import Any
import urllib.parse
import uuid

from barbican.api import controllers as barbican_controllers
from oslo_config import cfg
from oslo_context import context as oslo_context
from oslo_log import log as logging
import oslo_messaging
from oslo_policy import policy as oslo_policy
import webob  # type: ignore[import-untyped]

from barbican_tee.api import client_addr
from barbican_tee.api import db
from barbican_tee.api import endorsements
from barbican_tee.api import floors
from barbican_tee.api import nonce as nonce_mod
from barbican_tee.api import release_jwe
from barbican_tee.api import request_body
from barbican_tee.api import request_id
from barbican_tee.api import sealed_create
from barbican_tee.attestation import errors
from barbican_tee.attestation import evidence as evidence_mod
from barbican_tee.attestation import policy as policy_mod
from barbican_tee.attestation import sev
from barbican_tee.attestation import sev_certs
from barbican_tee.attestation import snp
from barbican_tee.attestation import source_bound
from barbican_tee.attestation import tdx
from barbican_tee import conf as tee_conf
from barbican_tee.plugin import store as sealed_store

LOG = logging.getLogger(__name__)
CONF = cfg.CONF

RULES = [
    oslo_policy.RuleDefault(
        "tee:policy:create",
        "role:admin or role:member or role:creator",
        "Create an attestation policy in one's project."),
    oslo_policy.RuleDefault(
        "tee:policy:get",
        "role:admin or role:member or role:creator or role:reader or "
        "role:observer",
        "List and show the project's attestation policies, and show which "
        "policy a sealed secret is bound to (Barbican's own secret:get "
        "rule for that secret must allow it too)."),
    oslo_policy.RuleDefault(
        "tee:policy:delete", "role:admin or role:member or role:creator",
        "Delete one of the project's attestation policies."),
    oslo_policy.RuleDefault(
        "tee:secret:bind", "role:admin or role:member or role:creator",
        "Bind a sealed secret of the project to one of its policies, or "
        "unbind it. Barbican's own secret_acls:put_patch rule for that "
        "secret (its ACLs and creator) must allow it too."),
    oslo_policy.RuleDefault(
        "tee:sev:session", "role:service or role:admin",
        "Create SEV launch sessions and trade measurements for secret "
        "packets (nova-compute's service user)."),
]

# A canonical UUID: anything else in a path is no route (404), never a
# failed conversion further down.
_UUID = (r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-"
         r"[0-9a-fA-F]{12}")
PUBLIC_ROUTES = ("challenge", "release")
_ROUTES = [
    ("POST", re.compile(r"^/v1/tee/policies/?$"), "create_policy"),
    ("GET", re.compile(r"^/v1/tee/policies/?$"), "list_policies"),
    ("GET", re.compile(rf"^/v1/tee/policies/(?P<id>{_UUID})$"),
     "show_policy"),
    ("DELETE", re.compile(rf"^/v1/tee/policies/(?P<id>{_UUID})$"),
     "delete_policy"),
    ("POST", re.compile(r"^/v1/tee/secrets/?$"), "create_secret"),
    ("PUT", re.compile(rf"^/v1/tee/secrets/(?P<id>{_UUID})/policy$"),
     "bind_secret"),
    ("DELETE", re.compile(rf"^/v1/tee/secrets/(?P<id>{_UUID})/policy$"),
     "unbind_secret"),
    ("GET", re.compile(rf"^/v1/tee/secrets/(?P<id>{_UUID})/policy$"),
     "show_binding"),
    ("POST", re.compile(r"^/v1/tee/challenge/?$"), "challenge"),
    ("POST", re.compile(r"^/v1/tee/release/?$"), "release"),
    ("PUT", re.compile(rf"^/v1/tee/instances/(?P<instance>{_UUID})/"
                       rf"secrets/(?P<id>{_UUID})$"), "bind_instance"),
    ("DELETE", re.compile(rf"^/v1/tee/instances/(?P<instance>{_UUID})$"),
     "unbind_instance"),
    ("POST", re.compile(r"^/v1/tee/sev/sessions/?$"), "sev_session"),
    ("GET", re.compile(r"^/v1/tee/floors/?$"), "list_floors"),
    ("GET", re.compile(r"^/v1/tee/floors/(?P<product>[a-z]{1,20})$"),
     "show_floor"),
    ("PUT", re.compile(r"^/v1/tee/floors/(?P<product>[a-z]{1,20})$"),
     "set_floor"),
    ("POST", re.compile(rf"^/v1/tee/sev/sessions/(?P<id>{_UUID})"
                        r"/measurement$"), "sev_measurement"),
    ("POST", re.compile(r"^/v1/tee/endorsements/?$"), "import_endorsements"),
    ("GET", re.compile(r"^/v1/tee/endorsements/?$"), "list_endorsements"),
]
# OVMF's GUID for a disk-encryption key injected at launch (the alias
# "luks-key" of libvirt's virt-qemu-sev-validate).
SEV_LUKS_KEY_GUID = "736869e5-84f0-4973-92ec-06879ce3da0b"
SEV_SESSION_TTL = 600
# What a release answer says of its lease (also in the audit record).
LEASE_FIELDS = ("max_age", "lease_expires_at")
_SECRET_ID = re.compile(_UUID)
_MAX_BODY = 256 * 1024
# The highest record generation this worker process has seen per secret,
# shared by both filter instances of the pipeline (token and token-less
# routes): a record rolled back as a whole behind a live worker's back is
# refused by it. A whole-database rollback across restarts is the
# documented limit (the admin guide's trust model).
_GENERATIONS_KEPT = 100_000
_GENERATIONS: collections.OrderedDict[str, int] = collections.OrderedDict()
_GENERATIONS_LOCK = threading.Lock()
# JSON bodies nest at most this deep (a policy or evidence needs a few
# levels); deeper input is refused before it can exhaust the stack.
_MAX_DEPTH = 32
# A UTF-16 surrogate on its own: JSON's \ud800 escapes decode to one, and
# no UTF-8 database column, log line or JSON reply can carry it.
_SURROGATE = re.compile("[\ud800-\udfff]")


def _database_unavailable() -> APIError:
    return APIError(503, "database_unavailable", "the database did not "
                    "answer (a failover or restart?); retry shortly")


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError("number out of range")
    return value


def _check_text(text: str) -> None:
    """Refuse a string that is not Unicode text (a lone surrogate)."""
    # ASCII (evidence, keys, ids: nearly every string) is checked in C.
    if not text.isascii() and _SURROGATE.search(text):
        raise APIError(400, "body_not_text", "a string in the request body "
                       "holds a lone UTF-16 surrogate (an unpaired \\uD800-"
                       "\\uDFFF escape): not text")


_REASONS = {413: "Payload Too Large"}

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def api_path(environ: dict[str, Any]) -> str:
    """The request's path from Barbican's API root: ``/v1/...``.

    Paste's urlmap moves the ``/v1`` it mounts our pipeline at into
    ``SCRIPT_NAME``, after the path the server itself is mounted under,
    if any: devstack serves Barbican at ``/key-manager`` (Apache's
    ``ProxyPass`` to uwsgi), so ``SCRIPT_NAME`` is ``/key-manager/v1``
    and ``PATH_INFO`` ``/tee/challenge``; ``http_proxy_to_wsgi`` puts an
    ``X-Forwarded-Prefix`` in front as well. Barbican routes on
    ``PATH_INFO`` below that mount, and so do we. A filter outside such a
    pipeline sees ``/v1/...`` in ``PATH_INFO`` itself.
    """
    script = str(environ.get("SCRIPT_NAME", "")).rstrip("/")
    info = str(environ.get("PATH_INFO", ""))
    if script.endswith("/v1"):
        return "/v1" + info
    return info


def _payload_secret(path: str, environ: dict[str, Any]) -> str | None:
    """The secret whose payload Barbican would answer ``GET path`` with.

    Barbican (pecan) routes ``/v1/secrets/{id}/payload`` to the payload
    and ``/v1/secrets/{id}`` to the payload unless the Accept header is
    missing, ``application/json`` or ``*/*``. Pecan first strips a file
    extension it knows from the last segment (``/payload.txt``,
    ``/{id}.json``) and ignores empty segments (``//``, a trailing
    slash). This matches a superset: every segment loses anything from
    its first dot, dot segments are resolved and empty ones dropped, and
    anything under ``/payload`` counts, so no spelling reaches the store.
    A path it over-matches is one Barbican answers with 404 anyway.
    """
    segments = [part.split(".", 1)[0]
                for part in posixpath.normpath(path).split("/")]
    segments = [part for part in segments if part]
    if len(segments) < 3 or segments[:2] != ["v1", "secrets"] or (
            not _SECRET_ID.fullmatch(segments[2])):
        return None
    secret_id = segments[2].lower()
    if len(segments) == 3:
        # The same test Barbican's SecretController.on_get makes.
        if barbican_controllers.is_json_request_accept(
                webob.Request(environ)):
            return None
        return secret_id
    return secret_id if segments[3] == "payload" else None


class APIError(Exception):
    def __init__(self, status: int, code: str, message: str,
                 codes: list[str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.codes = codes or [code]


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _check_barbican_hooks() -> None:
    """Fail at startup if Barbican no longer has what binding relies on.

    The binding routes evaluate Barbican's own secret ACL rule with
    Barbican's code (``barbican.api.controllers``); if a Barbican release
    renames it, binding must not silently skip the check: barbican-api
    refuses to start instead, naming what is missing.
    """
    import inspect

    from barbican.model import repositories

    controllers = barbican_controllers
    missing = []
    enforce = getattr(controllers, "_do_enforce_rbac", None)
    if enforce is None or list(inspect.signature(enforce).parameters)[
            :4] != ["inst", "req", "action_name", "ctx"]:
        missing.append("barbican.api.controllers._do_enforce_rbac(inst, "
                       "req, action_name, ctx)")
    if not hasattr(getattr(controllers, "ACLMixin", None),
                   "get_acl_tuple"):
        missing.append("barbican.api.controllers.ACLMixin.get_acl_tuple")
    repo = getattr(repositories, "get_secret_repository", None)
    if repo is None or not hasattr(repositories, "clear"):
        missing.append("barbican.model.repositories.get_secret_repository"
                       "/clear")
    # POST /v1/tee/secrets stores through Barbican's own helpers.
    missing.extend(sealed_create.check_barbican_hooks())
    if missing:
        raise RuntimeError(
            "openstack-tee cannot enforce Barbican's secret ACLs on "
            "binding with this Barbican: missing " + "; ".join(missing))


# The database URLs whose schema this process found at head.
_SCHEMA_AT_HEAD: set[str] = set()


def _check_schema(conf: cfg.ConfigOpts) -> None:
    """Fail at startup unless the suite's tables are at this release's head.

    Nothing creates or alters a table on the request path: the schema is
    ``openstack-tee db upgrade``'s job, and barbican-api refuses to start
    before it has run (the message names the command). Checked once per
    process, on the engine the filters then use for requests; a failed
    check is not remembered (each filter refuses).
    """
    from barbican_tee import migrations

    url = conf.database.connection
    if url in _SCHEMA_AT_HEAD:
        return
    migrations.check(db.process_engine(url, conf))
    _SCHEMA_AT_HEAD.add(url)


def _session_label(session_id: str, secret_id: str, instance_uuid: str,
                   launch_policy: int, expires_at: datetime.datetime) -> str:
    """What a sealed SEV launch session is for, and until when (its AAD).

    ``expires_at``: naive UTC, whole seconds (as every database keeps it).
    """
    expires = int(expires_at.replace(tzinfo=datetime.UTC).timestamp())
    return (f"sev-session:{session_id}:{secret_id}:{instance_uuid}:"
            f"{int(launch_policy)}:{expires}")


# A policy as stored (its JSON, UTF-8) is at most this long: MariaDB's
# TEXT column holds 64 KiB, and a longer document was a 500 there only.
POLICY_DOCUMENT_MAX = 32 * 1024


def expected_report_data(nonce: str,
                         public: release_jwe.Recipient) -> bytes:
    """SHA-512(nonce bytes || RFC 7638 SHA-256 thumbprint of the JWK)."""
    return hashlib.sha512(_b64url_decode(nonce)
                          + public.thumbprint()).digest()


class TEEAPIFilter:
    """WSGI filter serving ``/v1/tee`` in front of Barbican's app."""

    def __init__(self, app: WSGIApp, conf: cfg.ConfigOpts = CONF,
                 routes: str = "all") -> None:
        """Serve ``routes``: ``public``, ``token`` or ``all``.

        ``public`` (challenge and release) sits before the context
        middleware, ``token`` (everything else) after it; requests for the
        other kind pass through untouched.
        """
        if routes not in ("public", "token", "all"):
            raise ValueError(f"routes must be public, token or all, not "
                             f"{routes!r}")
        self.app = app
        self.conf = conf
        self.routes = routes
        tee_conf.register_opts(conf)
        # A bad entry stops the API here rather than trusting too much.
        self.trusted_proxies = client_addr.parse_trusted(
            conf.tee_api.trusted_proxies)
        # A bad KEK stops the API here, loudly, like the store plugin.
        self.keyring = sealed_store.load_keyring(conf)
        self._store: db.Store | None = None
        self._store_lock = threading.Lock()
        self.evidence = evidence_mod.EvidenceVerifiers(conf)
        self.enforcer = oslo_policy.Enforcer(conf)
        self.enforcer.register_defaults(RULES)
        self.enforcer.register_defaults(floors.RULES)
        self.enforcer.register_defaults(endorsements.RULES)
        self.notifier = self._make_notifier(conf)
        if routes != "public":
            _check_barbican_hooks()
        _check_schema(conf)

    @classmethod
    def factory(cls, global_config: dict[str, str],
                **local_config: str) -> Callable[[WSGIApp], TEEAPIFilter]:
        def make(app: WSGIApp) -> TEEAPIFilter:
            return cls(app, routes=local_config.get("routes", "all"))
        return make

    @staticmethod
    def _make_notifier(conf: cfg.ConfigOpts) -> Any:
        try:
            transport = oslo_messaging.get_notification_transport(conf)
        except Exception:  # noqa: BLE001 - audit log still has everything
            LOG.warning("openstack-tee: no notification transport; release "
                        "decisions are logged only")
            return None
        return oslo_messaging.Notifier(transport,
                                       publisher_id="barbican-tee",
                                       topics=["notifications"])

    @property
    def store(self) -> db.Store:
        # Created on first use, on this process's engine (db.process_engine:
        # one per process, shared with the schema check and the other
        # filter; a forked worker opens its own connections).
        if self._store is None:
            with self._store_lock:
                if self._store is None:
                    self._store = db.Store(
                        db.process_engine(self.conf.database.connection,
                                          self.conf),
                        self.keyring)
        return self._store

    @functools.cached_property
    def floor_store(self) -> floors.FloorStore:
        return floors.FloorStore(self.store.engine, self.keyring)

    @functools.cached_property
    def endorsement_store(self) -> endorsements.EndorsementStore:
        return endorsements.EndorsementStore(self.store.engine,
                                             self.keyring)

    # -- WSGI -------------------------------------------------------------
    def __call__(self, environ: dict[str, Any],
                 start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = api_path(environ)
        method = environ.get("REQUEST_METHOD", "GET")
        if path.startswith("/v1/tee/") or path == "/v1/tee":
            if self.routes == "all" or (self.routes == "public") == (
                    self._route_name(method, path) in PUBLIC_ROUTES):
                if self.routes == "public":
                    # In front of Barbican's middlewares (see
                    # barbican_tee.api.paste): a request id of its own,
                    # as oslo.middleware's request_id filter gives one.
                    start_response = request_id.ensure(environ,
                                                       start_response)
                    # No context middleware ran before the token-less
                    # routes: without one of their own, log lines (the
                    # audit's) would name the user, project and request
                    # of whatever request this thread served before.
                    oslo_context.RequestContext(
                        request_id=environ[request_id.ENV_REQUEST_ID],
                        global_request_id=environ.get(
                            request_id.GLOBAL_REQ_ID),
                        overwrite=True)
                return self._dispatch(environ, start_response, method,
                                      path)
            return self.app(environ, start_response)
        if method == "GET" and self.routes != "public":
            secret_id = _payload_secret(path, environ)
            if secret_id is not None and self._is_sealed(secret_id):
                return self._error(
                    start_response, APIError(
                        403, "secret_sealed", "This secret is sealed: it "
                        "is released only to an attested guest, through "
                        "POST /v1/tee/release, for every role including "
                        "admin."))
        return self.app(environ, start_response)

    @staticmethod
    def _route_name(method: str, path: str) -> str | None:
        for verb, pattern, name in _ROUTES:
            if verb == method and pattern.match(path):
                return name
        return None

    def _is_sealed(self, secret_id: str) -> bool:
        meta = self.store.store_metadata(secret_id)
        return meta.get("plugin_name") == sealed_store.PLUGIN_PATH

    def _dispatch(self, environ: dict[str, Any],
                  start_response: Callable[..., Any], method: str,
                  path: str) -> Iterable[bytes]:
        for verb, pattern, name in _ROUTES:
            match = pattern.match(path)
            if match and verb == method:
                try:
                    status, body = getattr(self, name)(
                        environ, **match.groupdict())
                except APIError as exc:
                    return self._error(start_response, exc)
                except Exception as exc:  # noqa: BLE001 - never leak
                    if db.unavailable(exc):
                        # The error's text may hold the statement's
                        # parameters: its type only.
                        LOG.warning("openstack-tee: %s %s: database "
                                    "unavailable (%s)", method, path,
                                    type(exc).__name__)
                        return self._error(start_response,
                                           _database_unavailable())
                    LOG.exception("openstack-tee: %s %s failed", method,
                                  path)
                    return self._error(start_response, APIError(
                        500, "internal_error", "The attestation service "
                        "failed; see the barbican-api log."))
                return self._reply(start_response, status, body)
        return self._error(start_response, APIError(
            404, "not_found", f"no route {method} {path}"))

    @staticmethod
    def _reason(status: int) -> str:
        try:
            return _REASONS.get(status) or http.HTTPStatus(status).phrase
        except ValueError:
            return ""

    @classmethod
    def _error(cls, start_response: Callable[..., Any],
               exc: APIError) -> list[bytes]:
        """An error in Barbican's shape, with our stable code in it.

        python-barbicanclient (and so ``openstack secret ...``) prints
        ``title: description``; this API's clients read ``error.code``.
        """
        error: dict[str, Any] = {"code": exc.code, "message": str(exc)}
        if len(exc.codes) > 1:
            error["codes"] = exc.codes
        return cls._reply(start_response, exc.status, {
            "code": exc.status, "title": cls._reason(exc.status),
            "description": str(exc), "error": error})

    @classmethod
    def _reply(cls, start_response: Callable[..., Any], status: int,
               body: dict[str, Any] | None) -> list[bytes]:
        data = b"" if body is None else json.dumps(body).encode()
        headers = [("Content-Length", str(len(data)))]
        if body is not None:
            headers.append(("Content-Type", "application/json"))
        start_response(f"{status} {cls._reason(status)}", headers)
        return [data]

    # -- helpers ------------------------------------------------------------
    @staticmethod
    def _body(environ: dict[str, Any]) -> bytes:
        """The request body, at most ``_MAX_BODY`` bytes of it."""
        try:
            return request_body.read(environ, _MAX_BODY) or b""
        except request_body.LengthInvalid:
            raise APIError(400, "body_length_invalid",
                           "Content-Length is not a byte count") from None
        except request_body.TooLarge:
            raise APIError(413, "body_too_large", "request bodies are "
                           f"limited to {_MAX_BODY} bytes") from None
        except OSError:
            # A body cut short or a malformed chunk (the server's errors
            # are IOErrors).
            raise APIError(400, "body_unreadable",
                           "the request body could not be read") from None

    @staticmethod
    def _json(environ: dict[str, Any]) -> dict[str, Any]:
        raw = TEEAPIFilter._body(environ)
        too_deep = APIError(400, "body_too_deep", "JSON in request bodies "
                            f"nests at most {_MAX_DEPTH} levels deep")
        try:
            body = json.loads(raw or b"{}", parse_constant=_no_constant,
                              parse_float=_finite_float)
        except RecursionError:
            raise too_deep from None
        except ValueError:
            raise APIError(400, "body_not_json",
                           "the request body is not JSON (NaN, Infinity "
                           "and numbers beyond a double are not "
                           "accepted)") from None
        if not isinstance(body, dict):
            raise APIError(400, "body_not_object",
                           "the request body must be a JSON object")
        # Iteratively, so that checking the depth cannot recurse.
        pending: list[tuple[Any, int]] = [(body, 1)]
        while pending:
            value, depth = pending.pop()
            if isinstance(value, str):
                _check_text(value)
                continue
            if isinstance(value, dict):
                for key in value:
                    _check_text(key)
                value = list(value.values())
            if isinstance(value, list):
                if depth > _MAX_DEPTH:
                    raise too_deep
                pending.extend((item, depth + 1) for item in value)
        return body

    def _context(self, environ: dict[str, Any], rule: str) -> Any:
        ctx = environ.get("barbican.context")
        if ctx is None or not getattr(ctx, "project_id", None):
            raise APIError(401, "unauthenticated",
                           "this route needs a token")
        creds = {"roles": list(ctx.roles or []),
                 "project_id": ctx.project_id,
                 "user_id": getattr(ctx, "user_id", None)}
        if not self.enforcer.enforce(rule, {"project_id": ctx.project_id},
                                     creds):
            raise APIError(403, "forbidden",
                           f"policy does not allow {rule}")
        return ctx

    def _rate_client(self, environ: dict[str, Any]) -> None:
        """Count a challenge or release against its client address.

        The connection's address, or the one a trusted proxy forwarded:
        a header from anyone else would let a client charge another
        address, or none.
        """
        client = self._client(environ)
        if not self.store.hit(f"client:{client}", int(time.time() // 60),
                              self.conf.tee_api.release_rate_per_client):
            raise self._client_limited()

    @staticmethod
    def _client_limited() -> APIError:
        return APIError(429, "rate_limited",
                        "too many attestation requests from this "
                        "address; retry in a minute")

    def _client(self, environ: dict[str, Any]) -> str:
        return client_addr.client_address(
            environ, self.trusted_proxies,
            self.conf.tee_api.forwarded_header.lower(),
            self.conf.tee_api.client_ipv6_prefix)

    def _rate_secret(self, secret_id: str) -> None:
        """Count a release that verified against the secret's budget.

        Called only once the evidence met the owner's policy: a caller
        who cannot get the key cannot spend the budget either.
        """
        if not self.store.hit(f"secret:{secret_id}", int(time.time() // 60),
                              self.conf.tee_api.release_rate_per_secret):
            raise APIError(429, "rate_limited",
                           "too many releases of this secret; retry in a "
                           "minute with a new challenge")

    @functools.cached_property
    def _nonce_key(self) -> bytes:
        # A nonce issued under a KEK that is no longer current is refused
        # (nonce_unknown): it lived at most nonce_ttl seconds anyway.
        return self.keyring.current.derive("nonce")

    def _issue_nonce(self, secret_id: str) -> tuple[str, int]:
        expires = int(time.time()) + self.conf.tee_api.nonce_ttl
        return nonce_mod.issue(self._nonce_key, secret_id, expires), expires

    def _check_nonce(self, nonce: str, secret_id: str) -> tuple[str, int]:
        """The spent-nonce key and expiry of a live nonce of this secret.

        Refuses a nonce not issued for this secret, or expired, before it
        can cost a database row; the caller then spends it with one
        INSERT (:meth:`db.Store.admit_release`: of concurrent releases of
        one nonce, exactly one wins).
        """
        code, expires = nonce_mod.check(self._nonce_key, nonce, secret_id,
                                        int(time.time()))
        if code == nonce_mod.EXPIRED:
            raise APIError(403, code, "the challenge expired; ask for a "
                           "new one")
        if code is not None:
            raise APIError(403, nonce_mod.UNKNOWN,
                           "unknown or already used nonce")
        return nonce_mod.spent_digest(nonce), expires

    @staticmethod
    def _secret_id(body: dict[str, Any]) -> str:
        value = body.get("secret_id")
        try:
            return str(uuid.UUID(str(value)))
        except ValueError:
            raise APIError(400, "secret_id_invalid",
                           "secret_id must be a secret's UUID") from None

    def _policy_view(self, row: dict[str, Any]) -> dict[str, Any]:
        doc: dict[str, Any] = json.loads(row["document"])
        doc.update(id=row["id"], policy_ref=f"/v1/tee/policies/{row['id']}",
                   created=row["created_at"].isoformat() + "Z")
        return doc

    # -- routes: policies ---------------------------------------------------
    def create_policy(self, environ: dict[str, Any]) -> tuple[int, Any]:
        ctx = self._context(environ, "tee:policy:create")
        body = self._json(environ)
        try:
            parsed = policy_mod.Policy.from_dict(body)
        except errors.InvalidInput as exc:
            raise APIError(400, exc.code, exc.message) from None
        if not parsed.measurements and not (
                parsed.tee == "amd-sev-snp" and parsed.id_key_digests):
            # Without a launch measurement (or an owner-signed SNP ID
            # block) every genuine guest of the model would qualify.
            raise APIError(400, "policy_measurements",
                           "a policy must allow at least one launch "
                           "measurement (for SEV-SNP, or name the ID key "
                           "digests of an owner-signed ID block): without "
                           "one any genuine guest would get the secret")
        limit = self.conf.tee_attestation.lease_max_age
        if parsed.max_age is not None and parsed.max_age > limit:
            raise APIError(400, "policy_max_age",
                           f"max_age may be at most {limit} seconds here "
                           "([tee_attestation] lease_max_age)")
        document = parsed.to_dict()
        size = len(json.dumps(document, sort_keys=True).encode())
        if size > POLICY_DOCUMENT_MAX:
            raise APIError(400, "policy_too_large",
                           f"the policy is {size} bytes as stored; at most "
                           f"{POLICY_DOCUMENT_MAX} (fewer measurements or "
                           "key digests)")
        policy_id = str(uuid.uuid4())
        self.store.create_policy(policy_id, ctx.project_id, document)
        return 201, {"id": policy_id,
                     "policy_ref": f"/v1/tee/policies/{policy_id}"}

    def list_policies(self, environ: dict[str, Any]) -> tuple[int, Any]:
        ctx = self._context(environ, "tee:policy:get")
        rows = self.store.list_policies(ctx.project_id)
        return 200, {"policies": [self._policy_view(r) for r in rows],
                     "total": len(rows)}

    def _own_policy(self, ctx: Any, policy_id: str) -> dict[str, Any]:
        row = self.store.get_policy(policy_id)
        if row is None or row["project_id"] != ctx.project_id:
            raise APIError(404, "policy_not_found",
                           f"no policy {policy_id} in this project")
        return row

    def show_policy(self, environ: dict[str, Any],
                    id: str) -> tuple[int, Any]:  # noqa: A002
        ctx = self._context(environ, "tee:policy:get")
        return 200, self._policy_view(self._own_policy(ctx, id))

    def delete_policy(self, environ: dict[str, Any],
                      id: str) -> tuple[int, Any]:  # noqa: A002
        """Delete a policy; the secrets bound to it are unbound first.

        Unbinding another user's secret needs the rights Barbican requires
        to change that secret's ACL: without them on every bound secret,
        nothing changes.
        """
        ctx = self._context(environ, "tee:policy:delete")
        self._own_policy(ctx, id)
        bound = self.store.secrets_with_metadata("tee_policy", id)
        for secret_id in bound:
            if not self._may_change_secret(environ, ctx, secret_id):
                raise APIError(403, "policy_in_use",
                               "the policy is bound to secrets whose "
                               "binding you may not change; their owners "
                               "(or a project admin) must unbind them "
                               "first")
        for secret_id in bound:
            try:
                self._change_binding(
                    secret_id, ctx.project_id,
                    lambda rec: rec.binding.policy_id == id,
                    policy_id=None, policy_pin=None, instance_uuid=None,
                    retired=False)
            except APIError as exc:
                # A record that does not open releases to no one anyway.
                LOG.warning("openstack-tee: secret %s left as it is while "
                            "deleting policy %s: %s", secret_id, id,
                            exc.code)
        self.store.delete_policy(id)
        return 204, None

    def _secret_to_change(self, environ: dict[str, Any], ctx: Any,
                          secret_id: str) -> None:
        """404 unless the project's; 403 unless Barbican lets ctx change it.
        """
        if self.store.secret_project(secret_id) != ctx.project_id:
            raise APIError(404, "secret_not_found",
                           f"no secret {secret_id} in this project")
        if not self._may_change_secret(environ, ctx, secret_id):
            raise APIError(403, "secret_forbidden",
                           "Barbican's rules for this secret (its ACL and "
                           "creator) do not let you change who may "
                           "receive it")
        if not self._is_sealed(secret_id):
            raise APIError(409, "secret_not_sealed",
                           "only secrets in the tee_sealed store can be "
                           "bound: any other secret is readable through "
                           "the payload API, so a policy would protect "
                           "nothing")

    def bind_secret(self, environ: dict[str, Any],
                    id: str) -> tuple[int, Any]:  # noqa: A002
        ctx = self._context(environ, "tee:secret:bind")
        body = self._json(environ)
        secret_id = str(uuid.UUID(id))
        policy_id = str(body.get("policy_id", ""))
        self._bind_policy(environ, ctx, secret_id, policy_id)
        return 200, {"secret_id": secret_id, "policy_id": policy_id}

    def _bind_policy(self, environ: dict[str, Any], ctx: Any,
                     secret_id: str, policy_id: str) -> None:
        """Bind the secret to the policy, if Barbican's ACL rules allow.

        The caller has checked ``tee:secret:bind``.
        """
        self._secret_to_change(environ, ctx, secret_id)
        row = self._own_policy(ctx, policy_id)
        # A new binding starts over: no instance, not retired.
        self._change_binding(secret_id, ctx.project_id, None,
                             policy_id=policy_id,
                             policy_pin=db.policy_pin(row),
                             instance_uuid=None, retired=False)

    def create_secret(self, environ: dict[str, Any]) -> tuple[int, Any]:
        """A new sealed secret, whatever the project's preferred store.

        Barbican's ``secrets:post`` rule, validators and quota apply as for
        ``POST /v1/secrets``; with ``policy``, ``tee:secret:bind`` and the
        bind route's checks too, and the secret is bound before the answer
        (or, if binding fails, deleted again). The answer is Barbican's:
        201 ``{secret_ref}`` (and ``policy_id`` when bound).
        """
        ctx = environ.get("barbican.context")
        if ctx is None or not getattr(ctx, "project_id", None):
            raise APIError(401, "unauthenticated",
                           "this route needs a token")
        if not self._barbican_allows_create(environ, ctx):
            raise APIError(403, "forbidden",
                           "Barbican's policy does not allow secrets:post")
        body = self._json(environ)
        policy_id = body.pop("policy", None)
        try:
            new = sealed_create.parse(body)
        except sealed_create.CreateError as exc:
            raise APIError(exc.status, exc.code, str(exc)) from None
        if policy_id is not None:
            try:
                policy_id = str(uuid.UUID(str(policy_id)))
            except ValueError:
                raise APIError(400, "policy_id_invalid",
                               "policy must be a policy's UUID") from None
            # Checked before anything is stored; checked again on binding.
            self._context(environ, "tee:secret:bind")
            self._own_policy(ctx, policy_id)
        try:
            secret_id = sealed_create.create(new, ctx.project_id,
                                             getattr(ctx, "user_id", None))
        except sealed_create.CreateError as exc:
            raise APIError(exc.status, exc.code, str(exc)) from None
        LOG.info("openstack-tee: sealed secret %s %s in project %s",
                 secret_id, "generated" if new.generate else "stored",
                 ctx.project_id)
        answer = {"secret_ref": sealed_create.secret_href(environ,
                                                          secret_id)}
        if policy_id is not None:
            try:
                self._bind_policy(environ, ctx, secret_id, policy_id)
            except Exception as exc:
                # Any failure (a database error too, not only a refusal):
                # an unbound sealed secret the client never learns the id
                # of would only count toward its quota.
                self._delete_unbound(secret_id, ctx.project_id, exc)
                raise
            answer["policy_id"] = policy_id
        return 201, answer

    @staticmethod
    def _delete_unbound(secret_id: str, project_id: str,
                        cause: BaseException) -> None:
        """Delete a secret just created whose binding failed (``cause``).

        The deletion's own failure is logged (its type only: no secret
        material) and never hides ``cause``, which the caller re-raises.
        """
        try:
            sealed_create.delete(secret_id, project_id)
        except Exception as exc:
            LOG.error("openstack-tee: sealed secret %s left unbound: its "
                      "binding failed (%s) and deleting it failed (%s)",
                      secret_id, type(cause).__name__, type(exc).__name__)
            return
        LOG.info("openstack-tee: sealed secret %s deleted: its binding "
                 "failed (%s)", secret_id, type(cause).__name__)

    def unbind_secret(self, environ: dict[str, Any],
                      id: str) -> tuple[int, Any]:  # noqa: A002
        ctx = self._context(environ, "tee:secret:bind")
        secret_id = str(uuid.UUID(id))
        self._secret_to_change(environ, ctx, secret_id)
        self._change_binding(secret_id, ctx.project_id, None,
                             policy_id=None, policy_pin=None,
                             instance_uuid=None, retired=False)
        return 204, None

    def show_binding(self, environ: dict[str, Any],
                     id: str) -> tuple[int, Any]:  # noqa: A002
        """Whether the secret is sealed, and the policy it is bound to.

        For the project's users whom Barbican lets read the secret's
        metadata (``secret:get``, with its ACLs and creator rules); the
        payload never leaves. nova-api asks this at server create.
        """
        ctx = self._context(environ, "tee:policy:get")
        secret_id = str(uuid.UUID(id))
        if self.store.secret_project(secret_id) != ctx.project_id:
            raise APIError(404, "secret_not_found",
                           f"no secret {secret_id} in this project")
        if not self._barbican_allows(environ, ctx, secret_id,
                                     "secret:get"):
            raise APIError(403, "secret_forbidden",
                           "Barbican's rules for this secret (its ACL and "
                           "creator) do not let you read it")
        if not self._is_sealed(secret_id):
            raise APIError(409, "secret_not_sealed",
                           "the secret is not in the tee_sealed store: it "
                           "is readable through the payload API, so no "
                           "attestation protects it")
        # The binding as the authenticated record states it, not the
        # store metadata's index copy.
        _meta, plaintext, record = self._open_record(secret_id)
        del plaintext
        return 200, {"secret_id": secret_id,
                     "policy_id": record.binding.policy_id,
                     "sealed": True}

    def _may_change_secret(self, environ: dict[str, Any], ctx: Any,
                           secret_id: str) -> bool:
        """Whether Barbican's own rules let ``ctx`` change the secret's ACL.

        Binding decides who may receive the secret, which is what its ACL
        decides.
        """
        return self._barbican_allows(environ, ctx, secret_id,
                                     "secret_acls:put_patch")

    @staticmethod
    def _barbican_allows_create(environ: dict[str, Any], ctx: Any) -> bool:
        """Whether Barbican's own ``secrets:post`` rule allows ``ctx``.

        Evaluated as Barbican's SecretsController does (no target).
        """
        try:
            barbican_controllers._do_enforce_rbac(  # noqa: SLF001
                barbican_controllers.ACLMixin(), webob.Request(environ),
                "secrets:post", ctx)
            return True
        except oslo_policy.PolicyNotAuthorized:
            return False

    def _barbican_allows(self, environ: dict[str, Any], ctx: Any,
                         secret_id: str, rule: str) -> bool:
        """Whether Barbican's own ``rule`` allows ``ctx`` on the secret.

        Evaluated by Barbican's code with Barbican's policy (including an
        operator's overrides), on the target Barbican itself builds from
        the secret's ACLs, project and creator.
        """
        from barbican.model import repositories

        try:
            secret = repositories.get_secret_repository().get_secret_by_id(
                entity_id=secret_id, suppress_exception=True)
            if secret is None:
                return False
            holder = barbican_controllers.ACLMixin()
            holder.secret = secret
            barbican_controllers._do_enforce_rbac(  # noqa: SLF001
                holder, webob.Request(environ), rule, ctx)
            return True
        except oslo_policy.PolicyNotAuthorized:
            return False
        finally:
            repositories.clear()

    # -- the sealed record: who may receive a secret -------------------------
    def _open_record(self, secret_id: str, meta: dict[str, str] | None = None
                     ) -> tuple[dict[str, str], bytes, sealed_store.Record]:
        """The secret's sealed record, authenticated, and its plaintext."""
        if meta is None:
            meta = self.store.store_metadata(secret_id)
        if meta.get("plugin_name") != sealed_store.PLUGIN_PATH:
            raise APIError(403, "secret_not_sealed",
                           "the secret is not in the sealed store")
        try:
            plaintext, record = sealed_store.open_secret(
                self.keyring, meta, secret_id)
        except sealed_store.SealedSecretError as exc:
            raise APIError(403, exc.code, str(exc)) from None
        self._check_generation(secret_id, record.binding.generation)
        return meta, plaintext, record

    @staticmethod
    def _check_generation(secret_id: str, generation: int) -> None:
        """Refuse a record older than one this worker has already seen."""
        with _GENERATIONS_LOCK:
            seen = _GENERATIONS.get(secret_id, -1)
            if generation < seen:
                raise APIError(403, "binding_rolled_back",
                               "the secret's sealed record is older than "
                               "one this service has already seen: it was "
                               "rolled back in the database")
            _GENERATIONS[secret_id] = generation
            _GENERATIONS.move_to_end(secret_id)
            while len(_GENERATIONS) > _GENERATIONS_KEPT:
                _GENERATIONS.popitem(last=False)

    def _change_binding(self, secret_id: str, project_id: str,
                        check: Callable[[sealed_store.Record], bool] | None,
                        **changes: Any) -> sealed_store.Record:
        """Re-seal the secret's record with ``changes``, next generation.

        ``check`` sees the current record; False leaves it as it is
        (409). The write is a compare-and-swap of the record's rows, so
        concurrent changes never mix; the loser tries again.
        """
        for _ in range(5):
            meta, _plain, record = self._open_record(secret_id)
            del _plain
            if record.project_id != project_id:
                raise APIError(403, "sealed_record_moved",
                               "the sealed record belongs to another "
                               "project")
            if check is not None and not check(record):
                raise APIError(409, "binding_changed",
                               "the secret's binding is not what this "
                               "change expects")
            try:
                new, updated = sealed_store.rebind(self.keyring, meta,
                                                   secret_id, **changes)
            except sealed_store.SealedSecretError as exc:
                raise APIError(403, exc.code, str(exc)) from None
            if self.store.replace_store_metadata(secret_id, meta, new):
                self._check_generation(secret_id,
                                       updated.binding.generation)
                return updated
        raise APIError(409, "binding_conflict",
                       "the secret's binding kept changing; retry")

    def _record_policy(self, record: sealed_store.Record,
                       read: tuple[str, dict[str, Any] | None] | None = None
                       ) -> tuple[policy_mod.Policy, str]:
        """The policy the record pins, verified, and its id.

        ``read``: (id, row or None) of a policy already read in this
        request; used only if its id is the record's policy id, and
        checked like a row read now.
        """
        binding = record.binding
        if binding.policy_id is None:
            raise APIError(403, "secret_no_policy",
                           "the secret is not bound to an attestation "
                           "policy")
        if read is not None and read[0] == binding.policy_id:
            row = read[1]
        else:
            row = self.store.get_policy(binding.policy_id)
        if row is None:
            raise APIError(403, "policy_deleted",
                           "the secret's attestation policy was deleted")
        if not self.store.policy_intact(row) or (
                row["project_id"] != record.project_id) or (
                not hmac.compare_digest(db.policy_pin(row),
                                        binding.policy_pin or "")):
            raise APIError(403, "policy_tampered",
                           "the attestation policy does not authenticate "
                           "or is not the one the secret was bound to")
        try:
            return (policy_mod.Policy.from_stored(row["document"]),
                    str(row["id"]))
        except errors.InvalidInput:
            raise APIError(403, "policy_tampered",
                           "the stored policy is not valid") from None

    @staticmethod
    def _live_instance(record: sealed_store.Record) -> str | None:
        """The instance the record is tied to, unless it was deleted."""
        if record.binding.retired:
            raise APIError(403, "instance_deleted",
                           "the instance this secret was bound to was "
                           "deleted; it is released to no one")
        return record.binding.instance_uuid

    # -- routes: attested release --------------------------------------------
    def challenge(self, environ: dict[str, Any]) -> tuple[int, Any]:
        body = self._json(environ)
        secret_id = self._secret_id(body)
        self._rate_client(environ)
        # Nothing is written: the nonce carries its secret, expiry and MAC.
        nonce, expires = self._issue_nonce(secret_id)
        when = datetime.datetime.fromtimestamp(expires, datetime.UTC)
        return 201, {"nonce": nonce,
                     "expires_at": when.replace(tzinfo=None).isoformat()
                     + "Z"}

    def release(self, environ: dict[str, Any]) -> tuple[int, Any]:
        body = self._json(environ)
        secret_id = self._secret_id(body)
        client = self._client(environ)
        evidence = body.get("evidence")
        # The checks that need no database first; their refusal is
        # answered (and audited) only after the client's rate limit, as
        # any refusal: the request is counted whatever they say.
        refused: APIError | None = None
        nonce: str | None = None
        public: release_jwe.Recipient | None = None
        digest: str | None = None
        expires = 0
        try:
            nonce, public = self._release_input(body, evidence)
            digest, expires = self._check_nonce(nonce, secret_id)
        except APIError as exc:
            refused = exc
        now = int(time.time())
        audit: dict[str, Any] = {"secret_id": secret_id}
        try:
            admission = self.store.admit_release(
                f"client:{client}", now // 60,
                self.conf.tee_api.release_rate_per_client, secret_id,
                digest, expires, now - nonce_mod.PRUNE_GRACE,
                reads=self._release_reads(evidence) if refused is None
                else ())
        except Exception as exc:
            if not db.unavailable(exc):
                raise
            admission = None
        if admission is not None and (
                admission.count > self.conf.tee_api.release_rate_per_client):
            raise self._client_limited()
        audit.update({
            "evidence_sha256": hashlib.sha256(json.dumps(
                evidence, sort_keys=True).encode()).hexdigest(),
            "client": client})
        if body.get("renewal") is True:
            # The guest's word, recorded for the operator and never used
            # for any decision.
            audit["renewal"] = True
        try:
            if admission is None:
                raise _database_unavailable()
            if refused is not None:
                raise refused
            if not admission.spent:
                raise APIError(403, nonce_mod.UNKNOWN,
                               "unknown or already used nonce")
            assert nonce is not None and public is not None and (
                isinstance(evidence, dict))
            try:
                with db.using_prefetched(admission.reads):
                    answer, policy_id = self._release(
                        nonce, public, secret_id, evidence, admission)
            except Exception as exc:
                if isinstance(exc, APIError) or not db.unavailable(exc):
                    raise
                raise _database_unavailable() from None
        except APIError as exc:
            self._audit(False, dict(audit, codes=exc.codes))
            raise
        lease = {k: answer[k] for k in LEASE_FIELDS if k in answer}
        self._audit(True, dict(audit, codes=[], policy_id=policy_id,
                               **lease))
        return 200, answer

    def _release_reads(self, evidence: Any) -> tuple[db.Read, ...]:
        """The reads the verification of ``evidence`` will make, by its word.

        For an SNP report naming its product (CPUID fields, report
        version 3 on): that product's platform floor, and its cached CRLs
        when the database is an endorsement source. The admission runs
        them on its connection once it committed (:class:`db.Read`); the
        verification still asks for what the verified report says, and a
        read made here for another product is left unused. Only a hint:
        nothing here is trusted, and malformed evidence gets no reads.
        """
        if not isinstance(evidence, dict) or (
                evidence.get("format") != "amd-sev-snp-report"):
            return ()
        report = evidence.get("report")
        if not isinstance(report, str) or len(report) > 2 * snp.REPORT_SIZE:
            return ()
        try:
            product = snp.product_hint(base64.b64decode(report,
                                                        validate=True))
        except ValueError:
            return ()
        if product is None:
            return ()
        name = product.name.lower()
        if name not in floors.SNP_PRODUCTS:
            return ()
        reads = [self.floor_store.read(name)]
        if "database" in self.conf.tee_attestation.endorsement_sources:
            reads.append(self.endorsement_store.crl_read(name))
        return tuple(reads)

    def _release_input(self, body: dict[str, Any], evidence: Any
                       ) -> tuple[str, release_jwe.Recipient]:
        """The release's nonce and the guest's key, checked."""
        nonce = body.get("nonce")
        if not isinstance(nonce, str) or not re.fullmatch(
                r"[A-Za-z0-9_-]{20,64}", nonce):
            raise APIError(400, "nonce_invalid", "nonce is missing or "
                           "malformed")
        public = self._public_key(body.get("public_key"))
        if not isinstance(evidence, dict):
            raise APIError(400, "evidence_invalid",
                           "evidence must be an object with a format")
        return nonce, public

    def _release(self, nonce: str, public: release_jwe.Recipient,
                 secret_id: str,
                 evidence: dict[str, Any],
                 admission: db.Admission) -> tuple[dict[str, Any], str]:
        # The nonce was spent first (admission): a refused attempt cannot
        # be retried with the same challenge.
        # The record says who may receive the secret: it must open for
        # this very secret, and it pins the policy and the instance.
        _meta, plaintext, record = self._open_record(secret_id,
                                                     admission.meta)
        policy, policy_id = self._record_policy(record, admission.policy)
        instance = self._live_instance(record)
        report_data = self._verify(evidence, policy, instance)
        expected = expected_report_data(nonce, public)
        if not hmac.compare_digest(report_data, expected):
            raise APIError(403, "report_data_mismatch",
                           "report_data is not SHA-512(nonce || key "
                           "thumbprint): the evidence was not made for "
                           "this challenge and key")
        # Only a guest that could get the key anyway spends its budget.
        self._rate_secret(secret_id)
        protected: dict[str, Any] = {"kid": public.kid()}
        lease = self._lease(policy)
        if lease is not None:
            # In the protected header, which A256GCM authenticates with
            # the secret: a host cannot change what the guest reads there.
            protected.update(tee_max_age=lease[0], tee_lease_exp=lease[1])
        answer: dict[str, Any] = {
            "jwe": release_jwe.seal(plaintext, public, protected)}
        if lease is not None:
            when = datetime.datetime.fromtimestamp(lease[1], datetime.UTC)
            answer.update(max_age=lease[0], lease_expires_at=when.replace(
                tzinfo=None).isoformat() + "Z")
        return answer, policy_id

    def _lease(self, policy: policy_mod.Policy) -> tuple[int, int] | None:
        """``(max_age, expiry as POSIX seconds)`` of a release, or None.

        The policy's ``max_age``, cut to the operator's ``[tee_attestation]
        lease_max_age``.
        """
        if policy.max_age is None:
            return None
        max_age = min(policy.max_age,
                      self.conf.tee_attestation.lease_max_age)
        return max_age, int(time.time()) + max_age

    def bind_instance(self, environ: dict[str, Any], instance: str,
                      id: str) -> tuple[int, Any]:  # noqa: A002
        """nova-compute ties a secret to the instance that boots with it.

        Only an instance of the secret's own project can be bound, and
        only one at a time: a copy of the disk booted as another instance
        (in any project) gets nothing while this binding stands, and
        nothing once the instance is deleted and the binding with it.
        """
        self._context(environ, "tee:sev:session")
        body = self._json(environ)
        secret_id = str(uuid.UUID(id))
        project = str(body.get("project_id", ""))
        if not project or self.store.secret_project(secret_id) != project:
            raise APIError(403, "instance_project_mismatch",
                           "the instance's project does not own the "
                           "secret")
        instance_uuid = str(uuid.UUID(instance))
        _meta, _plain, record = self._open_record(secret_id)
        del _plain
        current = record.binding
        if current.instance_uuid == instance_uuid and not current.retired:
            return 200, {"secret_id": secret_id, "instance_uuid": instance}
        if current.instance_uuid is not None or current.retired:
            raise APIError(409, "secret_bound_to_other_instance",
                           f"the secret is bound to instance "
                           f"{current.instance_uuid} (or retired with it; "
                           "its owner can bind it to a policy again)")
        self._change_binding(
            secret_id, project,
            lambda rec: rec.binding.instance_uuid is None
            and not rec.binding.retired, instance_uuid=instance_uuid)
        return 200, {"secret_id": secret_id, "instance_uuid": instance}

    def unbind_instance(self, environ: dict[str, Any],
                        instance: str) -> tuple[int, Any]:
        """The instance was deleted: its secrets go to no one any more."""
        self._context(environ, "tee:sev:session")
        instance_uuid = str(uuid.UUID(instance))
        for secret_id in self.store.secrets_with_metadata("tee_instance",
                                                          instance_uuid):
            meta = self.store.store_metadata(secret_id)
            project = meta.get("tee_project", "")
            try:
                self._change_binding(
                    secret_id, project,
                    lambda rec: rec.binding.instance_uuid == instance_uuid
                    and not rec.binding.retired, retired=True)
            except APIError as exc:
                # Not tied to it after all, or a record that does not open
                # (released to no one anyway).
                LOG.info("openstack-tee: secret %s not retired with "
                         "instance %s: %s", secret_id, instance_uuid,
                         exc.code)
        return 204, None

    def sev_session(self, environ: dict[str, Any]) -> tuple[int, Any]:
        """Guest owner side of LAUNCH_START for nova-compute."""
        self._context(environ, "tee:sev:session")
        body = self._json(environ)
        secret_id = self._secret_id(body)
        try:
            instance_uuid = str(uuid.UUID(str(body.get("instance_uuid"))))
        except ValueError:
            raise APIError(400, "instance_uuid_invalid",
                           "instance_uuid must be a UUID") from None
        launch_policy = body.get("policy")
        if not isinstance(launch_policy, int) or isinstance(
                launch_policy, bool) or not 0 <= launch_policy < 1 << 32:
            raise APIError(400, "sev_policy", "policy must be the SEV "
                           "guest policy as an integer")
        _meta, _plain, record = self._open_record(secret_id)
        del _plain
        if self._live_instance(record) != instance_uuid:
            raise APIError(403, "instance_not_bound",
                           "the secret is not bound to this instance")
        policy, _policy_id = self._record_policy(record)
        # The host chose the launch policy: check it against the owner's
        # before any session (and transport keys) exist.
        self._sev_launch_ok(policy, launch_policy)
        try:
            pdh_raw = base64.b64decode(str(body.get("pdh", "")),
                                       validate=True)
            chain_raw = base64.b64decode(str(body.get("cert_chain", "")),
                                         validate=True)
        except (binascii.Error, ValueError):
            raise APIError(400, "sev_pdh_invalid", "pdh and cert_chain "
                           "must be base64 (libvirt node SEV "
                           "info)") from None
        try:
            pdh = self._verified_pdh(pdh_raw, chain_raw)
            launch = sev.create_launch_session(pdh, launch_policy)
        except (errors.InvalidInput, errors.VerificationFailed) as exc:
            raise APIError(403, exc.code, exc.message) from None
        session_id = str(uuid.uuid4())
        state = json.dumps(launch.to_state()).encode()
        # Whole seconds: MariaDB's DATETIME keeps no fraction, and the
        # sealed state's AAD covers the value as read back.
        expires_at = db.utcnow().replace(microsecond=0) + datetime.timedelta(
            seconds=SEV_SESSION_TTL)
        sealed = sealed_store.seal(
            self.keyring, state, _session_label(session_id, secret_id,
                                                instance_uuid,
                                                launch_policy, expires_at))
        self.store.add_sev_session({
            "id": session_id, "secret_id": secret_id,
            "instance_uuid": instance_uuid, "policy": launch_policy,
            "sealed_state": json.dumps(sealed), "expires_at": expires_at})
        return 201, {"session_id": session_id,
                     "dh_cert": launch.dh_cert_b64,
                     "session": launch.session_b64}

    def _sev_roots(self) -> list[tuple[Any, Any]]:
        roots = [sev_certs.builtin_roots(g)
                 for g in ("milan", "genoa", "rome", "naples")]
        for pair in self.conf.tee_attestation.extra_sev_trust_roots:
            ark_path, _, ask_path = pair.partition(":")
            with open(ark_path, "rb") as f:
                ark = sev_certs.parse_amd_root_cert(f.read())
            with open(ask_path, "rb") as f:
                ask = sev_certs.parse_amd_root_cert(f.read())
            roots.append((ark, ask))
        return roots

    def _verified_pdh(self, pdh_raw: bytes, chain_raw: bytes) -> Any:
        """The PDH, verified up to a trusted ARK.

        libvirt's node SEV info gives the PDH and the platform chain
        (PEK, OCA, CEK as one blob); the CEK is signed by AMD's ASK. An
        unverified PDH would let the host pose as the platform and learn
        the transport keys, so the chain is required.
        """
        pdh = sev_certs.parse_sev_cert(pdh_raw)
        size = len(pdh_raw)
        certs = [chain_raw[i:i + size] for i in range(0, len(chain_raw),
                                                      size)]
        if len(certs) != 3:
            raise errors.InvalidInput(
                "cert_chain must hold the PEK, OCA and CEK",
                code="sev_cert_chain")
        pek, oca, cek = certs
        last: errors.AttestationError | None = None
        for ark, ask in self._sev_roots():
            try:
                sev_certs.verify_platform_chain(ark, ask, cek, pek, pdh,
                                                oca)
                return pdh
            except errors.AttestationError as exc:
                last = exc
        raise errors.VerificationFailed(
            "the platform's SEV certificate chain does not verify up to "
            f"an AMD root ({last.code if last else 'unknown'})",
            code="sev_untrusted_platform")

    def sev_measurement(self, environ: dict[str, Any],
                        id: str) -> tuple[int, Any]:  # noqa: A002
        """LAUNCH_MEASURE -> LAUNCH_SECRET for nova-compute."""
        self._context(environ, "tee:sev:session")
        body = self._json(environ)
        # Checked before the session is spent: a malformed answer from
        # nova-compute costs it nothing.
        measured = self._sev_measured(body)
        row = self.store.take_sev_session(id)
        if row is None:
            raise APIError(404, "sev_session_unknown",
                           "no such launch session (or it was used)")
        audit = {"secret_id": row["secret_id"],
                 "evidence_sha256": hashlib.sha256(json.dumps(
                     body, sort_keys=True).encode()).hexdigest(),
                 "client": self._client(environ)}
        try:
            result = self._sev_secret(row, body, measured)
        except APIError as exc:
            self._audit(False, dict(audit, codes=exc.codes))
            raise
        self._audit(True, dict(audit, codes=[]))
        return 200, result

    @staticmethod
    def _sev_measured(body: dict[str, Any]) -> tuple[str, int, int, int]:
        """(measurement, api_major, api_minor, build_id) of the body.

        The firmware's version fields are bytes: JSON integers 0-255.
        """
        measurement = body.get("measurement")
        numbers = [n for n in (body.get(k) for k in (
            "api_major", "api_minor", "build_id"))
            if type(n) is int and 0 <= n <= 255]
        if not isinstance(measurement, str) or len(numbers) != 3:
            raise APIError(400, "sev_measurement_invalid",
                           "measurement (a string) and api_major, api_minor "
                           "and build_id (integers 0-255) are required")
        return measurement, numbers[0], numbers[1], numbers[2]

    def _sev_secret(self, row: dict[str, Any], body: dict[str, Any],
                    measured: tuple[str, int, int, int]
                    ) -> dict[str, str]:
        if row["expires_at"] < db.utcnow():
            raise APIError(403, "sev_session_expired",
                           "the launch session expired")
        # The session row's fields are under the sealed state's AAD: a row
        # pointed at another secret or instance, or given a later expiry,
        # does not open.
        try:
            state = sealed_store.unseal(
                self.keyring, json.loads(row["sealed_state"]),
                _session_label(row["id"], row["secret_id"],
                               row["instance_uuid"], row["policy"],
                               row["expires_at"]))
        except (sealed_store.SealedSecretError, ValueError):
            raise APIError(403, "sev_session_tampered",
                           "the launch session does not authenticate"
                           ) from None
        # The instance may have been deleted since the session was made.
        _meta, secret, record = self._open_record(row["secret_id"])
        if self._live_instance(record) != row["instance_uuid"]:
            raise APIError(403, "instance_not_bound",
                           "the secret is not bound to this instance")
        if body.get("policy", row["policy"]) != row["policy"]:
            raise APIError(403, "sev_policy",
                           "the launched policy differs from the session's")
        policy, _policy_id = self._record_policy(record)
        launch = sev.LaunchSession.from_state(json.loads(state))
        measurement, api_major, api_minor, build_id = measured
        if not policy.measurements:
            raise APIError(403, "policy_measurement",
                           "the policy allows no launch digest")
        try:
            launch.verify_measurement(measurement, api_major, api_minor,
                                      build_id, list(policy.measurements))
        except (errors.InvalidInput, errors.VerificationFailed) as exc:
            raise APIError(403, exc.code, exc.message) from None
        # Again, now with the firmware version the measurement proves, and
        # with the policy as sealed in the session (the owner's policy may
        # have changed since the session was made).
        self._sev_launch_ok(policy, launch.policy, api_major, api_minor)
        try:
            packet = launch.build_secret_packet(
                measurement, {SEV_LUKS_KEY_GUID: secret}, api_major,
                api_minor)
        except (errors.InvalidInput, errors.VerificationFailed) as exc:
            raise APIError(403, exc.code, exc.message) from None
        return {"secret_header": packet.header_b64,
                "secret": packet.payload_b64}

    @staticmethod
    def _sev_launch_ok(policy: policy_mod.Policy, launch_policy: int,
                       api_major: int | None = None,
                       api_minor: int | None = None) -> None:
        result = policy_mod.evaluate_sev_launch(policy, launch_policy,
                                                api_major, api_minor)
        if not result.ok:
            raise APIError(403, result.failures[0].code,
                           "; ".join(f.message for f in result.failures),
                           codes=result.codes)

    @staticmethod
    def _public_key(value: Any) -> release_jwe.Recipient:
        """The guest's key, a point on P-384, checked before any use.

        A point off the curve (or at zero, or a coordinate of the wrong
        size) would fail only in the JWE after the nonce is spent.
        """
        if not isinstance(value, dict) or value.get("kty") != "EC" or (
                value.get("crv") != "P-384") or "d" in value:
            raise APIError(400, "public_key_invalid",
                           "public_key must be a public EC P-384 JWK")
        invalid = APIError(400, "public_key_invalid", "public_key is not "
                           "a point on P-384 (x and y: 48 bytes each, "
                           "base64url without padding)")
        try:
            return release_jwe.Recipient(value.get("x", ""),
                                         value.get("y", ""))
        except ValueError:
            raise invalid from None

    def _verify(self, evidence: dict[str, Any], policy: policy_mod.Policy,
                instance_uuid: str | None = None) -> bytes:
        """Verify evidence and evaluate the policy; its report_data.

        The format's plugin (:mod:`barbican_tee.attestation.evidence`)
        verifies and evaluates; a format not enabled is refused.
        """
        verifier = self.evidence.get(evidence.get("format"))
        if verifier is None:
            raise APIError(400, "evidence_format",
                           "evidence.format must be "
                           + self.evidence.describe())
        try:
            verified = verifier.verify(
                evidence, datetime.datetime.now(datetime.UTC))
            if verified.format != evidence.get("format"):
                raise errors.VerificationFailed(
                    "the evidence verifier answered for another format",
                    code="evidence_verifier_error")
            if verified.tee != policy.tee:
                # Whatever the plugin's own evaluation says: the evidence
                # must be of the TEE the owner's policy is for (and so
                # under that TEE's platform floor).
                raise errors.VerificationFailed(
                    f"the policy is for {policy.tee}, the evidence is "
                    f"{verified.tee} evidence", code="policy_tee_mismatch")
            result = verifier.evaluate(policy, verified, instance_uuid)
        except evidence_mod.MalformedEvidence as exc:
            raise APIError(400, exc.code, exc.message) from None
        except (source_bound.SourceBusy,
                evidence_mod.SourceUnavailable) as exc:
            raise APIError(503, exc.code, exc.message) from None
        except errors.InvalidInput as exc:
            raise APIError(403, exc.code, exc.message) from None
        except errors.VerificationFailed as exc:
            raise APIError(403, exc.code, exc.message) from None
        except Exception:  # noqa: BLE001 - a plugin's bug is a refusal
            # Refused and audited like any other failure, never a 500
            # without an audit record.
            LOG.exception("openstack-tee: the %s verifier failed",
                          type(verifier).__name__)
            raise APIError(403, "evidence_verifier_error",
                           "the evidence verifier failed; see the "
                           "barbican-api log") from None
        if not result.ok:
            raise APIError(403, result.failures[0].code,
                           "; ".join(f.message for f in result.failures),
                           codes=result.codes)
        # The operator's floor, whatever the policy says.
        self._platform_floor(verified)
        return verified.report_data

    def _platform_floor(self, verified: evidence_mod.VerifiedEvidence
                        ) -> None:
        """Refuse evidence below the operator's TCB floor (SNP, TDX).

        Applied to what any verifier, built-in or plugin, says the platform
        is (``product``, ``tcb``). Evidence that speaks for SNP or TDX
        hardware without a product and TCB the floor can be applied to is
        refused: the floor is never skipped silently.
        """
        details = verified.details
        product = verified.product
        if product in floors.SNP_PRODUCTS:
            try:
                reported: snp.TcbVersion | None = snp.TcbVersion.from_dict(
                    verified.tcb)
            except (KeyError, TypeError, ValueError):
                reported = None
            if reported is not None:
                self._floor_check(floors.check_snp,
                                  floors.SNP_PRODUCTS[product], reported)
                return
        elif product == floors.TDX and isinstance(details, tdx.TdxClaims):
            self._floor_check(floors.check_tdx, details.tcb_status,
                              details.tee_tcb_svn)
            return
        elif product is None and verified.tee not in ("amd-sev-snp",
                                                      "intel-tdx"):
            return  # another TEE: no platform floor speaks about it
        raise APIError(403, "evidence_verifier_error",
                       "the evidence verifier gives no platform TCB the "
                       "operator's floor can be applied to")

    def _floor_check(self, check: Callable[..., None], *args: Any) -> None:
        try:
            check(self.floor_store, self.conf, *args)
        except floors.FloorError as exc:
            raise APIError(exc.status, exc.code, str(exc)) from None

    # -- routes: platform TCB floors (barbican_tee.api.floors) -------------
    def _floors(self, environ: dict[str, Any], rule: str,
                call: Callable[..., Any], *args: Any) -> Any:
        ctx = self._context(environ, rule)
        try:
            return call(ctx, *args)
        except floors.FloorTampered as exc:
            raise APIError(409, exc.code, str(exc)) from None
        except floors.FloorError as exc:
            raise APIError(exc.status, exc.code, str(exc)) from None

    def list_floors(self, environ: dict[str, Any]) -> tuple[int, Any]:
        # Per product: a tampered product is an error entry, the others
        # still answer (a restarting scheduler refuses that product only).
        return 200, self._floors(environ, "tee:floor:get", lambda ctx: {
            "floors": floors.views(self.floor_store, self.conf)})

    def show_floor(self, environ: dict[str, Any],
                   product: str) -> tuple[int, Any]:
        return 200, self._floors(
            environ, "tee:floor:get", lambda ctx: floors.view(
                self.floor_store, self.conf,
                floors.product_name(product)))

    def set_floor(self, environ: dict[str, Any],
                  product: str) -> tuple[int, Any]:
        def put(ctx: Any) -> dict[str, Any]:
            name = floors.product_name(product)
            return floors.set_floor(
                self.floor_store, self.conf, name, self._json(environ),
                str(getattr(ctx, "user_id", None) or "-"), self.notifier)
        return 200, self._floors(environ, "tee:floor:set", put)

    # -- routes: the endorsement cache (barbican_tee.api.endorsements) ----
    @functools.cached_property
    def _endorsement_importer(self) -> endorsements.Importer:
        return endorsements.Importer(snp.SnpVerifier.from_conf(self.conf))

    def import_endorsements(self, environ: dict[str, Any]
                            ) -> tuple[int, Any]:
        ctx = self._context(environ, "tee:endorsement:import")
        try:
            return 201, endorsements.import_bundle(
                self.endorsement_store, self._endorsement_importer,
                self._json(environ),
                str(getattr(ctx, "user_id", None) or "-"), self.notifier)
        except endorsements.EndorsementError as exc:
            raise APIError(exc.status, exc.code, str(exc)) from None

    def list_endorsements(self, environ: dict[str, Any]
                          ) -> tuple[int, Any]:
        self._context(environ, "tee:endorsement:get")
        query = urllib.parse.parse_qs(environ.get("QUERY_STRING", ""),
                                      keep_blank_values=True)
        try:
            return 200, endorsements.list_view(self.endorsement_store,
                                               query)
        except endorsements.EndorsementError as exc:
            raise APIError(exc.status, exc.code, str(exc)) from None

    def _audit(self, granted: bool, payload: dict[str, Any]) -> None:
        event = "tee.release.granted" if granted else "tee.release.denied"
        LOG.info("openstack-tee audit %s secret=%s codes=%s evidence=%s "
                 "client=%s%s", event, payload["secret_id"],
                 ",".join(payload["codes"]) or "-",
                 payload["evidence_sha256"], payload.get("client"),
                 " renewal=claimed" if payload.get("renewal") else "")
        if self.notifier is None:
            return
        # oslo.messaging masks any key that looks like "secret": name the
        # secret as a resource so operators see which one it was.
        notice = {k: v for k, v in payload.items() if k != "secret_id"}
        notice.update(resource_type="secret",
                      resource_id=payload["secret_id"])
        try:
            notify = self.notifier.info if granted else self.notifier.warn
            notify({}, event, notice)
        except Exception:  # noqa: BLE001 - the log line above stands
            LOG.exception("openstack-tee: audit notification failed")


def list_rules() -> list[oslo_policy.RuleDefault]:
    """Policy defaults for oslopolicy-sample-generator."""
    return (list(RULES) + floors.list_rules()
            + endorsements.list_rules())
