"""Nova's harness with one real barbican-api for a whole test class.

The server is the Barbican suite's fixture (a real barbican-api under
gunicorn); nova-compute's ``[tee]`` options name it, as the binding at
boot needs. The trust roots it is given are files in the class's own
temporary directory, removed with the server.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Any

import requests

from openstack_tee_demo import nova_harness
from openstack_tee_demo import report
from tests.functional.barbican import fixture as barbican_fixture

# The cloud administrator's headers on the barbican-api (noauth).
ADMIN = report.ADMIN


class BarbicanClassTestBase(nova_harness.TEEServersTestBase):

    barbican: barbican_fixture.BarbicanServer

    @classmethod
    def class_file(cls, name: str, data: bytes) -> str:
        """``data`` in a file of the class's temporary directory."""
        # Each class its own (a subclass runs setUpClass again).
        tmp = cls.__dict__.get("_class_tmp")
        if tmp is None:
            tmp = tempfile.mkdtemp()
            cls._class_tmp = tmp
        path = os.path.join(tmp, name)
        with open(path, "wb") as f:
            f.write(data)
        return path

    @classmethod
    def start_barbican(cls, **kwargs: Any) -> None:
        """The class's barbican-api (2 workers unless ``kwargs`` say)."""
        kwargs.setdefault("workers", 2)
        cls.barbican = barbican_fixture.BarbicanServer(**kwargs)
        cls.barbican.setUp()

    @classmethod
    def tearDownClass(cls) -> None:
        if "barbican" in cls.__dict__:
            cls.barbican.cleanUp()
        tmp = cls.__dict__.get("_class_tmp")
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
            del cls._class_tmp
        super().tearDownClass()

    def setUp(self) -> None:
        super().setUp()
        # nova-compute's side (the binding at boot).
        self.flags(barbican_url=self.barbican.url,
                   barbican_noauth_project="nova-service", group="tee")


class SNPBarbicanTestBase(BarbicanClassTestBase):
    """The software SEV-SNP secure processor ``cls.snp``, trusted.

    The class's barbican-api trusts its roots; hosts started with it
    (``start_tee_compute(name, self.snp)``) report it.
    """

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        cls.snp = nova_harness.sp_model.SecureProcessor(
            label="nova-functional")
        cls.start_barbican(trust_root=cls.class_file("snp-ark.pem",
                                                     cls.snp.bundle_pem()))


class FloorBarbicanTestBase(BarbicanClassTestBase):
    """A barbican-api (one worker) whose Milan floor tests may raise.

    Lowered to 0 again after each test.
    """

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        cls.start_barbican(workers=1)

    def setUp(self) -> None:
        super().setUp()
        self.addCleanup(self.set_floor, 0)

    def set_floor(self, snp: int) -> None:
        """The Milan floor at SNP SPL ``snp``, as an administrator."""
        resp = requests.put(
            f"{self.barbican.url}/v1/tee/floors/milan", headers=ADMIN,
            json={"bootloader": 0, "tee": 0, "snp": snp, "microcode": 0},
            timeout=30)
        self.assertEqual(200, resp.status_code, resp.text)
