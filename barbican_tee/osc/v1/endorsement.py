"""``openstack tee endorsement import|list``: the endorsement cache.

``import`` takes a bundle (doc/source/admin: "Endorsement bundles") or the
files themselves as AMD's KDS and Intel's PCS serve them (a VCEK in DER,
``cert_chain``, a CRL, QuoteCollateralV3 JSON): each is recognised by its
content. Barbican verifies every entry against its pinned roots; a bundle
with one bad entry imports nothing. ``--output`` writes the bundle to a
file instead, for a machine with access to AMD and Intel to prepare one
for a site without.
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

from osc_lib.command import command
from osc_lib import exceptions

from barbican_tee.client import bundle as bundle_mod
from barbican_tee.client import rest

COLUMNS = ("id", "kind", "product", "subject", "expires_at", "crl_number")
LIST_COLUMNS = (*COLUMNS, "expired", "imported_at", "imported_by")
PRODUCTS = ("milan", "genoa", "turin", "tdx")


def _row(entry: dict[str, Any], columns: tuple[str, ...]
         ) -> tuple[Any, ...]:
    return tuple("-" if entry.get(c) is None else entry.get(c)
                 for c in columns)


def _fail(exc: rest.TEEClientError, what: str) -> exceptions.CommandError:
    return exceptions.CommandError(f"{what}: {exc.code}: {exc.message}")


class ImportEndorsement(command.Lister):
    """Import endorsements into the cache (administrators, services)."""

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = super().get_parser(prog_name)
        parser.add_argument("files", metavar="<file>", nargs="+",
                            help="a bundle, or VCEK/cert_chain/CRL/"
                                 "collateral files from AMD KDS or Intel "
                                 "PCS")
        parser.add_argument("--tdx-quote", metavar="<file>",
                            help="a TDX quote (binary) of the platform: "
                                 "its collateral is verified with it on "
                                 "import (required for collateral)")
        parser.add_argument("--output", metavar="<bundle-file>",
                            help="write the bundle to this file instead of "
                                 "importing it")
        return parser

    def take_action(self, parsed_args: argparse.Namespace
                    ) -> tuple[tuple[str, ...], list[tuple[Any, ...]]]:
        try:
            bundle = bundle_mod.from_files(parsed_args.files,
                                           parsed_args.tdx_quote)
        except (OSError, bundle_mod.BundleError) as exc:
            raise exceptions.CommandError(str(exc)) from None
        if parsed_args.output:
            fd = os.open(parsed_args.output,
                         os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            with os.fdopen(fd, "w") as f:
                json.dump(bundle, f, indent=1)
            return (("kind", "file"),
                    [(e.get("kind"), parsed_args.output)
                     for e in bundle["endorsements"]])
        client: rest.TEEClient = self.app.client_manager.tee
        try:
            entries = client.import_endorsements(bundle)
        except rest.TEEClientError as exc:
            raise _fail(exc, "cannot import the endorsements") from None
        return (*COLUMNS, "new"), [_row(e, (*COLUMNS, "new"))
                                   for e in entries]


class ListEndorsement(command.Lister):
    """List the endorsement cache (administrators, services)."""

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = super().get_parser(prog_name)
        parser.add_argument("--kind", choices=bundle_mod.KINDS,
                            help="only this kind")
        parser.add_argument("--product", choices=PRODUCTS,
                            help="only this product")
        parser.add_argument("--subject", metavar="<hex-prefix>",
                            help="only subjects (VCEK: chip id:TCB, TDX: "
                                 "FMSPC) starting with this")
        return parser

    def take_action(self, parsed_args: argparse.Namespace
                    ) -> tuple[tuple[str, ...], list[tuple[Any, ...]]]:
        client: rest.TEEClient = self.app.client_manager.tee
        try:
            entries = client.list_endorsements(
                kind=parsed_args.kind or "",
                product=parsed_args.product or "",
                subject=parsed_args.subject or "")
        except rest.TEEClientError as exc:
            raise _fail(exc, "cannot list the endorsements") from None
        return LIST_COLUMNS, [_row(e, LIST_COLUMNS) for e in entries]
