"""A real Keystone (keystone 30.0.0 from PyPI), and barbican-api behind it.

:class:`KeystoneServer` runs Keystone on sqlite with fernet tokens under
gunicorn on 127.0.0.1, from its own virtualenv
(``OPENSTACK_TEE_KEYSTONE_VENV``, made by ``tools/service-venv.sh``; tox
makes it): its pins stay out of the test environment.
``keystone-manage db_sync``, ``fernet_setup``, ``credential_setup`` and
``bootstrap`` prepare a temporary directory; the projects, users and
role assignments the tests use are then created through Keystone's own
API with the bootstrap admin's token.

:class:`KeystoneBarbicanServer` is barbican-api configured the way the
devstack plugins configure it: Barbican's own ``barbican-api-paste.ini``,
with devstack's ``/v1`` pipeline (``authtoken`` and ``context``), and our
filters added by ``python -m barbican_tee.api.paste`` (the devstack
plugin's step); ``[keystone_authtoken]`` as devstack's
``configure_keystone_authtoken_middleware`` writes it; Secure RBAC
(``enforce_scope`` and ``enforce_new_defaults``) as Barbican's devstack
plugin sets it by default; the stores as our devstack plugin enables them.
"""

from __future__ import annotations

from collections.abc import Mapping
from collections.abc import Sequence
import configparser
import dataclasses
import grp
import io
import os
import pwd
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any

import fixtures
import requests

from barbican_tee.api import paste as tee_paste
from barbican_tee import server
from tests.functional.barbican import db_template
from tests.functional.barbican import fixture as barbican_fixture

VENV_ENV = "OPENSTACK_TEE_KEYSTONE_VENV"
CONF_ENV = "OPENSTACK_TEE_KEYSTONE_CONF"
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(HERE)))
REGION = "RegionOne"
DOMAIN = "Default"
SERVICE_PROJECT = "service"
TIMEOUT = 30


@dataclasses.dataclass(frozen=True)
class User:
    """A Keystone user with roles on one project (Default domain)."""

    name: str
    project: str
    roles: tuple[str, ...]


# Two projects; in A a member, a reader and an admin, in B a member.
PROJECT_A = "tee-project-a"
PROJECT_B = "tee-project-b"
DEFAULT_USERS: tuple[User, ...] = (
    User("a-member", PROJECT_A, ("member",)),
    User("a-reader", PROJECT_A, ("reader",)),
    User("a-admin", PROJECT_A, ("admin",)),
    User("b-member", PROJECT_B, ("member",)),
)
# The service user auth_token validates tokens with, as devstack's
# create_service_user makes Barbican's: service and admin on "service".
SERVICE_USER = User("barbican", SERVICE_PROJECT, ("service", "admin"))


def keystone_venv() -> str:
    """Keystone's virtualenv, or an error that says how to make one."""
    venv = os.environ.get(VENV_ENV) or os.path.join(
        ROOT, ".tox", "keystone-venv")
    if not os.path.isfile(os.path.join(venv, "bin", "keystone-manage")):
        raise server.ServerError(
            f"no Keystone virtualenv at {venv!r}: run "
            f"tools/service-venv.sh {venv} (tox -e functional does) or set "
            f"{VENV_ENV}")
    return venv


