"""TEELibvirtDriver's startup hook check and host reporting."""

from __future__ import annotations

import os
import tempfile
from typing import Any
from unittest import mock

import fixtures
from nova.compute import provider_tree
from nova.virt.libvirt import driver as libvirt_driver
from nova.virt.libvirt import host as libvirt_host

from barbican_tee.attestation import snp
from barbican_tee.attestation import snp_certs
from nova_tee.virt.libvirt import capabilities
from nova_tee.virt.libvirt import driver as tee_driver
from tests import base

Product = snp_certs.Product


class HookTest(base.TestCase):

    def test_hooks_are_as_pinned_for_this_nova(self) -> None:
        # Checked at import (when nova-compute loads the driver) and again
        # now: every hook we override or call is there, as pinned for the
        # installed release. tox -e py3 runs this on Nova 34.0.0, tox -e
        # nova33 on Nova 33.0.2: both tables are checked in CI.
        self.assertIn(tee_driver.NOVA_MAJOR, (33, 34))
        self.assertIs(tee_driver.HOOKS_BY_RELEASE[tee_driver.NOVA_MAJOR],
                      tee_driver.HOOKS)
        self.assertEqual([], tee_driver.IMPORT_TIME_PROBLEMS)
        self.assertEqual([], tee_driver.hook_problems())
        tee_driver.check_hooks()
        key = ("LibvirtDriver", "_guest_configure_mem_encryption")
        overridden = key[1] in vars(tee_driver.TEELibvirtDriver)
        if tee_driver.NOVA_MAJOR == 34:
            self.assertEqual(("self", "instance", "guest", "model"),
                             tee_driver.HOOKS[key])
            self.assertTrue(overridden)
            self.assertTrue(tee_driver.SNP_TDX)
        else:
            self.assertNotIn(key, tee_driver.HOOKS)
            self.assertFalse(overridden)
            self.assertFalse(tee_driver.SNP_TDX)

    def test_the_other_releases_table(self) -> None:
        # The check is real for both tables: Nova 34's hooks are not all
        # on Nova 33 (which has neither the instance-aware hook nor the
        # host's inventories), and Nova 33's are all still on Nova 34.
        if tee_driver.NOVA_MAJOR == 33:
            self.assertEqual(
                ["LibvirtDriver._guest_configure_mem_encryption takes "
                 "(self, guest, arch, mach_type, model), not "
                 "(self, instance, guest, model)",
                 "Host.get_mem_encryption_inventories does not exist"],
                tee_driver.hook_problems(tee_driver.HOOKS_BY_RELEASE[34]))
        else:
            self.assertEqual([], tee_driver.hook_problems(
                tee_driver.HOOKS_BY_RELEASE[33]))

    def test_an_unsupported_release_is_named(self) -> None:
        with mock.patch.object(tee_driver, "HOOKS", {}), \
                mock.patch.object(tee_driver, "NOVA_VERSION", "32.1.0"):
            self.assertEqual(["Nova 32.1.0 is not a supported release"],
                             tee_driver.hook_problems())

    def test_a_renamed_hook_is_named(self) -> None:
        class Renamed(libvirt_driver.LibvirtDriver):
            _create_guest = None  # as if upstream renamed it

        problems = tee_driver.hook_problems(
            owners={"LibvirtDriver": Renamed, "Host": libvirt_host.Host})
        self.assertEqual(["LibvirtDriver._create_guest does not exist"],
                         problems)

    def test_a_changed_signature_is_named(self) -> None:
        class Changed(libvirt_host.Host):
            def _kernel_supports_amd_sev(self, kind: str = "sev") -> bool:
                return False

        problems = tee_driver.hook_problems(
            owners={"LibvirtDriver": libvirt_driver.LibvirtDriver,
                    "Host": Changed})
        self.assertEqual(["Host._kernel_supports_amd_sev takes (self, kind), "
                          "not (self, model)"], problems)

    def test_a_hook_a_test_patched_is_not_judged(self) -> None:
        # Nova's functional base patches Host._kernel_supports_amd_sev; a
        # process that first imports the driver under that patch has no
        # upstream signature to check there, but still checks the rest.
        class Patched(libvirt_host.Host):
            _kernel_supports_amd_sev = mock.Mock(return_value=True)

        class Renamed(libvirt_driver.LibvirtDriver):
            _create_guest = None

        self.assertEqual([], tee_driver.hook_problems(
            owners={"LibvirtDriver": libvirt_driver.LibvirtDriver,
                    "Host": Patched}))
        self.assertEqual(["LibvirtDriver._create_guest does not exist"],
                         tee_driver.hook_problems(
                             owners={"LibvirtDriver": Renamed,
                                     "Host": Patched}))

    def test_guest_domain_is_checked(self) -> None:
        with mock.patch.object(libvirt_driver.libvirt_guest.Guest,
                               "__init__", lambda self, domain: None):
            problems = tee_driver.hook_problems()
        self.assertEqual(["Guest._domain is not the libvirt domain"],
                         problems)

    def test_init_host_refuses_to_start(self) -> None:
        drv = tee_driver.TEELibvirtDriver.__new__(
            tee_driver.TEELibvirtDriver)
        with mock.patch.object(
                tee_driver, "IMPORT_TIME_PROBLEMS",
                ["LibvirtDriver._create_guest does not exist"]), \
                mock.patch.object(libvirt_driver.LibvirtDriver,
                                  "init_host") as upstream_init:
            exc = self.assertRaises(tee_driver.UnsupportedNova,
                                    drv.init_host, "host1")
        self.assertIn("LibvirtDriver._create_guest does not exist",
                      str(exc))
        self.assertIn("Nova 34", str(exc))
        upstream_init.assert_not_called()


