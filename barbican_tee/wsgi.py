"""gunicorn entry point: ``gunicorn barbican_tee.wsgi:application``.

Replaces Barbican 23.0.0's ``barbican.wsgi.api``, which loads the paste
file from a hard-coded ``/etc/barbican`` path and reads its configuration
from oslo.config's default locations. Here both come from the environment:

* ``OPENSTACK_TEE_CONF``: Barbican's configuration file (parsed, for the
  global configuration and every plugin module's own, before the app is
  built);
* ``OPENSTACK_TEE_PASTE``: the paste file, loaded with
  ``paste.deploy.loadapp('config:' + path)``; the global configuration
  ``barbican_conf`` (the configuration file's path) is available to it as
  ``%(barbican_conf)s``.

Every configured secret store and crypto plugin must load: one that does
not raises :class:`barbican_tee.server.PluginLoadError`, the worker fails
to boot and gunicorn exits, instead of Barbican's default of logging the
failure and running with the remaining stores.

``python -m barbican_tee.wsgi`` builds the app once and exits 0, or 1 with
the reason: the preflight check of ``openstack-tee serve``.
"""

from __future__ import annotations

import gc
import os
import sys
from typing import Any

from paste import deploy

from barbican_tee import server

_application: Any = None


def build_application() -> Any:
    """Parse Barbican's configuration, load the paste app, check plugins."""
    try:
        conf_path = os.environ[server.ENV_CONF]
        paste_path = os.environ[server.ENV_PASTE]
    except KeyError as exc:
        raise server.ServerError(
            f"{exc.args[0]} is not set: barbican_tee.wsgi needs "
            f"{server.ENV_CONF} (barbican.conf) and {server.ENV_PASTE} "
            "(the paste file)") from None
    if not os.path.isfile(paste_path):
        raise server.ServerError(f"paste file {paste_path!r} does not exist")
    # Order matters: Barbican's configuration objects are created (and
    # oslo's global cfg.CONF replaced by Barbican's) on first import.
    conf_path = os.path.abspath(conf_path)
    server.configure_barbican(conf_path)
    server.strict_plugin_loading()
    app = deploy.loadapp("config:" + os.path.abspath(paste_path),
                         global_conf={"barbican_conf": conf_path})
    server.check_plugins_loaded()
    # What was built so far lives as long as the worker: out of the cyclic
    # collector's sight, so that neither its collections nor the one at
    # interpreter exit walk it again (that took a stopping worker seconds
    # of CPU).
    gc.freeze()
    print(f"{server.READY_MARKER} (pid {os.getpid()})", file=sys.stderr,
          flush=True)
    return app


def __getattr__(name: str) -> Any:
    # Built on first access, so that importing this module (``python -m``,
    # documentation tools) does not start Barbican.
    global _application
    if name == "application":
        if _application is None:
            _application = build_application()
        return _application
    raise AttributeError(name)


def main() -> int:
    try:
        build_application()
    except Exception as exc:
        print(f"barbican-api cannot start: {type(exc).__name__}: {exc}",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
