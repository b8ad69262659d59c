"""The real ``openstack`` command in the tests, and what it talks to.

python-openstackclient with our plugin (loaded through its entry point),
run with this environment's ``OS_*`` variables replaced by the test's.
There is no Keystone in most tests: :class:`KeystoneStandIn` adds what
keystonemiddleware would for python-barbicanclient's own commands.
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Mapping
import http.server
import os
import subprocess
import threading
from typing import Any

import requests

from tests import base


def openstack(*args: str, env: Mapping[str, str],
              stdin: str | None = None
              ) -> subprocess.CompletedProcess[str]:
    """``openstack *args`` with ``env`` as its only ``OS_*`` variables."""
    full = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
    full.update(env)
    return subprocess.run([base.installed_command("openstack"), *args],
                          capture_output=True, text=True, check=False,
                          env=full, timeout=120, input=stdin)


class KeystoneStandIn(http.server.ThreadingHTTPServer):
    """A proxy that adds what keystonemiddleware would (X-Project-Id).

    python-barbicanclient sends no project header with ``--os-auth-type
    none``, and there is no Keystone here.
    """

    def __init__(self, target: str, project: str) -> None:
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() not in ("host", "content-length")}
                headers.update({"X-Project-Id": outer.project,
                                "X-User-Id": "owner",
                                "X-Roles": "admin,member,reader"})
                resp = requests.request(self.command, outer.target
                                        + self.path, headers=headers,
                                        data=body, timeout=60)
                self.send_response(resp.status_code)
                for k, v in resp.headers.items():
                    if k.lower() not in ("content-length", "connection",
                                         "transfer-encoding"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(resp.content)))
                self.end_headers()
                self.wfile.write(resp.content)

            do_GET = do_POST = do_PUT = do_DELETE = _forward

            def log_message(self, *args: Any) -> None:
                return None

        self.target = target
        self.project = project
        super().__init__(("127.0.0.1", 0), Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


def secret_get(test: base.TestCase, barbican_url: str, project: str,
               secret_id: str
               ) -> Callable[..., subprocess.CompletedProcess[str]]:
    """``openstack secret get <the secret's ref> *args``, as ``project``.

    python-barbicanclient's own command, through a
    :class:`KeystoneStandIn` that ``test`` stops when it ends.
    """
    proxy = KeystoneStandIn(barbican_url, project)
    thread = threading.Thread(target=proxy.serve_forever, daemon=True)
    thread.start()
    test.addCleanup(proxy.server_close)
    test.addCleanup(proxy.shutdown)
    env = {"OS_AUTH_TYPE": "none", "OS_ENDPOINT": proxy.url + "/v1"}
    ref = f"{proxy.url}/v1/secrets/{secret_id}"

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return openstack("secret", "get", ref, *args, env=env)

    return cli