class ProductTest(base.TestCase):

    def cpuinfo(self, family: int, model: int) -> str:
        fd, path = tempfile.mkstemp()
        self.addCleanup(os.unlink, path)
        with os.fdopen(fd, "w") as f:
            f.write(f"processor\t: 0\nvendor_id\t: AuthenticAMD\n"
                    f"cpu family\t: {family}\nmodel\t\t: {model}\n"
                    f"model name\t: AMD EPYC\n\nprocessor\t: 1\n"
                    f"cpu family\t: 1\nmodel\t\t: 1\n")
        return path

    def test_product_from_cpuinfo(self) -> None:
        self.assertIs(Product.MILAN,
                      capabilities.read_cpu_product(self.cpuinfo(25, 1)))
        self.assertIs(Product.GENOA,
                      capabilities.read_cpu_product(self.cpuinfo(25, 17)))
        self.assertIs(Product.TURIN,
                      capabilities.read_cpu_product(self.cpuinfo(26, 2)))
        self.assertIsNone(
            capabilities.read_cpu_product(self.cpuinfo(6, 207)))
        self.assertIsNone(capabilities.read_cpu_product("/nonexistent"))

    def test_turin_tcb_uses_turin_layout(self) -> None:
        tcb = snp.TcbVersion(fmc=1, bootloader=3, tee=0, snp=9,
                             microcode=115)
        raw = tcb.encode(Product.TURIN)
        self.assertEqual("3.0.9.115.1",
                         capabilities.snp_tcb_string(raw, Product.TURIN))
        fw = capabilities.FirmwareStatus(1, 55, 21, 1, 0,
                                         snp_current_tcb=raw)
        caps = capabilities.HostTEECapabilities(
            models=("amd-sev-snp",), slots={"amd-sev-snp": 1},
            domain_caps=capabilities.DomainCapsTEE(), kvm_params={},
            firmware=fw, sev_pdh=None, tdx_quote_service=False,
            product=Product.TURIN)
        self.assertEqual("3.0.9.115.1", caps.stats({})["tee.snp_tcb"])
        # Read with the Milan/Genoa layout the same value means SNP 0.
        self.assertEqual("1.3.0.115", capabilities.snp_tcb_string(raw))


def _set_models(drv: Any, models: dict[str, Any]) -> None:
    """What upstream says the host supports, as each Nova says it."""
    # Nova 34: the host's inventories, every model.
    drv._host.get_mem_encryption_inventories.return_value = models
    # Nova 33: the driver's SEV and SEV-ES inventories and the host's
    # verdicts; it knows no other model.
    sev = ("amd_sev", "amd_sev_es")
    drv._get_memory_encryption_inventories = lambda: {
        name: {"total": models.get(name, {}).get("total", 0)}
        for name in sev}
    drv._host.supports_amd_sev = bool(
        models.get("amd_sev", {}).get("supported"))
    drv._host.supports_amd_sev_es = bool(
        models.get("amd_sev_es", {}).get("supported"))