class KeystoneServer(fixtures.Fixture):
    """Keystone on sqlite + fernet under gunicorn, with test users."""

    def __init__(self, users: Sequence[User] = DEFAULT_USERS,
                 workers: int = 2) -> None:
        super().__init__()
        self.users = tuple(users) + (SERVICE_USER,)
        self.workers = workers
        self.passwords: dict[str, str] = {}
        self.project_ids: dict[str, str] = {}
        self.user_ids: dict[str, str] = {}
        self.process: subprocess.Popen[bytes] | None = None

    # -- setup ---------------------------------------------------------
    def _setUp(self) -> None:
        self.venv = keystone_venv()
        self.data_dir = tempfile.mkdtemp(prefix="openstack-tee-keystone-")
        self.addCleanup(shutil.rmtree, self.data_dir, ignore_errors=True)
        self.port = server.free_port()
        self.conf_path = os.path.join(self.data_dir, "keystone.conf")
        self.log_path = os.path.join(self.data_dir, "keystone.log")
        self.admin_password = secrets.token_urlsafe(16)
        with open(self.conf_path, "w", encoding="utf-8") as f:
            f.write(self._render_conf())
        self._manage("db_sync")
        # The key repositories belong to whoever runs the tests.
        owner = ("--keystone-user", pwd.getpwuid(os.getuid()).pw_name,
                 "--keystone-group", grp.getgrgid(os.getgid()).gr_name)
        self._manage("fernet_setup", *owner)
        self._manage("credential_setup", *owner)
        # "--opt=value": a random password may start with "-", which
        # argparse would take for an option of its own (one run in 64).
        self._manage(
            "bootstrap", f"--bootstrap-password={self.admin_password}",
            "--bootstrap-username", "admin",
            "--bootstrap-project-name", "admin",
            "--bootstrap-role-name", "admin",
            "--bootstrap-service-name", "keystone",
            "--bootstrap-region-id", REGION,
            "--bootstrap-admin-url", self.url,
            "--bootstrap-public-url", self.url,
            "--bootstrap-internal-url", self.url)
        self._start()
        self.addCleanup(self._stop)
        self._populate()

    def _render_conf(self) -> str:
        parser = configparser.RawConfigParser()
        parser.read_dict({
            "DEFAULT": {"log_file": self.log_path},
            "database": {"connection": "sqlite:///" + os.path.join(
                self.data_dir, "keystone.sqlite")},
            "token": {"provider": "fernet"},
            "fernet_tokens": {"key_repository": os.path.join(
                self.data_dir, "fernet-keys")},
            "fernet_receipts": {"key_repository": os.path.join(
                self.data_dir, "fernet-keys")},
            "credential": {"key_repository": os.path.join(
                self.data_dir, "credential-keys")},
            # The fewest bcrypt rounds: test users only, and each token
            # issue hashes a password.
            "identity": {"password_hash_algorithm": "bcrypt",
                         "password_hash_rounds": "4"},
        })
        out = io.StringIO()
        parser.write(out)
        return out.getvalue()

    def _manage(self, *args: str) -> None:
        proc = subprocess.run(  # noqa: S603 - fixed argv
            [os.path.join(self.venv, "bin", "keystone-manage"),
             "--config-file", self.conf_path, *args],
            capture_output=True, text=True, timeout=300, check=False,
            cwd=self.data_dir)
        if proc.returncode != 0:
            out = (proc.stderr.strip() or proc.stdout.strip())
            raise server.ServerError(
                f"keystone-manage {args[0]} failed (exit {proc.returncode})"
                f":\n{out[-3000:]}")

    def _start(self, timeout: float = 120.0) -> None:
        env = dict(os.environ)
        env[CONF_ENV] = self.conf_path
        with open(os.path.join(self.data_dir, "gunicorn.log"), "ab") as log:
            self.process = subprocess.Popen(  # noqa: S603 - fixed argv
                [os.path.join(self.venv, "bin", "python"), "-m", "gunicorn",
                 "--bind", f"{server.HOST}:{self.port}",
                 "--workers", str(self.workers), "--timeout", "120",
                 "--graceful-timeout", "5", "--chdir", HERE,
                 "keystone_wsgi:application"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env,
                cwd=self.data_dir, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise server.ServerError(
                    f"keystone (gunicorn) exited with status "
                    f"{self.process.returncode}: {self._log_tail()}")
            try:
                if requests.get(self.auth_url, timeout=5).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.2)
        self._stop()
        raise server.ServerError(f"keystone did not answer on {self.url} "
                                 f"within {timeout} s: {self._log_tail()}")

    def _log_tail(self) -> str:
        text = ""
        for name in ("gunicorn.log", "keystone.log"):
            try:
                with open(os.path.join(self.data_dir, name),
                          errors="replace") as f:
                    text += f.read()[-3000:]
            except FileNotFoundError:
                pass
        return text

    def _stop(self) -> None:
        proc = self.process
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(proc.pid, 9)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            pass
        self.process = None

    # -- the admin API -------------------------------------------------
    def _admin(self, method: str, path: str, **kw: Any) -> Any:
        resp = requests.request(method, f"{self.auth_url}{path}",
                                headers={"X-Auth-Token": self._admin_token},
                                timeout=TIMEOUT, **kw)
        if resp.status_code >= 300:
            raise server.ServerError(f"keystone {method} {path}: "
                                     f"{resp.status_code} {resp.text}")
        return resp.json() if resp.content else None

    def _populate(self) -> None:
        self._admin_token = self._issue("admin", self.admin_password,
                                        "admin")[0]
        roles = {r["name"]: r["id"] for r in self._admin("GET", "/roles")[
            "roles"]}
        for user in self.users:
            if user.project not in self.project_ids:
                self.project_ids[user.project] = self._admin(
                    "POST", "/projects", json={"project": {
                        "name": user.project,
                        "domain_id": DOMAIN.lower()}})["project"]["id"]
            password = secrets.token_urlsafe(16)
            self.passwords[user.name] = password
            user_id = self._admin("POST", "/users", json={"user": {
                "name": user.name, "password": password,
                "domain_id": DOMAIN.lower(),
                "default_project_id": self.project_ids[user.project]}}
            )["user"]["id"]
            self.user_ids[user.name] = user_id
            for role in user.roles:
                if role not in roles:
                    roles[role] = self._admin("POST", "/roles", json={
                        "role": {"name": role}})["role"]["id"]
                self._admin("PUT", f"/projects/"
                            f"{self.project_ids[user.project]}/users/"
                            f"{user_id}/roles/{roles[role]}")

    def _issue(self, user: str, password: str, project: str
               ) -> tuple[str, dict[str, Any]]:
        resp = requests.post(f"{self.auth_url}/auth/tokens", timeout=TIMEOUT,
                             json={"auth": {
                                 "identity": {"methods": ["password"],
                                              "password": {"user": {
                                                  "name": user,
                                                  "domain": {"name": DOMAIN},
                                                  "password": password}}},
                                 "scope": {"project": {
                                     "name": project,
                                     "domain": {"name": DOMAIN}}}}})
        if resp.status_code != 201:
            raise server.ServerError(f"keystone refused a token for {user}: "
                                     f"{resp.status_code} {resp.text}")
        return resp.headers["X-Subject-Token"], resp.json()["token"]

    # -- for tests -----------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://{server.HOST}:{self.port}"

    @property
    def auth_url(self) -> str:
        return f"{self.url}/v3"

    def user(self, name: str) -> User:
        return next(u for u in self.users if u.name == name)

    def token(self, name: str) -> str:
        """A project-scoped token of user ``name``."""
        user = self.user(name)
        return self._issue(name, self.passwords[name], user.project)[0]

    def token_roles(self, name: str) -> list[str]:
        """The roles in ``name``'s token (implied roles included)."""
        user = self.user(name)
        body = self._issue(name, self.passwords[name], user.project)[1]
        return sorted(r["name"] for r in body["roles"])

    def project_id(self, project: str) -> str:
        return self.project_ids[project]

    def add_endpoint(self, service_type: str, name: str, url: str) -> str:
        """A catalog service with public, internal and admin endpoints.

        Returns the service's ID (for :meth:`delete_service`).
        """
        service_id: str = self._admin("POST", "/services", json={
            "service": {"type": service_type, "name": name}})["service"]["id"]
        for interface in ("public", "internal", "admin"):
            self._admin("POST", "/endpoints", json={"endpoint": {
                "service_id": service_id, "interface": interface,
                "region_id": REGION, "url": url}})
        return service_id

    def delete_service(self, service_id: str) -> None:
        """Remove a catalog service and its endpoints."""
        endpoints = self._admin("GET", f"/endpoints?service_id={service_id}")
        for endpoint in endpoints["endpoints"]:
            self._admin("DELETE", f"/endpoints/{endpoint['id']}")
        self._admin("DELETE", f"/services/{service_id}")

    def openstack_env(self, name: str) -> dict[str, str]:
        """``OS_*`` variables for the ``openstack`` CLI as user ``name``."""
        user = self.user(name)
        return {"OS_AUTH_TYPE": "password", "OS_AUTH_URL": self.auth_url,
                "OS_IDENTITY_API_VERSION": "3", "OS_USERNAME": name,
                "OS_PASSWORD": self.passwords[name],
                "OS_PROJECT_NAME": user.project,
                "OS_USER_DOMAIN_NAME": DOMAIN,
                "OS_PROJECT_DOMAIN_NAME": DOMAIN,
                "OS_REGION_NAME": REGION, "OS_INTERFACE": "public"}

    def authtoken_conf(self) -> dict[str, str]:
        """``[keystone_authtoken]`` as devstack's
        ``configure_keystone_authtoken_middleware`` writes it for Barbican.
        """
        return {"auth_type": "password", "interface": "public",
                "auth_url": self.url, "username": SERVICE_USER.name,
                "password": self.passwords[SERVICE_USER.name],
                "user_domain_name": DOMAIN,
                "project_name": SERVICE_PROJECT,
                "project_domain_name": DOMAIN,
                "www_authenticate_uri": self.url,
                "service_type": "key-manager"}


# ---------------------------------------------------------------------------
# barbican-api behind Keystone, configured as devstack configures it.

def barbican_paste_file() -> str:
    """Barbican 23.0.0's own ``barbican-api-paste.ini``, as installed."""
    path = os.path.join(sys.prefix, "etc", "barbican",
                        "barbican-api-paste.ini")
    if not os.path.isfile(path):
        raise server.ServerError(f"Barbican's paste file is not at {path}")
    return path


def devstack_paste(with_tee: bool = True) -> str:
    """The paste file devstack leaves, with or without our plugin's step.

    Barbican's devstack plugin copies the shipped file and sets
    ``[pipeline:barbican_api] pipeline = barbican-api-keystone`` (the
    shipped ``[composite:main]`` already maps ``/v1`` to
    ``barbican-api-keystone``); ours then runs ``python -m
    barbican_tee.api.paste`` on it. One difference: ``[filter:cors]``
    names the configuration file it reads (``oslo_config_file``), as our
    packaged paste file does, so that no ``/etc/barbican`` on the test
    machine is read.
    """
    with open(barbican_paste_file(), encoding="utf-8") as f:
        text = f.read()
    parser = configparser.RawConfigParser()
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(text)
    parser.set("pipeline:barbican_api", "pipeline", "barbican-api-keystone")
    parser.set("filter:cors", "oslo_config_file", "%(barbican_conf)s")
    out = io.StringIO()
    parser.write(out)
    text = out.getvalue()
    if with_tee:
        text = tee_paste.add_to_paste_config(text)
    return text


def devstack_conf(keystone: KeystoneServer) -> dict[str, dict[str, str]]:
    """The ``barbican.conf`` options devstack sets besides the stores."""
    return {
        "keystone_authtoken": keystone.authtoken_conf(),
        # Barbican's devstack plugin: BARBICAN_ENFORCE_SCOPE, True unless
        # ENFORCE_SCOPE says otherwise.
        "oslo_policy": {"enforce_scope": "True",
                        "enforce_new_defaults": "True"},
    }


class KeystoneBarbicanServer(barbican_fixture.BarbicanServer):
    """barbican-api with keystonemiddleware's auth_token against Keystone.

    ``with_tee=False`` leaves our filters and the tee_sealed store out:
    Barbican as devstack sets it up without openstack-tee.
    """

    def __init__(self, keystone: KeystoneServer, with_tee: bool = True,
                 workers: int = 2,
                 extra_conf: Mapping[str, Mapping[str, str]] | None = None,
                 trust_root: str | None = None) -> None:
        stores = (server.DEFAULT_STORES if with_tee
                  else (server.SOFTWARE_STORE,))
        super().__init__(workers=workers, extra_conf=extra_conf,
                         stores=stores, trust_root=trust_root)
        self.keystone = keystone
        self.with_tee = with_tee

    def _setUp(self) -> None:
        # Keystone's address and the service user's password are known
        # once it runs.
        conf: dict[str, dict[str, str]] = devstack_conf(self.keystone)
        for section, options in (self.extra_conf or {}).items():
            conf.setdefault(section, {}).update(options)
        self.extra_conf = conf
        self.data_dir = tempfile.mkdtemp(prefix="openstack-tee-barbican-")
        self.addCleanup(shutil.rmtree, self.data_dir, ignore_errors=True)
        self.port = server.free_port()
        # Barbican's database: TEE_FUNCTIONAL_DB's (Keystone's stays on
        # sqlite), new and empty, upgraded by the real commands here.
        kind = barbican_fixture.db_kind()
        if kind != "sqlite":
            self.db_url = self.useFixture(
                barbican_fixture.Database(kind)).url
        self.layout = server.prepare(
            self.data_dir, self.port, stores=self.stores,
            trust_root=self.trust_root, extra_conf=self.extra_conf,
            check=False, db_url=self.db_url)
        if kind == "postgresql" and self.postgresql_workaround:
            db_template.apply_postgresql_workaround(self.layout.db_url)
        with open(self.layout.paste_path, "w", encoding="utf-8") as f:
            f.write(devstack_paste(self.with_tee))
        server.preflight(self.layout)
        self.server = server.Server(self.layout, self.port, self.workers)
        self.addCleanup(self.server.stop)
        self.server.start()

    def headers(self, project: str, roles: str = "member",
                user: str = "user") -> dict[str, str]:
        raise AssertionError("this barbican-api takes Keystone tokens, not "
                             "X-Project-Id headers")
