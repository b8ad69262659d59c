"""Two paste filters in front of Nova's API router.

:class:`TEEExtraSpecsCheck` rejects flavors whose ``tee:`` keys contradict
``hw:mem_encryption*``; :class:`TEESecretCheck` rejects a server create
(or rebuild) whose ``tee_secret`` metadata names a secret the user cannot
read, that is not sealed, or that is bound to no attestation policy, or
on a flavor that asks for no attestation; and a server metadata request
that would add, change or remove ``tee_secret`` after create. It also
retires the secret binding of a ``tee:`` server that Nova deleted in its
API alone (shelved offloaded, or its host down), which no nova-compute
would retire.

TEEExtraSpecsCheck
------------------

Nova validates extra specs one key at a time, so it cannot see that
``tee:snp_debug`` makes no sense on an ``amd-sev`` flavor, or that
``tee:attestation=required`` is set on a flavor without memory encryption.
This paste filter sits in front of Nova's API router and checks the flavor's
extra specs as they would be after a ``POST``/``PUT``/``DELETE`` on
``/flavors/{id}/os-extra_specs``; a contradiction is answered with HTTP 400
naming the keys, and nothing is stored.

Add it to ``api-paste.ini`` before ``osapi_compute_app_v21`` (after
``keystonecontext``, which it needs for the flavor lookup)::

    [filter:tee_extra_specs]
    paste.filter_factory = nova_tee.api.middleware:TEEExtraSpecsCheck.factory

TEESecretCheck
--------------
nova-compute binds the server's ``tee_secret`` to the instance at boot;
a secret that cannot be bound used to surface only there, as an ERROR
instance. This filter checks it at the API, with the request's context:

1. through castellan (``[key_manager] backend = barbican``, the way Nova
   reaches Barbican for volume keys), metadata only: the secret exists and
   Barbican lets this user read it;
2. through ``GET /v1/tee/secrets/{id}/policy`` with the same credentials:
   the secret is in the user's project, sealed, and bound to a policy.

The flavor (at create, the ``flavorRef``; at rebuild, the server's) must
carry ``tee:`` extra specs, or the secret would never be bound. The
``tee_secret`` of an existing server is fixed: the server metadata API may
not add, change or remove it (rebuild names a new one, checked as above).
A failed check is answered 400 with the reason; the request is otherwise
passed to Nova unchanged. With another ``[key_manager] backend`` the check
is skipped (nova-compute still refuses the boot) and a warning is logged::

    [filter:tee_secret_check]
    paste.filter_factory = nova_tee.api.middleware:TEESecretCheck.factory

:func:`add_to_paste_config` adds both filters to a copy of Nova's file.
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Iterable
import copy
import json
import re
import threading
from typing import Any

from keystoneauth1 import plugin as ksa_plugin
from oslo_config import cfg
from oslo_log import log as logging

from barbican_tee.api import request_body
from nova_tee import conf as tee_conf
from nova_tee import specs
from nova_tee.virt.libvirt.attest import META_SECRET

LOG = logging.getLogger(__name__)
CONF = cfg.CONF
tee_conf.register_opts(CONF)

FILTER_NAME = "tee_extra_specs"
FACTORY = "nova_tee.api.middleware:TEEExtraSpecsCheck.factory"
SECRET_FILTER_NAME = "tee_secret_check"  # noqa: S105 - a filter name
SECRET_FACTORY = (
    "nova_tee.api.middleware:TEESecretCheck.factory")  # noqa: S105
# (name, factory) of every filter, in pipeline order.
FILTERS = ((FILTER_NAME, FACTORY), (SECRET_FILTER_NAME, SECRET_FACTORY))
_FACTORY_V21 = "call:nova.api.auth:pipeline_factory_v21"
_ROUTER = "osapi_compute_app_v21"
_COMMENTS = {
    FILTER_NAME: "openstack-tee: TEE flavor extra specs are checked.",
    SECRET_FILTER_NAME: "openstack-tee: a tee_secret must be sealed and "
                        "readable.",
}
_SERVERS = re.compile(r"/servers/?$")
_SERVER = re.compile(r"/servers/(?P<server>[^/]+)/?$")
_ACTION = re.compile(r"/servers/(?P<server>[^/]+)/action/?$")
_METADATA = re.compile(r"/servers/(?P<server>[^/]+)/metadata"
                       r"(?:/(?P<key>[^/]+))?/?$")
_PATH = re.compile(r"/flavors/(?P<flavor>[^/]+)/os-extra_specs"
                   r"(?:/(?P<key>[^/]+))?/?$")

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class TEEExtraSpecsCheck:
    """WSGI filter: 400 for a flavor update that would contradict itself."""

    def __init__(self, app: WSGIApp) -> None:
        self.app = app

    @classmethod
    def factory(cls, global_config: dict[str, str],
                **local_config: str) -> Callable[[WSGIApp],
                                                 TEEExtraSpecsCheck]:
        return cls

    def __call__(self, environ: dict[str, Any],
                 start_response: Callable[..., Any]) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD", "")
        match = _PATH.search(environ.get("PATH_INFO", ""))
        if match is None or method not in ("POST", "PUT", "DELETE"):
            return self.app(environ, start_response)
        change, removed = self._change(environ, method, match.group("key"))
        touches = any(specs.mentions_tee(k)
                      or k.startswith("hw:mem_encryption")
                      for k in list(change) + removed)
        if not touches:
            return self.app(environ, start_response)
        if not self._may_change(environ, method):
            return self.app(environ, start_response)  # Nova answers 403
        existing = self._existing(environ, match.group("flavor"))
        if existing is None:
            return self.app(environ, start_response)
        merged = {**existing, **change}
        for key in removed:
            merged.pop(key, None)
        problems = specs.conflicts(merged)
        if not problems:
            return self.app(environ, start_response)
        body = json.dumps({"badRequest": {
            "code": 400,
            "message": "Conflicting extra specs: " + "; ".join(problems)}})
        start_response("400 Bad Request",
                       [("Content-Type", "application/json"),
                        ("Content-Length", str(len(body)))])
        return [body.encode()]

    @staticmethod
    def _change(environ: dict[str, Any], method: str,
                key: str | None) -> tuple[dict[str, str], list[str]]:
        if method == "DELETE":
            return {}, [key] if key else []
        # Content-Length or chunked, put back for Nova, which reads it
        # again; a body we cannot read goes to Nova untouched (it refuses
        # a malformed length or an oversized body itself).
        raw = _read_body(environ)
        if raw is None:
            return {}, []
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            return {}, []  # Nova answers malformed JSON itself
        if not isinstance(body, dict):
            return {}, []
        if method == "POST":
            body = body.get("extra_specs", {})
        if not isinstance(body, dict):
            return {}, []
        return {str(k): str(v) for k, v in body.items()}, []

    @staticmethod
    def _may_change(environ: dict[str, Any], method: str) -> bool:
        """Only users allowed to change extra specs learn about conflicts."""
        ctx = environ.get("nova.context")
        if ctx is None:
            return False
        action = {"POST": "create", "PUT": "update", "DELETE": "delete"}
        return bool(ctx.can(
            f"os_compute_api:os-flavor-extra-specs:{action[method]}",
            target={}, fatal=False))

    @staticmethod
    def _existing(environ: dict[str, Any],
                  flavor_id: str) -> dict[str, str] | None:
        from nova import context as nova_context
        from nova import exception
        from nova import objects

        try:
            flavor = objects.Flavor.get_by_flavor_id(
                nova_context.get_admin_context(), flavor_id)
        except exception.FlavorNotFound:
            return None  # Nova answers 404 itself
        return dict(flavor.extra_specs or {})


def _reply_400(start_response: Callable[..., Any],
               message: str) -> Iterable[bytes]:
    body = json.dumps({"badRequest": {"code": 400, "message": message}})
    start_response("400 Bad Request",
                   [("Content-Type", "application/json"),
                    ("Content-Length", str(len(body)))])
    return [body.encode()]


class SecretCheckError(Exception):
    """The named ``tee_secret`` cannot be used; the message says why."""


class _IdentityHeaders(ksa_plugin.BaseAuthPlugin):
    """Development and tests only: the context as Barbican noauth headers.

    What Barbican's unauthenticated pipeline reads in place of a token
    (``[tee] api_noauth_identity``): project, user and roles of the
    request, which noauth2 took from the caller's headers.
    """

    def __init__(self, ctx: Any) -> None:
        super().__init__()
        self._headers = {"X-Project-Id": str(ctx.project_id),
                         "X-User-Id": str(ctx.user_id or ""),
                         "X-Roles": ",".join(ctx.roles or [])}

    def get_headers(self, session: Any, **kwargs: Any) -> dict[str, str]:
        return dict(self._headers)

    def get_endpoint(self, session: Any, **kwargs: Any) -> None:
        return None


# Nova refuses larger bodies itself ([wsgi] max_request_body_size).
_MAX_BODY = 1024 * 1024


def _read_body(environ: dict[str, Any]) -> bytes | None:
    """The request body, put back for Nova; None if left untouched.

    A ``Content-Length`` body is read whole; a chunked one up to
    ``_MAX_BODY`` (beyond that, what was read is put back in front of the
    rest and the request goes on unchecked: Nova refuses it anyway). A
    malformed length is left to Nova.
    """
    try:
        return request_body.read(environ, _MAX_BODY, put_back=True)
    except request_body.BodyError:
        return None


def _instance(ctx: Any, server_id: str, attrs: list[str]) -> Any:
    """The server as this user sees it (its cell's record), or None."""
    from nova.compute import api as compute_api
    from nova import exception

    try:
        return compute_api.API().get(ctx, server_id, expected_attrs=attrs)
    except exception.NovaException:
        return None  # Nova answers (404, or the cell's state) itself


class TEESecretCheck:
    """WSGI filter: 400 for a server whose ``tee_secret`` cannot be used."""

    _lock = threading.Lock()
    _managers: dict[str, Any] = {}

    def __init__(self, app: WSGIApp) -> None:
        self.app = app

    @classmethod
    def factory(cls, global_config: dict[str, str],
                **local_config: str) -> Callable[[WSGIApp],
                                                 TEESecretCheck]:
        return cls

    def __call__(self, environ: dict[str, Any],
                 start_response: Callable[..., Any]) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD")
        path = environ.get("PATH_INFO", "")
        ctx = environ.get("nova.context")
        deleted = self._deleted_server(environ, method, path)
        if deleted is not None and ctx is not None:
            return self._delete(environ, start_response, ctx, deleted)
        meta = _METADATA.search(path)
        if meta is not None and ctx is not None and method in (
                "POST", "PUT", "DELETE"):
            try:
                self._check_metadata_change(environ, ctx, method,
                                            meta.group("server"),
                                            meta.group("key"))
            except SecretCheckError as exc:
                return _reply_400(start_response, str(exc))
            return self.app(environ, start_response)
        if method != "POST":
            return self.app(environ, start_response)
        action = _ACTION.search(path)
        if _SERVERS.search(path):
            key = "server"
        elif action is not None:
            key = "rebuild"
        else:
            return self.app(environ, start_response)
        part = self._request_part(environ, key)
        secret_id = self._named_secret(part)
        if secret_id is None or ctx is None:
            return self.app(environ, start_response)
        try:
            if action is None:
                self._check_create_flavor(ctx, part)
            else:
                self._check_rebuild_flavor(ctx, action.group("server"))
            self.check(ctx, secret_id)
        except SecretCheckError as exc:
            return _reply_400(start_response, str(exc))
        return self.app(environ, start_response)

    # -- a server deleted in the API: its binding retired here ------------
    @classmethod
    def _deleted_server(cls, environ: dict[str, Any], method: Any,
                        path: str) -> str | None:
        """The server a delete request names (``DELETE`` or forceDelete)."""
        if method == "DELETE":
            match = _SERVER.search(path)
            return match.group("server") if match else None
        if method == "POST":
            action = _ACTION.search(path)
            if action is not None and cls._action_name(environ) == (
                    "forceDelete"):
                return action.group("server")
        return None

    @classmethod
    def _action_name(cls, environ: dict[str, Any]) -> str | None:
        body = cls._request_json(environ)
        if isinstance(body, dict) and len(body) == 1:
            return str(next(iter(body)))
        return None

    def _delete(self, environ: dict[str, Any],
                start_response: Callable[..., Any], ctx: Any,
                server_id: str) -> Iterable[bytes]:
        """Pass the delete to Nova; then retire what Nova deleted itself.

        Nova deletes a server in its API, with no nova-compute taking part,
        when the server has no host (shelved and offloaded, or never
        scheduled) or its host is down (which may never come back to clean
        up). Those servers are gone once Nova answers: their secret
        binding is retired here, as nova-compute retires it for the others
        (which a soft delete may still restore).
        """
        status: list[str] = []

        def capture(code: str, headers: list[tuple[str, str]],
                    exc_info: Any = None) -> Any:
            status.append(code)
            if exc_info is not None:
                return start_response(code, headers, exc_info)
            return start_response(code, headers)

        result = self.app(environ, capture)
        if status and status[0][:1] == "2":
            try:
                self._retire_if_gone(ctx, server_id)
            except Exception:  # noqa: BLE001 - Nova's answer stands
                LOG.exception("openstack-tee: server %s: could not check "
                              "whether Nova's API deleted it (its secret "
                              "binding may still stand)", server_id)
        return result

    @classmethod
    def _retire_if_gone(cls, ctx: Any, server_id: str) -> None:
        from nova_tee.virt.libvirt import attest

        instance = _instance(ctx.elevated(read_deleted="yes"), server_id,
                             ["flavor"])
        if instance is None or not instance.deleted or (
                instance.flavor is None
                or cls._no_tee_request(instance.flavor)):
            return
        try:
            attest.retire(instance.uuid)
        except attest.AttestationError as exc:
            # The server is deleted whatever this says; the operator must
            # know its secret is still bound (until its owner binds it again).
            LOG.error("openstack-tee: server %s was deleted by Nova's API, "
                      "but its secret binding could not be retired "
                      "([tee] barbican_url and credentials on nova-api): "
                      "%s", instance.uuid, exc)
        else:
            LOG.info("openstack-tee: server %s deleted by Nova's API: its "
                     "secret binding is retired", instance.uuid)

    # -- the flavor must ask for attestation --------------------------------
    @staticmethod
    def _no_tee_request(flavor: Any) -> bool:
        extra_specs = dict(flavor.extra_specs or {})
        return not any(specs.mentions_tee(k) for k in extra_specs)

    _NOT_ATTESTED = (
        f"{META_SECRET} names a secret, but flavor %s asks for no "
        f"attestation (it has no {specs.PREFIX} extra specs), so the "
        f"secret would never be bound or released to this server: use a "
        f"flavor with {specs.PREFIX}attestation")

    @classmethod
    def _check_create_flavor(cls, ctx: Any,
                             part: dict[str, Any] | None) -> None:
        from nova.api.openstack import common
        from nova.compute import flavors
        from nova import exception

        ref = part.get("flavorRef") if part else None
        if not isinstance(ref, (str, int)):
            return  # Nova's schema answers 400 itself
        try:
            flavor_id = common.get_id_from_href(str(ref))
            flavor = flavors.get_flavor_by_flavor_id(
                ctx, flavor_id, read_deleted="no")
        except (exception.FlavorNotFound, ValueError):
            return  # Nova answers itself
        if cls._no_tee_request(flavor):
            raise SecretCheckError(cls._NOT_ATTESTED % flavor.flavorid)

    @classmethod
    def _check_rebuild_flavor(cls, ctx: Any, server_id: str) -> None:
        instance = _instance(ctx, server_id, ["flavor"])
        if instance is not None and cls._no_tee_request(instance.flavor):
            raise SecretCheckError(
                cls._NOT_ATTESTED % instance.flavor.flavorid)

    # -- tee_secret is fixed from create (or rebuild) on ----------------------
    @classmethod
    def _check_metadata_change(cls, environ: dict[str, Any], ctx: Any,
                               method: str, server_id: str,
                               key: str | None) -> None:
        """Refuse a metadata request that would change ``tee_secret``.

        nova-compute binds the secret the metadata names whenever it
        writes the guest's configuration (boot, hard reboot), and retires
        the instance's bindings when it is deleted: a ``tee_secret``
        added, changed or removed later would be bound unchecked, or
        left bound. It is set at create or rebuild, where it is checked.
        """
        if key is not None and key != META_SECRET:
            return
        wanted: dict[str, Any] | None = None
        if method != "DELETE":
            raw = _read_body(environ)
            if raw is None:
                return  # a body we do not read goes to Nova untouched
            try:
                body = json.loads(raw or b"{}")
            except ValueError:
                return  # Nova answers malformed JSON itself
            field = "meta" if key is not None else "metadata"
            wanted = body.get(field) if isinstance(body, dict) else None
            if not isinstance(wanted, dict):
                return  # Nova's schema answers 400 itself
            if method == "POST" and META_SECRET not in wanted:
                return  # a merge that leaves tee_secret alone
        instance = _instance(ctx, server_id, ["metadata"])
        if instance is None:
            return  # Nova answers 404 itself
        policy = {("DELETE", True): "delete", ("PUT", True): "update",
                  ("PUT", False): "update_all", ("POST", False): "create"}
        rule = policy.get((method, key is not None))
        if rule is None or not ctx.can(
                f"os_compute_api:server-metadata:{rule}",
                target={"project_id": instance.project_id}, fatal=False):
            return  # Nova answers 403 (or 405) itself
        current = (instance.metadata or {}).get(META_SECRET)
        if method == "DELETE":
            after = None
        else:
            assert wanted is not None
            after = wanted.get(META_SECRET, current if method == "POST"
                               else None)
        if after == current:
            return
        raise SecretCheckError(
            f"{META_SECRET} cannot be added, changed or removed on an "
            f"existing server: it is bound to the instance. Set it when "
            f"you create or rebuild the server")

    @staticmethod
    def _request_json(environ: dict[str, Any]) -> Any:
        """The request's JSON body (put back for Nova), or None."""
        raw = _read_body(environ)
        if raw is None:
            return None  # a body we do not read goes to Nova untouched
        try:
            return json.loads(raw or b"{}")
        except ValueError:
            return None  # Nova answers malformed JSON itself

    @classmethod
    def _request_part(cls, environ: dict[str, Any],
                      key: str) -> dict[str, Any] | None:
        body = cls._request_json(environ)
        part = body.get(key) if isinstance(body, dict) else None
        return part if isinstance(part, dict) else None

    @staticmethod
    def _named_secret(part: dict[str, Any] | None) -> str | None:
        meta = part.get("metadata") if part else None
        value = meta.get(META_SECRET) if isinstance(meta, dict) else None
        # Anything but a string: Nova's schema answers 400 itself.
        return value if isinstance(value, str) else None

    @classmethod
    def _key_manager(cls) -> Any:
        from castellan import key_manager

        backend = str(CONF.key_manager.backend)
        with cls._lock:
            if backend not in cls._managers:
                cls._managers[backend] = key_manager.API(configuration=CONF)
            return cls._managers[backend]

    @staticmethod
    def _barbican_backend(backend: str) -> bool:
        """Whether castellan's backend is Barbican (name or class path).

        Decided before the backend is loaded: another backend (Nova's
        ConfKeyManager without a fixed key, say) may fail to construct.
        """
        from castellan.key_manager import barbican_key_manager
        from oslo_utils import importutils

        if backend == "barbican":
            return True
        try:
            found = importutils.import_class(backend)
        except (ImportError, ValueError):
            return False
        return isinstance(found, type) and issubclass(
            found, barbican_key_manager.BarbicanKeyManager)

    @classmethod
    def check(cls, ctx: Any, secret_id: str) -> None:
        """Raise :class:`SecretCheckError` unless the secret can be used."""
        from castellan.common import exception as castellan_exc

        if not cls._barbican_backend(str(CONF.key_manager.backend)):
            LOG.warning("openstack-tee: [key_manager] backend is %s, not "
                        "barbican: tee_secret %s is not checked at the API "
                        "(nova-compute still refuses to boot with a secret "
                        "it cannot bind)", CONF.key_manager.backend,
                        secret_id)
            return
        manager = cls._key_manager()
        if CONF.tee.api_noauth_identity:
            ctx = copy.copy(ctx)
            ctx.user_auth_plugin = _IdentityHeaders(ctx)
        name = f"{META_SECRET} {secret_id}"
        try:
            # Metadata only: the payload is never asked for.
            manager.get(ctx, secret_id, metadata_only=True)
        except castellan_exc.ManagedObjectNotFoundError:
            raise SecretCheckError(
                f"{name} does not exist in Barbican") from None
        except castellan_exc.CastellanException as exc:
            raise SecretCheckError(
                f"{name} cannot be read by you in Barbican: {exc}"
            ) from None
        except Exception as exc:  # noqa: BLE001 - the client's own errors
            # A token Keystone or Barbican refuses (expired, revoked) can
            # surface as keystoneauth's or barbicanclient's own exception
            # (a 401 body barbicanclient cannot parse is a KeyError).
            LOG.warning("openstack-tee: tee_secret %s could not be checked "
                        "in Barbican: %s", secret_id, type(exc).__name__)
            raise SecretCheckError(
                f"{name} cannot be checked in Barbican with your "
                f"credentials ({type(exc).__name__})") from None
        binding = cls._binding(ctx, secret_id, name)
        if not binding.get("policy_id"):
            raise SecretCheckError(
                f"{name} is sealed but bound to no attestation policy: "
                f"bind one first (PUT /v1/tee/secrets/{secret_id}/policy, "
                f"or openstack tee secret bind)")

    @staticmethod
    def _binding(ctx: Any, secret_id: str, name: str) -> dict[str, Any]:
        """``GET /v1/tee/secrets/{id}/policy`` with the user's credentials.
        """
        from keystoneauth1 import session as ksa_session

        from barbican_tee.client import rest

        auth = ctx.get_auth_plugin()
        verify = CONF.barbican.verify_ssl and (
            CONF.barbican.verify_ssl_path or CONF.barbican.verify_ssl)
        session = ksa_session.Session(auth=auth, verify=verify)
        endpoint = CONF.barbican.barbican_endpoint or auth.get_endpoint(
            session, service_type="key-manager",
            interface=CONF.barbican.barbican_endpoint_type,
            region_name=CONF.barbican.barbican_region_name)
        if not endpoint:
            raise SecretCheckError(
                f"{name} cannot be checked: no Barbican endpoint "
                "([barbican] barbican_endpoint, or the service catalog)")
        client = rest.TEEClient(str(endpoint), session=session)
        try:
            return client.secret_binding(secret_id)
        except rest.TEEClientError as exc:
            reasons = {
                "secret_not_found": "is not a secret of your project",
                "secret_forbidden": "cannot be read by you (Barbican's "
                                    "ACL and creator rules)",
                "secret_not_sealed": "is not sealed (not in the tee_sealed "
                                     "store): attestation would protect "
                                     "nothing",
            }
            reason = reasons.get(exc.code, f"cannot be checked: {exc}")
            raise SecretCheckError(f"{name} {reason}") from None


def add_to_paste_config(text: str) -> str:
    """Nova's api-paste.ini with both filters before the API router.

    Edited line by line (:class:`barbican_tee.api.paste.PasteFile`):
    comments, ``:`` separators and every other line stay byte for byte.
    Only the ``keystone`` pipeline of the composites built by
    ``nova.api.auth:pipeline_factory_v21`` changes (``/v2.1`` and the
    legacy ``/v2``: both create servers); Nova 33 and 34 read no other
    option there. The metadata and version pipelines never see a flavor or
    a server create. The two ``[filter:...]`` sections are appended.
    Idempotent: a filter already in a pipeline stays where it is.
    """
    from barbican_tee.api import paste

    doc = paste.PasteFile(text)
    targets = [name for name in doc.sections()
               if name.startswith("composite:")
               and (doc.value(name, "use") or "").strip() == _FACTORY_V21
               and doc.value(name, "keystone") is not None]
    if not targets:
        raise paste.PasteEditError(
            f"no composite uses {_FACTORY_V21} with a keystone pipeline")
    for name in targets:
        parts = doc.tokens(name, "keystone")
        if _ROUTER not in parts:
            raise paste.PasteEditError(
                f"[{name}] keystone does not end in {_ROUTER}")
        for filter_name, _factory in FILTERS:
            if filter_name not in parts:
                doc.insert_before(name, "keystone", _ROUTER, filter_name)
    for filter_name, factory in FILTERS:
        doc.ensure_section(f"filter:{filter_name}",
                           (("paste.filter_factory", factory),),
                           (_COMMENTS[filter_name],))
    return doc.text()


def main(argv: list[str] | None = None) -> int:
    """Rewrite the Nova paste file named on the command line."""
    from barbican_tee.api import paste

    return paste.rewrite_file(argv, __name__, add_to_paste_config)


if __name__ == "__main__":
    raise SystemExit(main())