def _driver(models: dict[str, Any]) -> tee_driver.TEELibvirtDriver:
    """A TEELibvirtDriver over a fake host, without libvirt."""
    drv = tee_driver.TEELibvirtDriver.__new__(tee_driver.TEELibvirtDriver)
    host = mock.Mock()
    host._kernel_supports_amd_sev.return_value = True
    host.list_guests.return_value = []
    host.get_connection.return_value.getSEVInfo.return_value = {
        "pdh": "UERI"}
    host.get_connection.return_value.getDomainCapabilities.side_effect = (
        RuntimeError("no domain capabilities here"))
    drv._host = host
    _set_models(drv, models)
    drv._tee_plans = {}
    drv._tee_caps = None
    drv._tee_firmware_reader = lambda: None
    drv._tee_tdx_module_reader = lambda: None
    drv._tee_product_reader = lambda: None
    return drv


SEV = {"amd_sev": {"supported": True, "total": 15}}


class HostReportTest(base.TestCase):

    def setUp(self) -> None:
        super().setUp()
        self.useFixture(_Upstream())

    def test_one_probe_per_periodic_task(self) -> None:
        drv = _driver(SEV)
        tree = provider_tree.ProviderTree()
        tree.new_root("host1", "uuid-host1")
        with mock.patch.object(drv, "_tee_capabilities",
                               wraps=drv._tee_capabilities) as probe:
            drv.get_available_resource("host1")
            drv.update_provider_tree(tree, "host1")
            self.assertEqual(1, probe.call_count)
            drv.get_available_resource("host1")
            self.assertEqual(2, probe.call_count)

    def test_domain_capabilities_for_the_configured_virt_type(self) -> None:
        self.flags(virt_type="qemu", group="libvirt")
        drv = _driver(SEV)
        drv._tee_capabilities()
        conn = drv._host.get_connection.return_value
        conn.getDomainCapabilities.assert_called_once_with(
            None, "x86_64", None, "qemu", 0)

    def flags(self, **kw: Any) -> None:
        from oslo_config import cfg

        group = kw.pop("group")
        for name, value in kw.items():
            cfg.CONF.set_override(name, value, group=group)
            self.addCleanup(cfg.CONF.clear_override, name, group=group)

    def test_lost_capability_removes_its_trait(self) -> None:
        tree = provider_tree.ProviderTree()
        tree.new_root("host1", "uuid-host1")
        drv = _driver(SEV)
        drv.get_available_resource("host1")
        drv.update_provider_tree(tree, "host1")
        self.assertEqual({"CUSTOM_TEE_ATTESTATION",
                          "CUSTOM_TEE_SEV_LAUNCH_SECRET"},
                         {t for t in tree.data("host1").traits
                          if t.startswith("CUSTOM_TEE_")})
        # kvm_amd's SEV goes away (a kernel update, a BIOS setting).
        tree.add_traits("host1", "HW_CPU_X86_AVX2")
        _set_models(drv, {})
        drv.get_available_resource("host1")
        drv.update_provider_tree(tree, "host1")
        self.assertEqual({"HW_CPU_X86_AVX2"}, tree.data("host1").traits)

    def test_turin_host_reports_turin_tcb(self) -> None:
        drv = _driver({"amd_sev": {"supported": True, "total": 15},
                       "amd_sev_snp": {"supported": True, "total": 9}})
        raw = snp.TcbVersion(fmc=2, bootloader=4, tee=0, snp=24,
                             microcode=80).encode(Product.TURIN)
        drv._tee_firmware_reader = lambda: capabilities.FirmwareStatus(
            1, 55, 21, 1, 0, snp_current_tcb=raw)
        drv._tee_product_reader = lambda: Product.TURIN
        stats = drv.get_available_resource("host1")["stats"]
        tree = provider_tree.ProviderTree()
        tree.new_root("host1", "uuid-host1")
        drv.update_provider_tree(tree, "host1")
        traits = tree.data("host1").traits
        self.assertEqual("1.55", stats["tee.fw"])
        if tee_driver.SNP_TDX:
            self.assertEqual("amd-sev,amd-sev-snp", stats["tee.models"])
            self.assertEqual("4.0.24.80.2", stats["tee.snp_tcb"])
            self.assertIn("CUSTOM_TEE_SNP_TCB_REPORTED", traits)
        else:
            # Nova 33: SEV-SNP needs Nova 34, so nothing of it is
            # advertised and no tee:min_tcb_* guest is placed here.
            self.assertEqual("amd-sev", stats["tee.models"])
            self.assertNotIn("tee.snp_tcb", stats)
            self.assertNotIn("CUSTOM_TEE_SNP_TCB_REPORTED", traits)
            self.assertIn("CUSTOM_TEE_ATTESTATION", traits)

    def test_snp_tcb_trait_follows_the_firmware(self) -> None:
        drv = _driver({"amd_sev": {"supported": True, "total": 15},
                       "amd_sev_snp": {"supported": True, "total": 9}})
        drv._tee_product_reader = lambda: Product.MILAN

        def firmware(spl: int) -> None:
            raw = snp.TcbVersion(bootloader=3, tee=0, snp=spl,
                                 microcode=115).encode(Product.MILAN)
            drv._tee_firmware_reader = lambda: capabilities.FirmwareStatus(
                1, 55, 21, 1, 0, snp_current_tcb=raw)

        tree = provider_tree.ProviderTree()
        tree.new_root("host1", "uuid-host1")
        tree.add_traits("host1", "HW_CPU_X86_AVX2")
        firmware(8)
        for _ in range(2):  # idempotent
            drv.get_available_resource("host1")
            drv.update_provider_tree(tree, "host1")
        tcb = {t for t in tree.data("host1").traits
               if t.startswith("CUSTOM_TEE_SNP_TCB_M")}
        if not tee_driver.SNP_TDX:
            self.assertEqual(set(), tcb)
            return
        self.assertEqual({"CUSTOM_TEE_SNP_TCB_MILAN_BL3_TEE0_SNP8_UC115"},
                         tcb)
        # A firmware update: the old trait goes, the new one comes.
        firmware(9)
        drv.get_available_resource("host1")
        drv.update_provider_tree(tree, "host1")
        traits = tree.data("host1").traits
        self.assertIn("CUSTOM_TEE_SNP_TCB_MILAN_BL3_TEE0_SNP9_UC115",
                      traits)
        self.assertNotIn("CUSTOM_TEE_SNP_TCB_MILAN_BL3_TEE0_SNP8_UC115",
                         traits)
        self.assertIn("CUSTOM_TEE_SNP_TCB_REPORTED", traits)
        self.assertIn("HW_CPU_X86_AVX2", traits)
        # SNP gone: no TCB trait at all.
        _set_models(drv, {})
        drv.get_available_resource("host1")
        drv.update_provider_tree(tree, "host1")
        self.assertEqual({"HW_CPU_X86_AVX2"}, tree.data("host1").traits)

    def test_tdx_is_advertised_only_on_nova_34(self) -> None:
        drv = _driver({"intel_tdx": {"supported": True, "total": 4}})
        drv._tee_tdx_module_reader = lambda: "1.5.6"
        with mock.patch.object(drv, "_tdx_quote_service_present",
                               return_value=True):
            stats = drv.get_available_resource("host1")["stats"]
            tree = provider_tree.ProviderTree()
            tree.new_root("host1", "uuid-host1")
            drv.update_provider_tree(tree, "host1")
        traits = tree.data("host1").traits
        if tee_driver.SNP_TDX:
            self.assertEqual("intel-tdx", stats["tee.models"])
            self.assertIn("CUSTOM_TEE_TDX_QUOTE_SERVICE", traits)
        else:
            self.assertEqual("", stats["tee.models"])
            self.assertNotIn("tee.tdx_module", stats)
            self.assertFalse({t for t in traits
                              if t.startswith("CUSTOM_TEE_")})


