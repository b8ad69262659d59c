"""OpenStack CLI (python-openstackclient) plugin module for ``tee``.

Registered under ``openstack.cli.extension``. The TEE API lives under
Barbican's ``/v1``: the endpoint is the catalog's ``key-manager`` endpoint
unless ``--os-tee-endpoint`` (``OS_TEE_ENDPOINT``) names one. Requests are
authenticated with the CLI's keystoneauth session. For a Barbican without
Keystone (``openstack-tee serve``, development only),
``--os-tee-noauth-project`` sends that project ID in ``X-Project-Id``
instead of a token.
"""

from __future__ import annotations

import argparse
from typing import Any

from osc_lib import exceptions
from osc_lib import utils

from barbican_tee.client import rest

DEFAULT_API_VERSION = "1"
API_VERSION_OPTION = "os_tee_api_version"
API_NAME = "tee"
API_VERSIONS = {"1": "barbican_tee.client.rest.TEEClient"}
SERVICE_TYPE = "key-manager"


def make_client(instance: Any) -> rest.TEEClient:
    """The TEE API client for the CLI's client manager ``instance``."""
    config = instance.get_configuration()
    endpoint = config.get("tee_endpoint")
    project = config.get("tee_noauth_project")
    if project:
        if not endpoint:
            raise exceptions.CommandError(
                "--os-tee-noauth-project needs --os-tee-endpoint (there is "
                "no catalog without Keystone)")
        return rest.TEEClient(endpoint, headers={
            "X-Project-Id": project, "X-User-Id": "openstack-cli",
            "X-Roles": "admin,member,reader"})
    if not endpoint:
        endpoint = instance.get_endpoint_for_service_type(
            SERVICE_TYPE, region_name=instance.region_name,
            interface=instance.interface)
        if not endpoint:
            raise exceptions.CommandError(
                f"no {SERVICE_TYPE} endpoint in the service catalog (or no "
                "catalog: OS_AUTH_TYPE=none); give --os-tee-endpoint "
                "(OS_TEE_ENDPOINT)")
    return rest.TEEClient(endpoint, session=instance.session)


def build_option_parser(parser: argparse.ArgumentParser
                        ) -> argparse.ArgumentParser:
    """The plugin's global options."""
    parser.add_argument(
        "--os-tee-api-version", metavar="<tee-api-version>",
        default=utils.env("OS_TEE_API_VERSION"),
        help=f"TEE API version, default={DEFAULT_API_VERSION} "
             "(Env: OS_TEE_API_VERSION)")
    parser.add_argument(
        "--os-tee-endpoint", metavar="<url>",
        default=utils.env("OS_TEE_ENDPOINT"),
        help="Barbican endpoint that serves /v1/tee (default: the "
             "catalog's key-manager endpoint) (Env: OS_TEE_ENDPOINT)")
    parser.add_argument(
        "--os-tee-noauth-project", metavar="<project-id>",
        default=utils.env("OS_TEE_NOAUTH_PROJECT"),
        help="development only: a Barbican without Keystone, acting as "
             "this project (Env: OS_TEE_NOAUTH_PROJECT)")
    return parser
