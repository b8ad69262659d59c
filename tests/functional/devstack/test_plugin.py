"""The devstack plugin, run with devstack's and Barbican's real shell code.

``stack-phases.sh`` sources devstack's functions, stackrc and lib/* and
Barbican's devstack plugin from the fixtures (``DEVSTACK_FIXTURES``,
default ``../shared/fixtures/devstack`` beside the checkout; see
SOURCES.md there) and runs what stack.sh runs, in its order:
``configure_nova`` (with ``create_nova_conf`` and
``configure_nova_hypervisor``), the plugins' ``stack install`` and
``stack post-config`` phases, lib/nova's ``start_nova_compute`` (which
rebuilds nova-cpu.conf from the cell's nova.conf and local.conf) and the
plugins' ``stack extra`` phase. Only commands that change the host or
start services are stubbed: ``sudo``, ``run_process`` (so
``start_nova_compute`` rebuilds nova-cpu.conf but starts nothing),
``restart_service``, ``install_package``, ``setup_develop``,
``configure_libvirt``, ``recreate_database``, ``barbican-manage``,
``openstack-tee`` (the plugin's ``db upgrade``) and ``sleep``; each
records its call in ``WORK/calls``.
"""

from __future__ import annotations

import configparser
import difflib
import filecmp
import os
import shutil
import subprocess
import sys
import tempfile

from tests import base

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(HERE)))
HARNESS = os.path.join(HERE, "stack-phases.sh")
# devstack's real code is read where the workplace keeps it, never copied
# into the project: DEVSTACK_FIXTURES, else ../shared/fixtures/devstack
# beside the checkout, else this machine's shared fixtures (a clean clone
# elsewhere, as CI makes).
_CANDIDATES = [p for p in (
    os.environ.get("DEVSTACK_FIXTURES"),
    os.path.join(os.path.dirname(ROOT), "shared", "fixtures", "devstack"),
    "/work/shared/fixtures/devstack") if p]
FIXTURES = next((p for p in _CANDIDATES if os.path.isfile(
    os.path.join(p, "devstack", "functions"))), _CANDIDATES[0])

CONTROLLER_SERVICES = ("n-api,n-cpu,n-sch,n-cond,placement-client,barbican,"
                       "openstack-tee,tempest,mysql,rabbit")
SUBNODE_SERVICES = "n-cpu,placement-client,openstack-tee,rabbit"
# A controller that runs no nova-compute: the scheduler is configured on
# its own.
CONTROLLER_ONLY_SERVICES = ("n-api,n-sch,n-cond,placement-api,barbican,"
                            "openstack-tee,tempest,mysql,rabbit")
# HOST_IP of the node the harness stacks; a subnode's SERVICE_HOST is the
# controller's address instead.
HOST_IP = "192.0.2.10"
CONTROLLER_IP = "192.0.2.1"

# local.conf's post-config section for nova-cpu.conf, which
# start_nova_compute merges after copying the cell's nova.conf.
LOCAL_CONF = """[[post-config|$NOVA_CPU_CONF]]
[DEFAULT]
reserved_host_memory_mb = 1024
"""


def _ini(path: str) -> configparser.RawConfigParser:
    # strict=False: multi-valued options are repeated lines; the last wins
    # here, the multi-valued ones are counted on the text instead.
    parser = configparser.RawConfigParser(
        strict=False, default_section="__no_default__")
    with open(path) as f:
        parser.read_string(f.read())
    return parser