class Nova33MessageTest(base.TestCase):

    def test_unavailable_is_said_once_at_start_on_nova_33(self) -> None:
        drv = tee_driver.TEELibvirtDriver.__new__(
            tee_driver.TEELibvirtDriver)
        logger = self.useFixture(fixtures.FakeLogger(
            name="nova_tee.virt.libvirt.driver"))
        with mock.patch.object(libvirt_driver.LibvirtDriver,
                               "init_host") as upstream_init:
            drv.init_host("host1")
        upstream_init.assert_called_once_with("host1")
        message = tee_driver.unavailable_on_this_nova()
        if tee_driver.SNP_TDX:
            self.assertEqual("", message)
            self.assertNotIn("Nova 34", logger.output)
        else:
            for part in ("SEV-SNP", "Intel TDX",
                         "until this host runs Nova 34 (2026.2)",
                         "SEV and SEV-ES guests, with launch attestation, "
                         "are available", "Nova 33.0.2 (2026.1)"):
                self.assertIn(part, message)
            self.assertEqual(1, logger.output.count(message))

    def test_refusal_names_nova_34(self) -> None:
        self.assertIn("amd-sev-snp guests need Nova 34 (2026.2) or later",
                      tee_driver.needs_nova_34("amd-sev-snp"))


class _Upstream(fixtures.Fixture):
    """Upstream's host reporting replaced by empty answers."""

    def _setUp(self) -> None:
        self.useFixture(fixtures.MockPatchObject(
            libvirt_driver.LibvirtDriver, "get_available_resource",
            side_effect=lambda *a, **k: {"stats": {}}))
        self.useFixture(fixtures.MockPatchObject(
            libvirt_driver.LibvirtDriver, "update_provider_tree",
            return_value=None))


