"""Nova's own unit tests, run with openstack-tee's pieces substituted.

Their own stestr invocation (see tox.ini): Nova's ``nova.test`` registers
command-line options on the global CONF, which Barbican's config module
(imported by the other unit tests) has already parsed.
"""
