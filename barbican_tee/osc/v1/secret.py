"""``openstack tee secret create``, ``bind`` and ``unbind``."""

from __future__ import annotations

import argparse
import base64
import sys
from typing import Any

from osc_lib.command import command
from osc_lib import exceptions

from barbican_tee.client import rest


def secret_id(ref: str) -> str:
    """A secret's ID from its ID or its href (``.../v1/secrets/<id>``)."""
    return ref.rstrip("/").rsplit("/", 1)[-1]


# What ``create`` prints, in this order (-f json: these keys).
CREATE_COLUMNS = ("secret_ref", "secret_id", "name", "origin",
                  "secret_type", "algorithm", "bit_length", "mode",
                  "expiration", "policy_id")
_TEXT_TYPES = ("text/plain",)


def _read_payload(path: str) -> bytes:
    """The payload from a file, or from standard input for ``-``."""
    try:
        if path == "-":
            return bytes(sys.stdin.buffer.read())
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise exceptions.CommandError(
            f"cannot read the payload from {path}: {exc.strerror}"
        ) from None


class CreateSecret(command.ShowOne):
    """Create a sealed secret: a payload stored, or a key generated.

    The secret goes into the tee_sealed store whatever the project's
    preferred store (which stays as it is), and is released only to an
    attested guest. The payload is read from a file or standard input,
    never from the command line (where other users and shell history
    could see it); with --generate, Barbican makes the key and it never
    leaves Barbican.
    """

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = super().get_parser(prog_name)
        parser.add_argument("--name", metavar="<name>",
                            help="a name for the secret")
        source = parser.add_mutually_exclusive_group(required=True)
        source.add_argument(
            "--payload-file", metavar="<file>",
            help="read the payload from <file> ('-': standard input); "
                 "sent base64-encoded unless --payload-content-type is "
                 "text/plain")
        source.add_argument(
            "--generate", action="store_true",
            help="have Barbican generate a symmetric key (see "
                 "--algorithm, --bit-length)")
        parser.add_argument(
            "--payload-content-type", metavar="<content-type>",
            help="the payload's type (default: application/octet-stream)")
        parser.add_argument(
            "--secret-type", metavar="<secret-type>",
            help="symmetric, passphrase, private, public, certificate or "
                 "opaque (default: opaque for a stored payload, symmetric "
                 "for a generated key)")
        parser.add_argument(
            "--algorithm", metavar="<algorithm>",
            help="the key's algorithm (with --generate: aes, the default, "
                 "or hmacsha1/256/384/512)")
        parser.add_argument(
            "--bit-length", metavar="<bit-length>", type=int,
            help="the key's size in bits (with --generate: default 256)")
        parser.add_argument("--mode", metavar="<mode>",
                            help="the algorithm mode, e.g. cbc or xts")
        parser.add_argument(
            "--expiration", metavar="<expiration>",
            help="when the secret expires (ISO 8601, e.g. "
                 "2027-01-01T00:00:00Z)")
        parser.add_argument(
            "--policy", metavar="<policy>",
            help="attestation policy ID to bind the secret to at once")
        return parser

    def document(self, args: argparse.Namespace) -> dict[str, Any]:
        """The request body for ``POST /v1/tee/secrets``."""
        doc: dict[str, Any] = {}
        for field in ("name", "secret_type", "algorithm", "bit_length",
                      "mode", "expiration", "policy"):
            value = getattr(args, field)
            if value is not None:
                doc[field] = value
        content_type = args.payload_content_type
        if args.generate:
            doc.setdefault("algorithm", "aes")
            doc.setdefault("bit_length", 256)
            if content_type is not None:
                doc["payload_content_type"] = content_type
            return doc
        raw = _read_payload(args.payload_file)
        if not raw:
            raise exceptions.CommandError(
                f"the payload in {args.payload_file} is empty")
        if content_type is not None and content_type.split(";")[
                0].strip().lower() in _TEXT_TYPES:
            try:
                doc["payload"] = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise exceptions.CommandError(
                    f"the payload in {args.payload_file} is not UTF-8 "
                    "text; leave out --payload-content-type to send it "
                    "as bytes") from None
            doc["payload_content_type"] = content_type
        else:
            doc["payload"] = base64.b64encode(raw).decode()
            doc["payload_content_type"] = (content_type
                                           or "application/octet-stream")
            doc["payload_content_encoding"] = "base64"
        return doc

    def take_action(self, parsed_args: argparse.Namespace
                    ) -> tuple[tuple[str, ...], tuple[Any, ...]]:
        client: rest.TEEClient = self.app.client_manager.tee
        doc = self.document(parsed_args)
        try:
            answer = client.create_secret(doc)
        except rest.TEEClientError as exc:
            raise exceptions.CommandError(
                f"cannot create the secret: {exc.code}: {exc.message}"
            ) from None
        doc.pop("payload", None)
        ref = str(answer["secret_ref"])
        shown: dict[str, Any] = {
            "secret_ref": ref, "secret_id": secret_id(ref),
            "origin": "generated" if parsed_args.generate else "stored",
            "policy_id": answer.get("policy_id"),
            "secret_type": doc.get("secret_type") or (
                "symmetric" if parsed_args.generate else "opaque")}
        for field in ("name", "algorithm", "bit_length", "mode",
                      "expiration"):
            shown[field] = doc.get(field)
        return CREATE_COLUMNS, tuple(shown[c] for c in CREATE_COLUMNS)


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
