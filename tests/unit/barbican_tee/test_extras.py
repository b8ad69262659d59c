"""The extras per role, and the commands that need one saying so."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import sysconfig
import tempfile
import tomllib

from barbican_tee import extras
from tests import base

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.dirname(os.path.abspath(__file__)))))
# The distributions no extra-less install has, as installed here.
_EXTRA_ENTRY = re.compile(
    r"^(barbican|gunicorn|gevent|nova|libvirt\w*|placement|"
    r"openstack_placement|wsgi_intercept)"
    r"(-[^-]+\.dist-info|\.py|\.cpython.*\.so)?$")


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~;\[ ]", requirement, maxsplit=1)[0].lower()


def _pyproject_extras() -> dict[str, list[str]]:
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        return dict(tomllib.load(f)["project"]["optional-dependencies"])


class ExtrasDeclaredTest(base.TestCase):

    def test_the_checks_name_what_the_extras_install(self) -> None:
        declared = _pyproject_extras()
        self.assertEqual(set(extras.EXTRAS), set(declared))
        for extra, names in extras.EXTRAS.items():
            self.assertEqual(sorted(names),
                             sorted(_name(r) for r in declared[extra]),
                             extra)

    def test_demo_extra_is_demo_requirements(self) -> None:
        with open(os.path.join(ROOT, "demo-requirements.txt")) as f:
            lines = [line.split("#")[0].strip() for line in f]
        self.assertEqual(sorted(r for r in lines if r),
                         sorted(_pyproject_extras()["demo"]))

    def test_installed_here(self) -> None:
        # The test environment has every extra: nothing to complain of.
        for extra in extras.EXTRAS:
            self.assertEqual([], extras.missing(extra), extra)
            self.assertIsNone(extras.check(extra, "x"))


class WithoutExtrasTest(base.TestCase):
    """The real ``openstack-tee`` command in a virtualenv without extras.

    A real virtualenv holding this environment's packages but none of the
    extras' distributions.
    """

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        cls.tmp = tempfile.mkdtemp()
        cls.venv = os.path.join(cls.tmp, "venv")
        subprocess.run([sys.executable, "-m", "venv", "--without-pip",
                        cls.venv], check=True)
        cls.python = os.path.join(cls.venv, "bin", "python")
        site = subprocess.run(
            [cls.python, "-c",
             "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True, capture_output=True, text=True).stdout.strip()
        here = sysconfig.get_paths()["purelib"]
        for entry in os.listdir(here):
            if not _EXTRA_ENTRY.match(entry):
                os.symlink(os.path.join(here, entry),
                           os.path.join(site, entry))

    @classmethod
    def tearDownClass(cls) -> None:
        subprocess.run(["rm", "-rf", cls.tmp], check=True)
        super().tearDownClass()

    def _run(self, *argv: str) -> subprocess.CompletedProcess[str]:
        # This checkout's code, from a directory of its own.
        env = dict(os.environ, PYTHONPATH=ROOT)
        cwd = tempfile.mkdtemp(dir=self.tmp)
        return subprocess.run([self.python, *argv], cwd=cwd, env=env,
                              capture_output=True, text=True, timeout=120,
                              check=False)

    def test_the_venv_really_lacks_them(self) -> None:
        proc = self._run("-c", "import barbican")
        self.assertIn("ModuleNotFoundError", proc.stderr)
        proc = self._run("-c", "import gunicorn")
        self.assertIn("ModuleNotFoundError", proc.stderr)
        proc = self._run("-c", "import barbican_tee.cmd.cli; "
                         "from barbican_tee import extras; "
                         "print(extras.missing('barbican'))")
        self.assertEqual(0, proc.returncode, proc.stderr)
        self.assertEqual("['barbican', 'gunicorn', 'gevent']",
                         proc.stdout.strip())

    def test_serve_says_what_to_install(self) -> None:
        proc = self._run("-m", "barbican_tee.cmd.cli", "serve",
                         "--data-dir", "d", "--port", "1")
        self.assertEqual(2, proc.returncode, proc.stderr)
        self.assertEqual(
            "openstack-tee serve needs barbican, gunicorn, gevent, which "
            "are not installed: pip install 'openstack-tee[barbican]'\n",
            proc.stderr)
        self.assertNotIn("Traceback", proc.stdout + proc.stderr)

    def test_demo_says_what_to_install(self) -> None:
        proc = self._run("-m", "barbican_tee.cmd.cli", "demo")
        self.assertEqual(2, proc.returncode, proc.stderr)
        self.assertIn("pip install 'openstack-tee[demo]'", proc.stderr)
        self.assertNotIn("Traceback", proc.stdout + proc.stderr)

    def test_commands_without_an_extra_still_work(self) -> None:
        proc = self._run("-m", "barbican_tee.cmd.cli", "--help")
        self.assertEqual(0, proc.returncode, proc.stderr)
        self.assertIn("serve", proc.stdout)
