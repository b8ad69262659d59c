"""``openstack tee floor set|show``: platform TCB floors (administrators).

The floor an administrator sets is combined with the deployment's own
(``[tee_attestation] tcb_floor_*`` in barbican.conf): the effective floor
is the higher of the two, and every release and placement is held to it.
"""

from __future__ import annotations

import argparse
from typing import Any

from osc_lib.command import command
from osc_lib import exceptions

from barbican_tee.client import rest

SNP_PRODUCTS = ("milan", "genoa", "turin")
PRODUCTS = (*SNP_PRODUCTS, "tdx")
SNP_FIELDS = ("bootloader", "tee", "snp", "microcode")
COLUMNS = ("product", "effective", "config", "set", "updated_at",
           "updated_by")


def _format(value: Any) -> Any:
    if isinstance(value, dict):
        return ", ".join(
            f"{k}={','.join(v) if isinstance(v, list) else v}"
            for k, v in sorted(value.items()) if v is not None) or "-"
    return "-" if value is None else value


def _row(floor: dict[str, Any]) -> tuple[Any, ...]:
    error = floor.get("error")
    if isinstance(error, dict):
        # A product Barbican cannot give the floor of (its releases are
        # refused): say so where the effective floor would be.
        floor = {"product": floor.get("product"),
                 "effective": f"error: {error.get('code')}"}
    return tuple(_format(floor.get(c)) for c in COLUMNS)


def _fail(exc: rest.TEEClientError, what: str) -> exceptions.CommandError:
    return exceptions.CommandError(f"{what}: {exc.code}: {exc.message}")


class SetFloor(command.ShowOne):
    """Set a product's platform TCB floor (administrators).

    SEV-SNP products (milan, genoa, turin) take every security patch
    level; turin also --fmc. tdx takes the accepted --tcb-status values
    (repeat the option) and optionally --min-tee-tcb-svn.
    """

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = super().get_parser(prog_name)
        parser.add_argument("product", metavar="<product>",
                            choices=PRODUCTS,
                            help=f"one of {', '.join(PRODUCTS)}")
        for name in (*SNP_FIELDS, "fmc"):
            only = " (turin only)" if name == "fmc" else ""
            parser.add_argument(f"--{name}", metavar="<N>", type=int,
                                help=f"lowest {name} security patch level "
                                     f"(0-255){only}")
        parser.add_argument("--tcb-status", metavar="<status>",
                            action="append", dest="tcb_statuses",
                            help="an Intel TCB status to accept, e.g. "
                                 "UpToDate (tdx; repeat for more)")
        parser.add_argument("--min-tee-tcb-svn", metavar="<hex>",
                            help="lowest TEE TCB SVN, 32 hex digits (tdx)")
        return parser

    @staticmethod
    def body(args: argparse.Namespace) -> dict[str, Any]:
        """The PUT body the options make, checked for the product."""
        snp_given = [n for n in (*SNP_FIELDS, "fmc")
                     if getattr(args, n) is not None]
        if args.product == "tdx":
            if snp_given:
                raise exceptions.CommandError(
                    "tdx takes --tcb-status and --min-tee-tcb-svn, not "
                    + ", ".join(f"--{n}" for n in snp_given))
            if not args.tcb_statuses:
                raise exceptions.CommandError(
                    "tdx needs at least one --tcb-status")
            body: dict[str, Any] = {"tcb_statuses": args.tcb_statuses}
            if args.min_tee_tcb_svn is not None:
                body["min_tee_tcb_svn"] = args.min_tee_tcb_svn.lower()
            return body
        if args.tcb_statuses or args.min_tee_tcb_svn is not None:
            raise exceptions.CommandError(
                f"{args.product} takes --bootloader, --tee, --snp, "
                "--microcode (and --fmc on turin)")
        missing = [f"--{n}" for n in SNP_FIELDS if getattr(args, n) is None]
        if missing:
            raise exceptions.CommandError(
                f"{args.product} needs {', '.join(missing)}")
        if args.fmc is not None and args.product != "turin":
            raise exceptions.CommandError("--fmc is for turin only")
        return {n: getattr(args, n) for n in (*SNP_FIELDS, "fmc")
                if getattr(args, n) is not None}

    def take_action(self, parsed_args: argparse.Namespace
                    ) -> tuple[tuple[str, ...], tuple[Any, ...]]:
        client: rest.TEEClient = self.app.client_manager.tee
        body = self.body(parsed_args)
        try:
            floor = client.set_floor(parsed_args.product, body)
        except rest.TEEClientError as exc:
            raise _fail(exc, f"cannot set the {parsed_args.product} floor"
                        ) from None
        return COLUMNS, _row(floor)


class ShowFloor(command.Lister):
    """Show the platform TCB floors: effective, from config, set here."""

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = super().get_parser(prog_name)
        parser.add_argument("product", metavar="<product>", nargs="?",
                            choices=PRODUCTS,
                            help="only this product (default: all)")
        return parser

    def take_action(self, parsed_args: argparse.Namespace
                    ) -> tuple[tuple[str, ...], list[tuple[Any, ...]]]:
        client: rest.TEEClient = self.app.client_manager.tee
        try:
            if parsed_args.product:
                floors = [client.get_floor(parsed_args.product)]
            else:
                floors = client.list_floors()
        except rest.TEEClientError as exc:
            raise _fail(exc, "cannot show the TCB floors") from None
        return COLUMNS, [_row(f) for f in floors]
