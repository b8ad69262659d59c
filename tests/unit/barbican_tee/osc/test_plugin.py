"""How the CLI plugin picks the endpoint and the credentials."""

from __future__ import annotations

import argparse
from typing import Any

import fixtures
from osc_lib import exceptions

from barbican_tee.osc import plugin
from barbican_tee.osc.v1 import secret
from tests import base


class _Manager:
    """The few things of osc-lib's ClientManager the plugin reads."""

    region_name = "RegionTwo"
    interface = "internal"

    def __init__(self, **config: Any) -> None:
        self.config = config
        self.session = object()
        self.asked: list[tuple[str, str, str]] = []

    def get_configuration(self) -> dict[str, Any]:
        return dict(self.config)

    def get_endpoint_for_service_type(self, service_type: str,
                                      region_name: str,
                                      interface: str) -> str:
        self.asked.append((service_type, region_name, interface))
        return "https://barbican.example.net:9311"


class MakeClientTest(base.TestCase):

    def test_catalog_endpoint_and_the_cli_session(self) -> None:
        manager = _Manager()
        client = plugin.make_client(manager)
        self.assertEqual([("key-manager", "RegionTwo", "internal")],
                         manager.asked)
        self.assertEqual("https://barbican.example.net:9311",
                         client.endpoint)
        self.assertIs(manager.session, client.session)
        self.assertEqual({}, client.headers)

    def test_explicit_endpoint(self) -> None:
        manager = _Manager(tee_endpoint="https://kms.example.net/v1")
        client = plugin.make_client(manager)
        self.assertEqual([], manager.asked)
        self.assertEqual("https://kms.example.net", client.endpoint)
        self.assertIs(manager.session, client.session)

    def test_noauth_project_for_development(self) -> None:
        manager = _Manager(tee_endpoint="http://127.0.0.1:9311",
                           tee_noauth_project="p1")
        client = plugin.make_client(manager)
        self.assertIsNone(client.session)
        self.assertEqual("p1", client.headers["X-Project-Id"])
        self.assertRaisesRegex(exceptions.CommandError,
                               "needs --os-tee-endpoint",
                               plugin.make_client,
                               _Manager(tee_noauth_project="p1"))

    def test_no_catalog_endpoint_says_what_to_give(self) -> None:
        # OS_AUTH_TYPE=none: osc-lib finds no endpoint (None).
        manager = _Manager()
        manager.get_endpoint_for_service_type = (  # type: ignore
            lambda *a, **k: None)
        self.assertRaisesRegex(exceptions.CommandError,
                               "--os-tee-endpoint", plugin.make_client,
                               manager)

    def test_global_options_read_the_environment(self) -> None:
        self.useFixture(fixtures.EnvironmentVariable(
            "OS_TEE_ENDPOINT", "http://127.0.0.1:9"))
        parser = plugin.build_option_parser(argparse.ArgumentParser())
        args = parser.parse_args([])
        self.assertEqual("http://127.0.0.1:9", args.os_tee_endpoint)
        self.assertIsNone(args.os_tee_noauth_project)

    def test_secret_id_from_href(self) -> None:
        sid = "2f6b4c1e-0000-4000-8000-000000000001"
        for ref in (sid, f"https://kms/v1/secrets/{sid}",
                    f"https://kms/v1/secrets/{sid}/"):
            self.assertEqual(sid, secret.secret_id(ref))
