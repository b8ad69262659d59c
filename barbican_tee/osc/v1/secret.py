"""``openstack tee secret bind`` and ``unbind``."""

from __future__ import annotations

import argparse
from typing import Any

from osc_lib.command import command
from osc_lib import exceptions

from barbican_tee.client import rest


def secret_id(ref: str) -> str:
    """A secret's ID from its ID or its href (``.../v1/secrets/<id>``)."""
    return ref.rstrip("/").rsplit("/", 1)[-1]


class BindSecret(command.ShowOne):
    """Seal a secret to an attestation policy.

    The secret (in the tee_sealed store) is then released only to a guest
    whose verified evidence meets the policy; its payload is never
    returned by the ordinary secret API.
    """

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = super().get_parser(prog_name)
        parser.add_argument("secret", metavar="<secret>",
                            help="secret ID or href")
        parser.add_argument("--policy", required=True, metavar="<policy>",
                            help="attestation policy ID")
        return parser

    def take_action(self, parsed_args: argparse.Namespace
                    ) -> tuple[tuple[str, ...], tuple[Any, ...]]:
        client: rest.TEEClient = self.app.client_manager.tee
        sid = secret_id(parsed_args.secret)
        try:
            answer = client.bind_secret(sid, parsed_args.policy)
        except rest.TEEClientError as exc:
            raise exceptions.CommandError(
                f"cannot bind secret {sid}: {exc.code}: {exc.message}"
            ) from None
        shown = {"secret_id": sid, "policy_id": parsed_args.policy}
        shown.update({k: v for k, v in answer.items()
                      if isinstance(v, (str, int))})
        columns = tuple(sorted(shown))
        return columns, tuple(shown[c] for c in columns)


class UnbindSecret(command.Command):
    """Unbind a sealed secret from its attestation policy.

    The secret is then released to no one until it is bound again.
    """

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = super().get_parser(prog_name)
        parser.add_argument("secret", metavar="<secret>",
                            help="secret ID or href")
        return parser

    def take_action(self, parsed_args: argparse.Namespace) -> None:
        client: rest.TEEClient = self.app.client_manager.tee
        sid = secret_id(parsed_args.secret)
        try:
            client.unbind_secret(sid)
        except rest.TEEClientError as exc:
            raise exceptions.CommandError(
                f"cannot unbind secret {sid}: {exc.code}: {exc.message}"
            ) from None