class CleanupTest(base.TestCase):

    def setUp(self) -> None:
        super().setUp()
        from nova import objects

        objects.register_all()

    def instance(self, **attrs: Any) -> Any:
        from nova import objects

        return objects.Instance(uuid="8e5ad4b4-5b6c-4f45-9d0c-1d9f1f1d0c11",
                                **attrs)

    def flavor(self, **extra_specs: str) -> Any:
        from nova import objects

        return objects.Flavor(extra_specs=extra_specs)

    def test_only_tee_guests_being_deleted_are_retired(self) -> None:
        retire = tee_driver.TEELibvirtDriver._tee_secret_to_retire
        meta = {"tee_secret": "s1"}
        tee = self.flavor(**{"hw:mem_encryption": "true",
                             "tee:attestation": "required"})
        self.assertTrue(retire(self.instance(
            flavor=tee, task_state="deleting", metadata=meta)))
        self.assertFalse(retire(self.instance(
            flavor=tee, task_state=None, metadata=meta)))
        # A tee: guest whose tee_secret metadata was removed: still
        # retired (whatever was bound to it goes to no one).
        self.assertTrue(retire(self.instance(
            flavor=tee, task_state="deleting", metadata={})))
        # An upstream SEV guest: not bound, so nothing to retire.
        self.assertFalse(retire(self.instance(
            flavor=self.flavor(**{"hw:mem_encryption": "true"}),
            task_state="deleting", metadata=meta)))

    def test_deletes_without_a_deleting_task_retire(self) -> None:
        retire = tee_driver.TEELibvirtDriver._tee_secret_to_retire
        meta = {"tee_secret": "s1"}
        tee = self.flavor(**{"hw:mem_encryption": "true",
                             "tee:attestation": "required"})
        # A soft-deleted instance reclaimed (reclaim_instance_interval):
        # the compute manager cleans it up with no task.
        self.assertTrue(retire(self.instance(
            flavor=tee, task_state=None, vm_state="soft-delete",
            metadata=meta)))
        # Deleted at the API while its host was down, reaped later.
        self.assertTrue(retire(self.instance(
            flavor=tee, task_state=None, vm_state="deleted",
            metadata=meta)))
        self.assertTrue(retire(self.instance(
            flavor=tee, task_state=None, vm_state="active", deleted=True,
            metadata=meta)))
        # Instances that live on (shelve offload, evacuation, resize, a
        # soft-deleted one restored): their binding stays.
        for task, state in (("shelving_offloading", "shelved"),
                            ("restoring", "soft-delete"),
                            (None, "active"), ("resize_migrating",
                                               "active")):
            self.assertFalse(retire(self.instance(
                flavor=tee, task_state=task, vm_state=state, deleted=False,
                metadata=meta)), (task, state))
        # Upstream guests: nothing bound, nothing retired.
        self.assertFalse(retire(self.instance(
            flavor=self.flavor(**{"hw:mem_encryption": "true"}),
            task_state=None, vm_state="soft-delete", metadata=meta)))

    def test_reads_nothing_that_is_not_loaded(self) -> None:
        # An orphaned Instance lazy-loads nothing: reading an unset field
        # would raise.
        instance = self.instance()
        self.assertFalse(
            tee_driver.TEELibvirtDriver._tee_secret_to_retire(instance))
        self.assertFalse(tee_driver.has_tee_request(instance))
