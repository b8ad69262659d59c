"""Put the /v1/tee filters into a Barbican ``api-paste.ini``.

``tee_public`` (challenge and release, which carry no token) goes before
``authtoken`` (or the unauthenticated context middleware); ``tee_api`` (the
token routes and the sealed payload check) right before ``microversion``,
after the context middleware. Idempotent; used by the devstack plugin.
"""

from __future__ import annotations

from collections.abc import Callable
import configparser
import io
import sys

FILTERS = {
    "tee_public": ("barbican_tee.api.filter:TEEAPIFilter.factory",
                   "public"),
    "tee_api": ("barbican_tee.api.filter:TEEAPIFilter.factory", "token"),
}


def add_to_paste_config(text: str) -> str:
    parser = configparser.RawConfigParser()
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(text)
    for name, (factory, routes) in FILTERS.items():
        section = f"filter:{name}"
        if not parser.has_section(section):
            parser.add_section(section)
        parser.set(section, "paste.filter_factory", factory)
        parser.set(section, "routes", routes)
    for section in parser.sections():
        if not section.startswith("pipeline:") or not parser.has_option(
                section, "pipeline"):
            continue
        parts = parser.get(section, "pipeline").split()
        if "apiapp" not in parts:
            continue
        if "tee_public" not in parts:
            for anchor in ("authtoken", "unauthenticated-context",
                           "context"):
                if anchor in parts:
                    parts.insert(parts.index(anchor), "tee_public")
                    break
        if "tee_api" not in parts:
            anchor = "microversion" if "microversion" in parts else "apiapp"
            parts.insert(parts.index(anchor), "tee_api")
        parser.set(section, "pipeline", " ".join(parts))
    out = io.StringIO()
    parser.write(out)
    return out.getvalue()



def rewrite_file(argv: list[str] | None, prog: str,
                 edit: Callable[[str], str]) -> int:
    """``python -m <prog> FILE``: apply ``edit`` to FILE in place."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print(f"usage: python -m {prog} API_PASTE_INI", file=sys.stderr)
        return 2
    with open(args[0]) as f:
        text = f.read()
    new = edit(text)
    if new != text:
        with open(args[0], "w") as f:
            f.write(new)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Rewrite the Barbican paste file named on the command line."""
    return rewrite_file(argv, __name__, add_to_paste_config)


if __name__ == "__main__":
    raise SystemExit(main())
