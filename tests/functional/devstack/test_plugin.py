"""The devstack plugin, run phase by phase against stand-in functions."""

from __future__ import annotations

import configparser
import os
import shutil
import subprocess
import sys
import tempfile

from tests import base

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))))
INI = os.path.join(os.path.dirname(os.path.abspath(__file__)), "ini.py")

STANDINS = r"""
calls=""
function define_plugin { :; }
function plugin_requires { :; }
function echo_summary { echo "summary: $*"; }
function is_service_enabled {
    for s in "$@"; do [[ ",$ENABLED," == *",$s,"* ]] && return 0; done
    return 1
}
function setup_develop { echo "setup_develop $*" >> "$WORK/calls"; }
function iniset { "$PYTHON" "$INI" set "$@"; }
function iniadd { "$PYTHON" "$INI" add "$@"; }
function iniget { "$PYTHON" "$INI" get "$@"; }
function iniget_multiline { "$PYTHON" "$INI" getmulti "$@"; }
"""


class DevstackPluginTest(base.TestCase):

    def setUp(self) -> None:
        super().setUp()
        self.work = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.work)
        self.nova = os.path.join(self.work, "nova.conf")
        self.barbican = os.path.join(self.work, "barbican.conf")
        self.nova_paste = os.path.join(self.work, "api-paste.ini")
        self.barbican_paste = os.path.join(self.work, "barbican-paste.ini")
        with open(self.nova, "w") as f:
            f.write("[filter_scheduler]\nenabled_filters = ComputeFilter,"
                    "ImagePropertiesFilter\n")
        open(self.barbican, "w").close()
        nova_paste = os.path.join(sys.prefix, "etc", "nova",
                                  "api-paste.ini")
        shutil.copy(nova_paste, self.nova_paste)
        with open(self.barbican_paste, "w") as f:
            f.write("[pipeline:barbican-api-keystone]\npipeline = cors "
                    "request_id http_proxy_to_wsgi authtoken context "
                    "microversion apiapp\n\n[app:apiapp]\n"
                    "paste.app_factory = barbican.api.app:create_main_app\n")

    def _phase(self, *phase: str) -> str:
        env = dict(os.environ, WORK=self.work, INI=INI,
                   PYTHON=sys.executable, DEST=self.work,
                   ENABLED="openstack-tee,n-cpu,n-sch,n-api,barbican",
                   NOVA_CONF=self.nova, NOVA_CPU_CONF=self.nova,
                   NOVA_API_PASTE_INI=self.nova_paste,
                   BARBICAN_CONF=self.barbican,
                   BARBICAN_PASTE_CONF=self.barbican_paste,
                   OPENSTACK_TEE_KEK_FILE=os.path.join(self.work, "kek"))
        script = (STANDINS + f"source {ROOT}/devstack/settings\n"
                  f"source {ROOT}/devstack/plugin.sh {' '.join(phase)}\n")
        proc = subprocess.run(["bash", "-e", "-c", script], env=env,
                              capture_output=True, text=True, check=False)
        self.assertEqual(0, proc.returncode, proc.stdout + proc.stderr)
        return proc.stdout

    def _snapshot(self) -> dict[str, str]:
        out = {}
        for path in (self.nova, self.barbican, self.nova_paste,
                     self.barbican_paste, os.path.join(self.work, "kek")):
            with open(path) as f:
                out[path] = f.read()
        return out

    def test_phases_configure_nova_and_barbican_idempotently(self) -> None:
        self.assertIn("Installing openstack-tee",
                      self._phase("stack", "install"))
        with open(os.path.join(self.work, "calls")) as f:
            self.assertIn("setup_develop", f.read())
        self._phase("stack", "post-config")
        first = self._snapshot()
        self._phase("stack", "post-config")
        self.assertEqual(first, self._snapshot())

        with open(self.nova) as f:
            nova = f.read()
        self.assertIn("compute_driver = libvirt_tee.TEELibvirtDriver", nova)
        self.assertIn("enabled_filters = ComputeFilter,ImagePropertiesFilter"
                      ",TEEFilter", nova)
        self.assertEqual(1, nova.count("nova_tee.scheduler.TEEFilter"))
        self.assertIn("available_filters = nova.scheduler.filters."
                      "all_filters", nova)
        self.assertIn("weight_classes = nova_tee.scheduler.TEEWeigher",
                      nova)
        self.assertIn("[tee]", nova)

        barbican = configparser.RawConfigParser()
        barbican.read(self.barbican)
        self.assertEqual("tee_sealed", barbican.get(
            "secretstore:tee_sealed", "secret_store_plugin"))
        kek = barbican.get("tee_sealed", "kek_file")
        self.assertEqual(0o600, os.stat(kek).st_mode & 0o777)

        paste = configparser.RawConfigParser()
        paste.read(self.barbican_paste)
        self.assertEqual(
            "cors request_id http_proxy_to_wsgi tee_public authtoken "
            "context tee_api microversion apiapp",
            paste.get("pipeline:barbican-api-keystone", "pipeline"))
        nova_paste = configparser.RawConfigParser()
        nova_paste.read(self.nova_paste)
        self.assertIn("tee_extra_specs", nova_paste.get(
            "composite:openstack_compute_api_v21", "keystone"))

    def test_disabled_plugin_does_nothing(self) -> None:
        with open(self.nova) as f:
            nova_before = f.read()
        script = (STANDINS + f"source {ROOT}/devstack/settings\n"
                  f"source {ROOT}/devstack/plugin.sh stack post-config\n")
        proc = subprocess.run(
            ["bash", "-e", "-c", script], capture_output=True, text=True,
            check=False, env=dict(os.environ, WORK=self.work, INI=INI,
                                  PYTHON=sys.executable, DEST=self.work,
                                  ENABLED="n-cpu", NOVA_CONF=self.nova,
                                  NOVA_CPU_CONF=self.nova))
        self.assertEqual(0, proc.returncode, proc.stderr)
        with open(self.nova) as f:
            self.assertEqual(nova_before, f.read())
        self.assertFalse(os.path.exists(os.path.join(self.work, "kek")))

    def test_shellcheck(self) -> None:
        shellcheck = shutil.which("shellcheck")
        if shellcheck is None:
            self.fail("shellcheck is required (tools/install-deps.sh "
                      "installs it)")
        proc = subprocess.run(
            [shellcheck, "-s", "bash", os.path.join(ROOT, "devstack",
                                                    "plugin.sh"),
             os.path.join(ROOT, "devstack", "settings")],
            capture_output=True, text=True, check=False)
        self.assertEqual(0, proc.returncode, proc.stdout)
