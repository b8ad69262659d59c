"""``openstack tee tcb report`` run against Nova's in-process harness.

The command's own class (:class:`barbican_tee.osc.v1.tcb.TcbReport`),
parsed and run as the ``openstack`` client runs it, with a real
keystoneauth session whose endpoints are the harness's Nova API and
placement (in-process, through wsgi-intercept) and a TEEClient on the
barbican-api: what it reads is what the driver published to placement and
what Nova's API answers. Only the client manager is built here, since the
harness has no Keystone catalog.
"""

from __future__ import annotations

import io
from typing import Any

from keystoneauth1 import plugin as ks_plugin
from keystoneauth1 import session as ks_session

from barbican_tee.client import rest
from barbican_tee.osc.v1 import tcb

ADMIN = {"X-Project-Id": "cloud-admin", "X-Roles": "admin",
         "X-User-Id": "operator"}


class HarnessAuth(ks_plugin.BaseAuthPlugin):
    """The harness's endpoints per service type, and its no-auth headers."""

    def __init__(self, endpoints: dict[str, str],
                 headers: dict[str, str]) -> None:
        super().__init__()
        self.endpoints = endpoints
        self.headers = headers

    def get_headers(self, session: Any, **kwargs: Any) -> dict[str, str]:
        return dict(self.headers)

    def get_endpoint(self, session: Any, service_type: str | None = None,
                     **kwargs: Any) -> str:
        return self.endpoints[str(service_type)]


class Manager:
    interface = "public"
    region_name = None

    def __init__(self, session: ks_session.Session,
                 tee: rest.TEEClient) -> None:
        self.session = session
        self.tee = tee


class App:
    def __init__(self, manager: Manager) -> None:
        self.client_manager = manager
        # The report names hosts it leaves out (SEV-only) on stderr.
        self.stderr = io.StringIO()


def tcb_report(test: Any, barbican_url: str
               ) -> tuple[tuple[str, ...], list[tuple[str, ...]]]:
    """Columns and rows of the report, for a TEEServersTestBase ``test``."""
    placement = test.placement.fixture
    auth = HarnessAuth(
        {"placement": placement.endpoint,
         "compute": test.admin_api.base_url},
        {"X-Auth-Token": placement.token, "X-Auth-User": "admin",
         "X-Auth-Project-Id": test.admin_api.project_id,
         "X-Roles": "reader,member,admin"})
    manager = Manager(ks_session.Session(auth=auth),
                       rest.TEEClient(barbican_url, headers=ADMIN))
    command = tcb.TcbReport(App(manager), None)
    args = command.get_parser("openstack tee tcb report").parse_args([])
    columns, rows = command.take_action(args)
    return tuple(columns), [tuple(str(c) for c in row) for row in rows]
