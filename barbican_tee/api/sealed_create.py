"""``POST /v1/tee/secrets``: a new secret in the sealed store.

Creating a sealed secret used to mean making ``tee_sealed`` the project's
preferred store, which needs the project admin role and seals everything
the project creates afterwards (other services' volume keys and TLS
certificates included). This creates one secret in ``tee_sealed`` whatever
the project's preferred store, with Barbican's own machinery:

* the fields are checked by Barbican's validators (``NewSecretValidator``
  for a stored payload, the key order's ``TypeOrderValidator`` for a
  generated key), with Barbican's limits (payload size, expiration);
* Barbican's quota for secrets applies (``QuotaEnforcer``);
* the secret is stored by Barbican's secret store manager with the sealed
  store named, the way Barbican names a store for a secret it already
  holds (``get_plugin_store(plugin_name=...)`` ignores the preferred
  store), and saved by Barbican's own repository helpers, so it is an
  ordinary Barbican secret (``GET /v1/secrets/{id}`` shows its metadata)
  whose payload only attests out;
* a generated key is made by the sealed store (``os.urandom``) inside
  barbican-api and is never returned.

Barbican's RBAC (``secrets:post``) is enforced by the filter, with
Barbican's own code, before this module runs.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any
from urllib import parse as urlparse

from barbican.common import exception as b_exc
from barbican.common import quota
from barbican.common import resources as b_res
from barbican.common import utils as b_utils
from barbican.common import validators
from barbican.model import models
from barbican.model import repositories
from barbican.plugin.interface import secret_store as ss
from barbican.plugin import resources as plugin_res
from barbican.plugin.util import translations
from oslo_config import cfg
import webob  # type: ignore[import-untyped]

from barbican_tee.plugin import store as sealed_store

CONF = cfg.CONF

# Barbican's POST /v1/secrets fields, without the transport key ones (the
# sealed store has no transport key).
FIELDS = ("name", "payload", "payload_content_type",
          "payload_content_encoding", "algorithm", "bit_length", "mode",
          "secret_type", "expiration")
# Key sizes the sealed store generates: AES's three; an HMAC key of at
# least 128 bits and at most 4096 (a block of SHA-512 is 1024).
_AES_BITS = (128, 192, 256)
_HMAC_BITS = range(128, 4097, 8)
_GENERATED = {"aes": _AES_BITS, "hmacsha1": _HMAC_BITS,
              "hmacsha256": _HMAC_BITS, "hmacsha384": _HMAC_BITS,
              "hmacsha512": _HMAC_BITS}
DEFAULT_CONTENT_TYPE = "application/octet-stream"


class CreateError(Exception):
    """A request refused: ``status``, stable ``code``, message.

    Messages never hold the payload.
    """

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


@dataclasses.dataclass(frozen=True)
class NewSecret:
    """A request Barbican's validators accepted.

    ``fields`` as Barbican's validator normalized them (name stripped,
    expiration parsed); ``generate``: no payload, the store makes a key.
    """

    fields: dict[str, Any]
    generate: bool

    def __repr__(self) -> str:
        # Never the payload, even in a traceback's locals.
        shown = {k: v for k, v in self.fields.items() if k != "payload"}
        return f"NewSecret(generate={self.generate}, fields={shown})"


def check_barbican_hooks() -> list[str]:
    """What this module needs from Barbican and is missing (names)."""
    needed = {
        plugin_res: ("_store_secret_using_plugin", "_generate_symmetric_key",
                     "_save_secret_in_repo", "_save_secret_metadata_in_repo"),
        validators: ("NewSecretValidator", "TypeOrderValidator"),
        quota: ("QuotaEnforcer",),
        b_res: ("get_or_create_project",),
        translations: ("normalize_before_encryption",),
        ss: ("get_manager", "KeySpec", "SecretDTO"),
    }
    return [f"{module.__name__}.{name}"
            for module, names in needed.items() for name in names
            if not hasattr(module, name)]


def _field_error(exc: Exception) -> CreateError:
    """Barbican's refusal as this API's stable code."""
    field = (getattr(exc, "invalid_property", None)
             or getattr(exc, "invalid_field", None))
    message = str(getattr(exc, "client_message", "") or
                  "the secret is not valid")
    if isinstance(exc, b_exc.LimitExceeded):
        return CreateError(413, "payload_too_large",
                           "the payload is larger than Barbican accepts "
                           "([DEFAULT] max_allowed_secret_in_bytes)")
    code = f"{field}_invalid" if field in FIELDS else "secret_invalid"
    return CreateError(400, code, message)


def parse(body: dict[str, Any]) -> NewSecret:
    """The request's fields, as Barbican's validators see them."""
    unknown = sorted(k for k in body if k not in FIELDS)
    if unknown:
        names = ", ".join(repr(k[:40]) for k in unknown[:5])
        raise CreateError(400, "field_unknown",
                          f"unknown field(s) {names}; a sealed secret "
                          f"takes {', '.join(FIELDS)} and policy")
    fields = dict(body)
    generate = "payload" not in fields
    if not generate and not isinstance(fields["payload"], str):
        # Before Barbican's schema, whose message would quote the value.
        raise CreateError(400, "payload_invalid",
                          "payload must be a string (base64 with "
                          "payload_content_encoding base64)")
    if generate:
        if fields.get("algorithm") is None:
            raise CreateError(400, "secret_content_missing",
                              "give a payload to store, or an algorithm "
                              "and bit_length to generate a key")
        if fields.get("bit_length") is None:
            raise CreateError(400, "bit_length_invalid",
                              "bit_length is required to generate a key")
        if fields.get("secret_type", ss.SecretType.SYMMETRIC) != (
                ss.SecretType.SYMMETRIC):
            raise CreateError(400, "secret_type_invalid",
                              "a generated key is a symmetric secret")
    try:
        if generate:
            # Barbican's checks for a key order's meta: the secret fields,
            # then algorithm and bit_length (a multiple of 8).
            order = validators.TypeOrderValidator().validate(
                {"type": "key", "meta": fields})
            fields = order["meta"]
        else:
            fields = validators.NewSecretValidator().validate(fields)
    except b_exc.BarbicanHTTPException as exc:
        raise _field_error(exc) from None
    if generate:
        algorithm = str(fields["algorithm"]).lower()
        if algorithm not in _GENERATED:
            raise CreateError(400, "algorithm_unsupported",
                              "the sealed store generates only "
                              f"{', '.join(sorted(_GENERATED))} keys")
        if fields["bit_length"] not in _GENERATED[algorithm]:
            raise CreateError(400, "bit_length_invalid",
                              f"bit_length {fields['bit_length']} is not "
                              f"a size of {algorithm} key the sealed store "
                              "generates (AES: 128, 192, 256; HMAC: "
                              "128-4096, a multiple of 8)")
        fields["secret_type"] = ss.SecretType.SYMMETRIC
    return NewSecret(fields=fields, generate=generate)


def create(new: NewSecret, project_id: str, user_id: str | None) -> str:
    """Store ``new`` in the sealed store; the new secret's id.

    One transaction of Barbican's session: committed here, rolled back on
    any failure (nothing half-made is left).
    """
    try:
        secret_id = _create(new, project_id, user_id)
        repositories.commit()
        return secret_id
    except Exception:
        repositories.rollback()
        raise
    finally:
        repositories.clear()


def _create(new: NewSecret, project_id: str, user_id: str | None) -> str:
    project = b_res.get_or_create_project(project_id)
    try:
        quota.QuotaEnforcer("secrets",
                            repositories.get_secret_repository()
                            ).enforce(project)
    except b_exc.QuotaReached:
        raise CreateError(403, "quota_exceeded",
                          "the project's quota for secrets is reached"
                          ) from None
    data = dict(new.fields)
    data["creator_id"] = user_id
    key_spec = ss.KeySpec(alg=data.get("algorithm"),
                          bit_length=data.get("bit_length"),
                          mode=data.get("mode"))
    try:
        # Named, as for a secret Barbican already holds: the project's
        # preferred store plays no part.
        plugin = ss.get_manager().get_plugin_store(
            key_spec, plugin_name=sealed_store.PLUGIN_PATH,
            project_id=project.id)
    except (ss.SecretStorePluginNotFound,
            ss.SecretStorePluginsNotConfigured):
        raise CreateError(503, "sealed_store_unavailable",
                          "the tee_sealed store is not enabled in this "
                          "Barbican ([secretstore] configuration)"
                          ) from None
    secret_model = models.Secret(data)
    if new.generate:
        content_type = data.get("payload_content_type") or (
            DEFAULT_CONTENT_TYPE)
        # The plugin makes the key (os.urandom) and seals it to the
        # secret; it never leaves barbican-api.
        metadata = plugin_res._generate_symmetric_key(  # noqa: SLF001
            plugin, key_spec, secret_model, project, content_type)
    else:
        try:
            unencrypted, content_type = (
                translations.normalize_before_encryption(
                    data["payload"], data.get("payload_content_type"),
                    data.get("payload_content_encoding"),
                    secret_model.secret_type, enforce_text_only=True))
        except b_exc.BarbicanHTTPException as exc:
            raise _field_error(exc) from None
        dto = ss.SecretDTO(type=secret_model.secret_type,
                           secret=unencrypted, key_spec=key_spec,
                           content_type=content_type, transport_key=None)
        metadata = plugin_res._store_secret_using_plugin(  # noqa: SLF001
            plugin, dto, secret_model, project)
    plugin_res._save_secret_in_repo(secret_model, project)  # noqa: SLF001
    plugin_res._save_secret_metadata_in_repo(  # noqa: SLF001
        secret_model, metadata, plugin, content_type)
    return str(secret_model.id)


def delete(secret_id: str, project_id: str) -> None:
    """Delete a secret just created (its binding failed)."""
    try:
        repo = repositories.get_secret_repository()
        secret = repo.get_secret_by_id(entity_id=secret_id,
                                       suppress_exception=True)
        if secret is not None:
            plugin_res.delete_secret(secret, project_id)
        repositories.commit()
    except Exception:
        repositories.rollback()
        raise
    finally:
        repositories.clear()


def secret_href(environ: dict[str, Any], secret_id: str) -> str:
    """The secret's ref, as Barbican's POST /v1/secrets makes it.

    ``[DEFAULT] host_href`` if set, else from the request the way
    ``barbican.common.utils.get_base_url_from_request`` derives it (which
    needs pecan's request, absent in a paste filter).
    """
    base = CONF.host_href
    if not base:
        url = urlparse.urlsplit(webob.Request(environ).application_url)
        scheme = environ.get("HTTP_X_FORWARDED_PROTO", "http")
        netloc = environ.get("HTTP_HOST", url.netloc)
        path = re.sub(r"/v[0-9.]+$", "", url.path)
        base = f"{scheme}://{netloc}{path}"
    return (f"{str(base).rstrip('/')}/{b_utils.API_VERSION}/secrets/"
            f"{secret_id}")
