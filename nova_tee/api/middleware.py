"""Reject flavors whose ``tee:`` keys contradict ``hw:mem_encryption*``.

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

:func:`add_to_paste_config` does that edit on a copy of Nova's file.
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Iterable
import configparser
import io
import json
import re
from typing import Any

from nova_tee import specs

FILTER_NAME = "tee_extra_specs"
FACTORY = "nova_tee.api.middleware:TEEExtraSpecsCheck.factory"
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
        touches = any(k.startswith(specs.PREFIX)
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
        length = int(environ.get("CONTENT_LENGTH") or 0)
        raw = environ["wsgi.input"].read(length) if length else b""
        # Put the body back for Nova, which reads it again.
        environ["wsgi.input"] = io.BytesIO(raw)
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


def add_to_paste_config(text: str) -> str:
    """Nova's api-paste.ini with the filter in every v2.1 pipeline."""
    parser = configparser.RawConfigParser()
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(text)
    section = f"filter:{FILTER_NAME}"
    if not parser.has_section(section):
        parser.add_section(section)
    parser.set(section, "paste.filter_factory", FACTORY)
    for name in parser.sections():
        if not name.startswith("composite:openstack_compute_api_v21"):
            continue
        for option, value in parser.items(name):
            if option == "use" or FILTER_NAME in value.split():
                continue
            parts = value.split()
            if "osapi_compute_app_v21" in parts:
                idx = parts.index("osapi_compute_app_v21")
                parts.insert(idx, FILTER_NAME)
                parser.set(name, option, " ".join(parts))
    out = io.StringIO()
    parser.write(out)
    return out.getvalue()



def main(argv: list[str] | None = None) -> int:
    """Rewrite the Nova paste file named on the command line."""
    from barbican_tee.api import paste

    return paste.rewrite_file(argv, __name__, add_to_paste_config)


if __name__ == "__main__":
    raise SystemExit(main())
