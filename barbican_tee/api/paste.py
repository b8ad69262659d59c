"""Put the /v1/tee filters into a Barbican ``api-paste.ini``.

The file is edited line by line, not rewritten: comments, blank lines,
``:`` separators and every line we do not need stay byte for byte. Only
the pipeline lines that need our filters change, and the missing
``[filter:...]`` sections are appended. Idempotent (a second run changes
nothing); used by the devstack plugin.

Which pipelines: the one Barbican actually serves ``/v1`` with, as
``[composite:main]`` (any ``urlmap`` composite) maps it (Barbican 23.0.0's
file: ``barbican-api-keystone``; devstack keeps it), followed through a
pipeline whose app is another pipeline. Not the version pipeline (no
secret routes), and not the unauthenticated (``barbican_api``) or audit
(``barbican-api-keystone-audit``) pipelines while nothing mounts them: an
operator who mounts another pipeline at ``/v1`` runs this again. Until
then that pipeline has no ``/v1/tee`` routes, and the ``tee_sealed`` store
itself still refuses a sealed secret's payload.

In the pipeline:

* ``tee_peer`` then ``tee_public`` at its front. ``tee_peer`` keeps the
  connection's address before ``http_proxy_to_wsgi`` may replace
  ``REMOTE_ADDR`` with a header anyone can send
  (:mod:`barbican_tee.api.client_addr`). ``tee_public`` serves the
  challenge and the release, which carry no token: it must come before
  the first filter that needs or makes a token context
  (keystonemiddleware's ``auth_token`` or Barbican's context middleware,
  known by the factory its section names, whatever the section is
  called), and in front of Barbican's ``cors``, ``request_id`` and
  ``http_proxy_to_wsgi`` its routes do without them (no browser, no URL
  in their answers, a request id of its own: about a tenth of a release's
  CPU). Where ``tee_peer`` is in the pipeline already, ``tee_public``
  goes right after it.
* ``tee_api`` (the token routes and the sealed payload check) right before
  ``microversion`` (or the app), after the context middleware.

A filter already in the pipeline stays where it is (a ``tee_public``
further down works, at that cost), except a ``tee_peer`` after
``http_proxy_to_wsgi`` or ``tee_public`` (or after the context filter
while ``tee_public`` is still to be added): that file is refused (the
operator moves it).
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Sequence
import dataclasses
import re
import sys

# name, factory, extra options, comment lines of the appended section.
FILTERS: tuple[tuple[str, str, tuple[tuple[str, str], ...],
                     tuple[str, ...]], ...] = (
    ("tee_peer", "barbican_tee.api.client_addr:PeerFilter.factory", (),
     ("Keeps the connection's address for the per-client rate limit",
      "before http_proxy_to_wsgi may replace REMOTE_ADDR with a header",
      "(see [tee_api] trusted_proxies); in front of tee_public.")),
    ("tee_public", "barbican_tee.api.filter:TEEAPIFilter.factory",
     (("routes", "public"),),
     ("POST /v1/tee/challenge and /v1/tee/release: no token, the evidence",
      "authenticates; must come before the context (or authtoken)",
      "middleware. In front of cors, request_id and http_proxy_to_wsgi,",
      "which these routes do without (it gives them a request id itself),",
      "after tee_peer.")),
    ("tee_api", "barbican_tee.api.filter:TEEAPIFilter.factory",
     (("routes", "token"),),
     ("The token routes of /v1/tee and the sealed payload check.",)),
)
CONTEXT_FILTERS = ("authtoken", "unauthenticated-context", "context")
# What a token or context filter's factory looks like, whatever the
# operator named its section: keystonemiddleware's auth_token, Barbican's
# context middlewares.
_CONTEXT_FACTORY = re.compile(r"keystonemiddleware|auth_token|"
                              r"barbican\.api\.middleware\.context")
MOUNT = "/v1"

_SECTION = re.compile(r"\s*\[(?P<name>[^\]]+)\]")
_OPTION = re.compile(r"(?P<key>[^=:\s][^=:]*?)\s*[=:]\s*")
_TOKEN = re.compile(r"\S+")


class PasteEditError(Exception):
    """The file does not look like one we know how to edit."""


@dataclasses.dataclass
class _Option:
    key: str
    first: int     # index of the ``key = value`` line
    start: int     # column where the value starts on that line
    last: int      # index of its last continuation line


@dataclasses.dataclass
class _Section:
    name: str
    header: int
    end: int       # one past its last non-blank, non-comment line
    options: dict[str, _Option]


class PasteFile:
    """An ini file as lines, edited in place (what configparser reads)."""

    def __init__(self, text: str) -> None:
        self.lines = text.splitlines(keepends=True)
        self.newline = "\r\n" if self.lines and self.lines[0].endswith(
            "\r\n") else "\n"

    def text(self) -> str:
        return "".join(self.lines)

    def sections(self) -> dict[str, _Section]:
        out: dict[str, _Section] = {}
        current: _Section | None = None
        option: _Option | None = None
        indent = 0
        for i, line in enumerate(self.lines):
            body = line.rstrip("\r\n")
            stripped = body.strip()
            if not stripped or stripped[0] in "#;":
                continue
            level = len(body) - len(body.lstrip())
            if option is not None and level > indent:
                option.last = i
                assert current is not None
                current.end = i + 1
                continue
            header = _SECTION.match(body)
            if header:
                current = _Section(header.group("name"), i, i + 1, {})
                out.setdefault(current.name, current)
                option = None
                continue
            match = _OPTION.match(body, level)
            if current is None or match is None:
                option = None
                continue
            option = _Option(match.group("key").strip(), i, match.end(), i)
            indent = level
            current.options.setdefault(option.key, option)
            current.end = i + 1
        return out

    def value(self, section: str, key: str) -> str | None:
        sec = self.sections().get(section)
        if sec is None or key not in sec.options:
            return None
        return " ".join(tok for tok, _i, _c in self._tokens(sec.options[key]))

    def _tokens(self, opt: _Option) -> list[tuple[str, int, int]]:
        out = []
        for i in range(opt.first, opt.last + 1):
            body = self.lines[i].rstrip("\r\n")
            if i != opt.first and body.strip()[:1] in ("#", ";"):
                continue
            start = opt.start if i == opt.first else 0
            out += [(m.group(), i, m.start())
                    for m in _TOKEN.finditer(body, start)]
        return out

    def tokens(self, section: str, key: str) -> list[str]:
        sec = self.sections()[section]
        return [tok for tok, _i, _c in self._tokens(sec.options[key])]

    def insert_before(self, section: str, key: str, anchor: str,
                      name: str) -> None:
        """Put ``name`` into the value, right before the token ``anchor``."""
        opt = self.sections()[section].options[key]
        for tok, i, col in self._tokens(opt):
            if tok == anchor:
                line = self.lines[i]
                self.lines[i] = f"{line[:col]}{name} {line[col:]}"
                return
        raise PasteEditError(f"[{section}] {key} has no {anchor!r}")

    def ensure_section(self, name: str, options: Sequence[tuple[str, str]],
                       comment: Sequence[str] = ()) -> None:
        """Append ``[name]``, or set the options of the existing one."""
        sec = self.sections().get(name)
        if sec is None:
            if self.lines and not self.lines[-1].endswith("\n"):
                self.lines[-1] += self.newline
            new = ["", f"[{name}]"] + [f"# {c}" for c in comment]
            new += [f"{k} = {v}" for k, v in options]
            self.lines += [line + self.newline for line in new]
            return
        for key, value in options:
            sec = self.sections()[name]
            opt = sec.options.get(key)
            if opt is None:
                self.lines.insert(sec.end, f"{key} = {value}{self.newline}")
            elif [t for t, _i, _c in self._tokens(opt)] != [value]:
                line = self.lines[opt.first]
                ending = line[len(line.rstrip("\r\n")):] or self.newline
                head = line[:opt.start]
                if not head[-1:].isspace():
                    head += " "
                # The value's own lines go; comment lines among them stay.
                comments = [
                    c for c in self.lines[opt.first + 1:opt.last + 1]
                    if c.strip()[:1] in ("#", ";")]
                self.lines[opt.first:opt.last + 1] = [
                    f"{head}{value}{ending}", *comments]


def _mounted(paste: PasteFile, mount: str) -> list[str]:
    """The names an ``urlmap`` composite serves ``mount`` with."""
    out = []
    for name, sec in paste.sections().items():
        use = paste.value(name, "use") or ""
        if not name.startswith("composite:") or "urlmap" not in use:
            continue
        for key in sec.options:
            if key.rstrip("/") == mount and key != "use":
                out.append(paste.value(name, key) or "")
    return out


def _target_pipelines(paste: PasteFile) -> list[str]:
    """The pipeline sections serving /v1 (see the module's docstring)."""
    targets: list[str] = []
    for name in _mounted(paste, MOUNT):
        seen = set()
        while True:
            section = f"pipeline:{name}"
            if section in seen or paste.value(section, "pipeline") is None:
                raise PasteEditError(
                    f"{MOUNT} is served by {name!r}, which is not a "
                    "pipeline of the file: add the /v1/tee filters by hand "
                    "(see the install guide)")
            seen.add(section)
            parts = paste.tokens(section, "pipeline")
            if any(f in parts for f in CONTEXT_FILTERS) or len(parts) > 1:
                break
            name = parts[-1]   # a pipeline whose app is another pipeline
        if section not in targets:
            targets.append(section)
    if not targets:
        raise PasteEditError(f"no urlmap composite maps {MOUNT}")
    return targets


def _is_context(paste: PasteFile, name: str) -> bool:
    """Whether pipeline element ``name`` needs or makes a token context.

    By its section's factory (``paste.filter_factory`` or ``use``), so a
    ``[filter:keystone_authtoken]`` counts; by the names Barbican gives
    them for a filter the file does not define.
    """
    section = f"filter:{name}"
    if section not in paste.sections():
        return name in CONTEXT_FILTERS
    factory = " ".join(paste.value(section, key) or ""
                       for key in ("paste.filter_factory", "use"))
    return bool(_CONTEXT_FACTORY.search(factory))


def add_to_paste_config(text: str) -> str:
    """Barbican's paste file with the /v1/tee filters, edited minimally."""
    paste = PasteFile(text)
    for section in _target_pipelines(paste):
        parts = paste.tokens(section, "pipeline")
        context = next((f for f in parts if _is_context(paste, f)), None)
        if context is None and "tee_public" not in parts:
            raise PasteEditError(
                f"[{section}] has no authtoken or context middleware "
                "to put tee_public before")
        if "tee_peer" in parts:
            # Where tee_public is still to come, it comes right after.
            later = [f for f in parts[:parts.index("tee_peer")]
                     if f in ("http_proxy_to_wsgi", "tee_public")
                     or (f == context and "tee_public" not in parts)]
            if later:
                why = {"http_proxy_to_wsgi": "which may already have "
                       "replaced REMOTE_ADDR with a header the client sent",
                       "tee_public": "which counts each client by the "
                       "address tee_peer keeps"}.get(
                    later[0], "while tee_public, which goes right after "
                    "it, must come before that filter")
                raise PasteEditError(
                    f"[{section}] has tee_peer after {later[0]}, {why}: "
                    "move tee_peer to the front of the pipeline")
        if "tee_public" not in parts:
            if "tee_peer" in parts:
                paste.insert_before(section, "pipeline",
                                    parts[parts.index("tee_peer") + 1],
                                    "tee_public")
            else:
                paste.insert_before(section, "pipeline", parts[0],
                                    "tee_peer")
                paste.insert_before(section, "pipeline", parts[0],
                                    "tee_public")
        elif "tee_peer" not in parts:
            paste.insert_before(section, "pipeline", parts[0], "tee_peer")
        if "tee_api" not in parts:
            anchor = "microversion" if "microversion" in parts else parts[-1]
            paste.insert_before(section, "pipeline", anchor, "tee_api")
    for name, factory, options, comment in FILTERS:
        paste.ensure_section(f"filter:{name}",
                             (("paste.filter_factory", factory),) + options,
                             comment)
    return paste.text()


def rewrite_file(argv: list[str] | None, prog: str,
                 edit: Callable[[str], str]) -> int:
    """``python -m <prog> FILE``: apply ``edit`` to FILE in place."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print(f"usage: python -m {prog} API_PASTE_INI", file=sys.stderr)
        return 2
    with open(args[0], newline="") as f:
        text = f.read()
    try:
        new = edit(text)
    except PasteEditError as exc:
        print(f"{prog}: {args[0]}: {exc}", file=sys.stderr)
        return 1
    if new != text:
        with open(args[0], "w", newline="") as f:
            f.write(new)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Rewrite the Barbican paste file named on the command line."""
    return rewrite_file(argv, __name__, add_to_paste_config)


if __name__ == "__main__":
    raise SystemExit(main())
