"""Barbican's /v1/tee API as Nova's services call it.

One builder for nova-compute (launch-time attestation, instance bindings)
and nova-scheduler (TEEFilter's TCB floor reads): ``[tee] barbican_url``
with the ``[tee_barbican]`` service credentials, or, for development,
``[tee] barbican_noauth_project``. The keystoneauth plugin (and so its
token) is loaded once per process and shared; each caller gets a client
with its own timeout, which also bounds the token requests it makes.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from oslo_config import cfg

from barbican_tee.client import rest
from nova_tee import conf as tee_conf

CONF = cfg.CONF
tee_conf.register_opts(CONF)

_lock = threading.Lock()
# (pid, [tee_barbican] values) -> the auth plugin loaded from them, and a
# session per timeout sharing it. A fork or another configuration (tests)
# loads them again.
_auth: dict[tuple[Any, ...], Any] = {}
_sessions: dict[tuple[Any, ...], Any] = {}


def _group_key() -> tuple[Any, ...]:
    group = CONF.tee_barbican
    return (os.getpid(), tuple(sorted(
        (name, repr(group[name])) for name in group)))


def _session(timeout: float) -> Any:
    from keystoneauth1 import loading as ks_loading

    with _lock:
        key = _group_key()
        auth = _auth.get(key)
        if auth is None:
            auth = ks_loading.load_auth_from_conf_options(
                CONF, "tee_barbican")
            # Loading registers the plugin's own options (username, ...):
            # the key counts them from now on.
            key = _group_key()
            _auth.clear()
            _sessions.clear()
            _auth[key] = auth
        session = _sessions.get((key, timeout))
        if session is None:
            session = ks_loading.load_session_from_conf_options(
                CONF, "tee_barbican", auth=auth)
            # The session's timeout applies to the token requests of the
            # auth plugin too; [tee_barbican] timeout may only shorten it.
            configured = CONF.tee_barbican.timeout
            session.timeout = (timeout if configured is None
                               else min(float(configured), timeout))
            _sessions[(key, timeout)] = session
        return session


def client(user: str, timeout: float) -> rest.TEEClient:
    """A client of ``[tee] barbican_url``; the caller checked it is set.

    ``user`` labels the service in Barbican's audit when no Keystone is
    used (``X-User-Id`` with ``[tee] barbican_noauth_project``).
    """
    url = CONF.tee.barbican_url
    if CONF.tee.barbican_noauth_project:
        return rest.TEEClient(url, timeout=timeout, headers={
            "X-Project-Id": CONF.tee.barbican_noauth_project,
            "X-User-Id": user,
            "X-Roles": "service"})
    return rest.TEEClient(url, session=_session(timeout), timeout=timeout)
