"""gunicorn entry point for Keystone: ``keystone_wsgi:application``.

Runs in Keystone's own virtualenv (not the test environment): it imports
nothing but Keystone. Keystone's ``keystone.server.wsgi`` parses
``sys.argv`` with oslo.config, which under gunicorn holds gunicorn's own
arguments; here the application is built from the configuration file named
by ``OPENSTACK_TEE_KEYSTONE_CONF`` with an empty argument list.
"""

import os
import sys

from keystone.server.flask import core


def _build():
    conf = os.environ["OPENSTACK_TEE_KEYSTONE_CONF"]
    argv = sys.argv
    sys.argv = [argv[0]]
    try:
        return core.initialize_application(name="public",
                                           config_files=[conf])
    finally:
        sys.argv = argv


application = _build()