class DevstackPluginTest(base.TestCase):

    def setUp(self) -> None:
        super().setUp()
        if not os.path.isfile(os.path.join(FIXTURES, "devstack",
                                           "functions")):
            self.fail(f"devstack's code is required in one of "
                      f"{_CANDIDATES} (set DEVSTACK_FIXTURES)")
        if shutil.which("gawk") is None:
            self.fail("gawk is required (devstack's local.conf merging; "
                      "tools/install-deps.sh installs it)")
        self.work = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.work)
        self.etc = os.path.join(self.work, "etc")
        with open(os.path.join(self.work, "local.conf"), "w") as f:
            f.write(LOCAL_CONF)

    def _stack(self, services: str, post_config_runs: int = 1,
               disabled: str = "", service_host: str = "",
               plugins: str = "", expect_rc: int = 0) -> str:
        env = dict(os.environ, DEVSTACK_FIXTURES=FIXTURES,
                   OPENSTACK_TEE_ROOT=ROOT, PYTHON=sys.executable,
                   NOVA_WHEEL_ETC=os.path.join(sys.prefix, "etc"),
                   BARBICAN_WHEEL_ETC=os.path.join(sys.prefix, "etc"),
                   HARNESS_DISABLED=disabled,
                   HARNESS_SERVICE_HOST=service_host,
                   HARNESS_PLUGINS=plugins)
        proc = subprocess.run(
            ["bash", HARNESS, self.work, services, str(post_config_runs)],
            env=env, capture_output=True, text=True, check=False,
            timeout=300)
        out = proc.stdout + proc.stderr
        if expect_rc == 0:
            self.assertEqual(0, proc.returncode, out)
        else:
            self.assertNotEqual(0, proc.returncode, out)
        return out

    def _path(self, *parts: str) -> str:
        return os.path.join(self.etc, *parts)

    def _read(self, *parts: str) -> str:
        with open(self._path(*parts)) as f:
            return f.read()

    def _calls(self) -> str:
        with open(os.path.join(self.work, "calls")) as f:
            return f.read()

    def _assert_compute_configured(self, service_host: str) -> None:
        # nova-compute reads nova-cpu.conf as start_nova_compute left it.
        cpu = _ini(self._path("nova", "nova-cpu.conf"))
        self.assertEqual("libvirt_tee.TEELibvirtDriver",
                         cpu.get("DEFAULT", "compute_driver"))
        # local.conf's post-config section was merged by the rebuild.
        self.assertEqual("1024", cpu.get("DEFAULT", "reserved_host_memory_mb"))
        self.assertEqual(f"http://{service_host}/key-manager",
                         cpu.get("tee", "barbican_url"))
        # devstack's service-user convention (configure_keystoneauth) with
        # the nova user, which create_service_user gives the service role.
        self.assertEqual({
            "auth_type": "password",
            "auth_url": f"http://{service_host}/identity",
            "username": "nova",
            "password": "secretservice",
            "user_domain_name": "Default",
            "project_name": "service",
            "project_domain_name": "Default",
        }, {k: v for k, v in cpu.items("tee_barbican") if k != "interface"})
        self.assertIn("run_process n-cpu", self._calls())
        self.assertIn("nova-compute --config-file "
                      f"{self._path('nova', 'nova-cpu.conf')}", self._calls())

    def test_all_in_one(self) -> None:
        self._stack(CONTROLLER_SERVICES)
        self._assert_compute_configured(HOST_IP)
        self._assert_scheduler_reads_floors(HOST_IP)

        nova_text = self._read("nova", "nova.conf")
        nova = _ini(self._path("nova", "nova.conf"))
        self.assertEqual("libvirt_tee.TEELibvirtDriver",
                         nova.get("DEFAULT", "compute_driver"))
        self.assertEqual(
            "ComputeFilter,ComputeCapabilitiesFilter,ImagePropertiesFilter,"
            "ServerGroupAntiAffinityFilter,ServerGroupAffinityFilter,"
            "SameHostFilter,DifferentHostFilter,TEEFilter",
            nova.get("filter_scheduler", "enabled_filters"))
        for line in ("available_filters = nova.scheduler.filters.all_filters",
                     "available_filters = nova_tee.scheduler.TEEFilter",
                     "weight_classes = nova.scheduler.weights.all_weighers",
                     "weight_classes = nova_tee.scheduler.TEEWeigher"):
            self.assertEqual(1, nova_text.count(line + "\n"), line)
        self.assertEqual("1", nova.get("tee", "min_free_slots"))

        # tempest is told about TEEFilter through $NOVA_FILTERS, which
        # lib/tempest's configure_tempest writes to scheduler_enabled_filters.
        with open(os.path.join(self.work, "tempest-vars")) as f:
            self.assertTrue(f.read().rstrip().endswith(",TEEFilter"))

        paste = _ini(self._path("nova", "api-paste.ini"))
        self.assertTrue(paste.get(
            "composite:openstack_compute_api_v21", "keystone").endswith(
            " keystonecontext tee_extra_specs tee_secret_check "
            "osapi_compute_app_v21"))
        self.assertEqual(
            "nova_tee.api.middleware:TEESecretCheck.factory",
            paste.get("filter:tee_secret_check", "paste.filter_factory"))
        # The tee_secret check goes through castellan's Barbican backend,
        # which Barbican's own devstack plugin configures.
        self.assertEqual("barbican", nova.get("key_manager", "backend"))

        barbican = _ini(self._path("barbican", "barbican.conf"))
        self.assertEqual("tee_sealed", barbican.get(
            "secretstore:tee_sealed", "secret_store_plugin"))
        self.assertEqual("software,tee_sealed", barbican.get(
            "secretstore", "stores_lookup_suffix"))
        # Barbican's default backend stays the global default.
        self.assertEqual(("store_crypto", "simple_crypto", "True"), tuple(
            barbican.get("secretstore:software", k) for k in (
                "secret_store_plugin", "crypto_plugin", "global_default")))
        # Barbican's own post-config ran first (its settings are there).
        self.assertTrue(barbican.has_option("keystone_authtoken", "auth_url"))
        kek = barbican.get("tee_sealed", "kek_file")
        self.assertEqual(self._path("barbican", "tee-kek"), kek)
        self.assertEqual(0o600, os.stat(kek).st_mode & 0o777)

        bpaste = _ini(self._path("barbican", "barbican-api-paste.ini"))
        self.assertEqual(
            "tee_peer tee_public cors request_id http_proxy_to_wsgi "
            "authtoken context tee_api microversion apiapp",
            bpaste.get("pipeline:barbican-api-keystone", "pipeline"))
        self.assertEqual("barbican-api-keystone",
                         bpaste.get("pipeline:barbican_api", "pipeline"))
        # The rest of both paste files is as shipped (devstack's iniset
        # changed barbican_api's line): comments, ':' and the other
        # pipelines; our sections are appended.
        for sub, name, changed in (
                ("barbican", "barbican-api-paste.ini",
                 ["pipeline = cors request_id http_proxy_to_wsgi "
                  "unauthenticated-context microversion apiapp\n",
                  "pipeline = cors request_id http_proxy_to_wsgi authtoken "
                  "context microversion apiapp\n"]),
                ("nova", "api-paste.ini",
                 ["keystone = cors http_proxy_to_wsgi compute_req_id "
                  "faultwrap request_log sizelimit osprofiler authtoken "
                  "keystonecontext osapi_compute_app_v21\n",
                  "keystone = cors http_proxy_to_wsgi compute_req_id "
                  "faultwrap request_log sizelimit osprofiler authtoken "
                  "keystonecontext legacy_v2_compatible "
                  "osapi_compute_app_v21\n"])):
            with open(os.path.join(sys.prefix, "etc", sub, name)) as f:
                shipped = f.readlines()
            final = self._read(sub, name).splitlines(keepends=True)
            removed = [line[2:] for line in difflib.ndiff(shipped, final)
                       if line.startswith("- ")]
            self.assertEqual(changed, removed, name)
            self.assertEqual(final[:len(shipped)][-1], shipped[-1], name)

    def _scheduler_conf(self) -> configparser.RawConfigParser:
        # The file nova-scheduler is started with (lib/nova's
        # start_nova_rest, through the run_process stub).
        prefix = "run_process n-sch "
        lines = [c for c in self._calls().splitlines()
                 if c.startswith(prefix)]
        self.assertEqual(1, len(lines), self._calls())
        args = lines[0].split()
        return _ini(args[args.index("--config-file") + 1])

    def _assert_scheduler_reads_floors(self, service_host: str) -> None:
        # TEEFilter reads the platform TCB floors from Barbican with the
        # nova service user: without them it refuses every SEV-SNP host.
        sched = self._scheduler_conf()
        self.assertIn("TEEFilter",
                      sched.get("filter_scheduler", "enabled_filters"))
        self.assertEqual(f"http://{service_host}/key-manager",
                         sched.get("tee", "barbican_url"))
        self.assertEqual({
            "auth_type": "password",
            "interface": "public",
            "auth_url": f"http://{service_host}/identity",
            "username": "nova",
            "password": "secretservice",
            "user_domain_name": "Default",
            "project_name": "service",
            "project_domain_name": "Default",
        }, dict(sched.items("tee_barbican")))

    def test_barbicans_own_backend_stays_the_default(self) -> None:
        # Barbican's plugin with its KMIP backend (barbican-pykmip): its
        # store stays the global default, tee_sealed only joins it.
        self._stack(CONTROLLER_SERVICES + ",barbican-pykmip")
        barbican = _ini(self._path("barbican", "barbican.conf"))
        self.assertEqual("kmip_plugin", barbican.get(
            "secretstore", "enabled_secretstore_plugins"))
        self.assertEqual("kmip_plugin", barbican.get(
            "secretstore:software", "secret_store_plugin"))
        self.assertFalse(barbican.has_option("secretstore:software",
                                             "crypto_plugin"))
        self.assertEqual("True", barbican.get("secretstore:software",
                                              "global_default"))
        self.assertEqual("tee_sealed", barbican.get(
            "secretstore:tee_sealed", "secret_store_plugin"))
        # Without it, Barbican's software store: test_all_in_one.

    def test_controller_without_compute(self) -> None:
        self._stack(CONTROLLER_ONLY_SERVICES)
        self.assertNotIn("run_process n-cpu", self._calls())
        self._assert_scheduler_reads_floors(HOST_IP)
        nova = _ini(self._path("nova", "nova.conf"))
        # No compute here: the driver is not this node's business.
        self.assertNotEqual("libvirt_tee.TEELibvirtDriver",
                            nova.get("DEFAULT", "compute_driver",
                                     fallback=""))
        self.assertFalse(os.path.exists(self._path("nova",
                                                   "nova-cpu.conf")))

    def test_tables_upgraded_after_barbicans_db_sync(self) -> None:
        # barbican-svc is barbican-api (Barbican's devstack plugin starts
        # it in its extra phase, right after its db sync).
        self._stack(CONTROLLER_SERVICES + ",barbican-svc")
        calls = self._calls().splitlines()
        conf = self._path("barbican", "barbican.conf")
        order = [
            "recreate_database barbican utf8",
            "barbican-manage db upgrade -v head",
            "run_process barbican-svc",
            f"openstack-tee db upgrade --config-file {conf}",
            "restart_service devstack@barbican-svc",
        ]
        found = [next((i for i, c in enumerate(calls)
                       if c.startswith(step)), None) for step in order]
        self.assertNotIn(None, found, calls)
        self.assertEqual(sorted(found), found, calls)
        self.assertEqual(1, sum(1 for c in calls
                                if c.startswith("openstack-tee ")))
        # On MariaDB, no PostgreSQL workaround.
        self.assertFalse([c for c in calls if c.startswith("psql ")])

    def test_postgresql_gets_barbicans_workaround(self) -> None:
        self._stack(CONTROLLER_SERVICES.replace("mysql", "postgresql")
                    + ",barbican-svc")
        calls = self._calls().splitlines()
        sql = os.path.join(ROOT, "barbican_tee", "etc",
                           "postgresql-kek-data.sql")
        self.assertTrue(os.path.isfile(sql))
        order = ["barbican-manage db upgrade -v head", "openstack-tee db "
                 "upgrade", "psql ", "restart_service devstack@barbican-svc"]
        found = [next((i for i, c in enumerate(calls)
                       if c.startswith(step)), None) for step in order]
        self.assertNotIn(None, found, calls)
        self.assertEqual(sorted(found), found, calls)
        [psql] = [c for c in calls if c.startswith("psql ")]
        self.assertIn("-d barbican", psql)
        self.assertIn("-v ON_ERROR_STOP=1", psql)
        self.assertTrue(psql.endswith(f"-f {sql}"), psql)

    def test_compute_only_subnode(self) -> None:
        # A subnode enables the plugins but not Barbican's service, and
        # points at the controller.
        self._stack(SUBNODE_SERVICES, disabled="barbican",
                    service_host=CONTROLLER_IP)
        self._assert_compute_configured(CONTROLLER_IP)
        # configure_nova copies api-paste.ini only for n-api: none here,
        # and the plugin did not create or edit one.
        self.assertEqual(["nova-cpu.conf", "nova.conf"],
                         sorted(os.listdir(self._path("nova"))))
        nova_text = self._read("nova", "nova.conf")
        self.assertNotIn("TEEFilter", nova_text)
        self.assertNotIn("available_filters", nova_text)
        self.assertNotIn("weight_classes", nova_text)
        self.assertEqual([], os.listdir(self._path("barbican")))
        self.assertNotIn("openstack-tee db", self._calls())

    def test_second_post_config_changes_nothing(self) -> None:
        self._stack(CONTROLLER_SERVICES, post_config_runs=2)
        first = os.path.join(self.work, "after-post-config-1")
        second = os.path.join(self.work, "after-post-config-2")
        files = []
        for sub in ("nova", "barbican"):
            names = sorted(os.listdir(os.path.join(first, sub)))
            self.assertEqual(names,
                             sorted(os.listdir(os.path.join(second, sub))))
            files += [os.path.join(sub, n) for n in names
                      if os.path.isfile(os.path.join(first, sub, n))]
        self.assertIn(os.path.join("nova", "api-paste.ini"), files)
        self.assertIn(os.path.join("barbican", "barbican-api-paste.ini"),
                      files)
        self.assertIn(os.path.join("barbican", "tee-kek"), files)
        _, mismatch, errors = filecmp.cmpfiles(first, second, files,
                                               shallow=False)
        self.assertEqual(([], []), (mismatch, errors))
        # And the final files have each value once.
        nova_text = self._read("nova", "nova.conf")
        self.assertEqual(1, nova_text.count(
            "weight_classes = nova_tee.scheduler.TEEWeigher\n"))
        self.assertEqual(1, nova_text.count(
            "available_filters = nova_tee.scheduler.TEEFilter\n"))
        self.assertEqual(1, _ini(self._path("nova", "nova.conf")).get(
            "filter_scheduler", "enabled_filters").split(",").count(
                "TEEFilter"))

    def test_disabled_plugin_leaves_devstack_defaults(self) -> None:
        self._stack(CONTROLLER_SERVICES.replace("openstack-tee,", ""))
        cpu = self._read("nova", "nova-cpu.conf")
        self.assertIn("compute_driver = libvirt.LibvirtDriver", cpu)
        self.assertNotIn("[tee", cpu)
        self.assertNotIn("libvirt_tee", cpu)
        self.assertNotIn("tee_", self._read("nova", "api-paste.ini"))
        self.assertFalse(os.path.exists(self._path("barbican", "tee-kek")))
        self.assertNotIn("openstack-tee db", self._calls())

    def test_barbican_plugin_must_come_first(self) -> None:
        out = self._stack(CONTROLLER_SERVICES,
                          plugins="openstack-tee,barbican", expect_rc=1)
        self.assertIn("put 'enable_plugin barbican' before 'enable_plugin "
                      "openstack-tee'", out)

    def test_shellcheck(self) -> None:
        shellcheck = shutil.which("shellcheck")
        if shellcheck is None:
            self.fail("shellcheck is required (tools/install-deps.sh "
                      "installs it)")
        proc = subprocess.run(
            [shellcheck, "-s", "bash",
             os.path.join(ROOT, "devstack", "plugin.sh"),
             os.path.join(ROOT, "devstack", "settings"), HARNESS],
            capture_output=True, text=True, check=False)
        self.assertEqual(0, proc.returncode, proc.stdout)
