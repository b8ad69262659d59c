"""``openstack-tee demo``: the end-to-end demonstration.

Real parts wherever they run on an ordinary machine:

* a real ``barbican-api`` (Barbican 23.0.0 under gunicorn, sqlite) with the
  ``tee_sealed`` store and the ``/v1/tee`` API, on 127.0.0.1;
* Nova 34.0.0 in-process through its own functional harness: the REST
  API (with the ``tee:`` validators and paste filter), placement, the
  scheduler with ``TEEFilter`` and ``TEEWeigher``, conductor, and
  nova-compute with ``TEELibvirtDriver`` over Nova's libvirt fixture;
* reference values computed with sev-snp-measure from a real OVMF image
  (the last 4 KiB of an OvmfPkg/AmdSev build, from sev-snp-measure's
  tests).

The one stand-in is the secure processor: the software model computes the
real SEV and SEV-SNP formulas (signed attestation reports, VCEK chains,
launch sessions, measurement HMACs, secret injection) with test keys that
only this run trusts.

It boots an SEV-SNP guest and an SEV guest, shows where the scheduler put
them and why, their ``<launchSecurity>``, and the attested release of the
owner's key; then a guest with altered firmware and a replayed nonce, both
refused with their codes. Last, trust over time: a guest on a stale host
holds its key on a lease (``tee-guest fetch`` / ``renew``), the operator
raises the SNP floor, the stale host is refused for new guests, the guest
fails to renew and drops its key (audited), and ``openstack tee tcb
report`` lists the host and the guest. Exit status 0 only if every
verdict is the expected one.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
import contextlib
import dataclasses
import hashlib
import io
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from typing import Any, TextIO
import unittest

from barbican_tee.attestation import measure
from barbican_tee.attestation import snp
from barbican_tee.cmd import tee_guest
from barbican_tee import server
from openstack_tee_demo import flows
from openstack_tee_demo.sp_model import sev as sp_sev
from openstack_tee_demo.sp_model import snp as sp_snp

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
OVMF = os.path.join(DATA, "ovmf_AmdSev_suffix.bin")
# sev-snp-measure's own test vector for this OVMF: measured direct boot.
LAUNCH = {"vcpu_type": "EPYC-v4", "kernel": os.devnull,
          "initrd": os.devnull, "append": "console=ttyS0 loglevel=7"}
VCPUS = 2  # the demo flavors' vCPU count (Nova's harness default)
CURRENT_TCB = snp.TcbVersion(bootloader=4, tee=0, snp=22, microcode=213)
STALE_TCB = snp.TcbVersion(bootloader=3, tee=0, snp=8, microcode=115)
PATCHED_SEV_FIRMWARE = b"an OVMF.fd with one patched byte" * 640
# The floor the operator raises Milan's to in the last chapter: SNP SPL 22
# (snp-current's), what the stale host (3.0.8.115) is below.
RAISED_MILAN_FLOOR = {"bootloader": 3, "tee": 0, "snp": 22,
                      "microcode": 115}
LEASE = 300  # the last chapter's policy max_age, in seconds


@dataclasses.dataclass
class Verdict:
    what: str
    expected: str
    observed: str
    seconds: float

    @property
    def ok(self) -> bool:
        return self.expected == self.observed


class Console:
    """What the user sees: steps with progress, verdicts, a summary."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.verdicts: list[Verdict] = []
        self.started = time.monotonic()

    def say(self, text: str = "") -> None:
        self.out.write(text + "\n")
        self.out.flush()

    def heading(self, text: str) -> None:
        self.say()
        self.say(text)
        self.say("=" * len(text))

    @contextlib.contextmanager
    def step(self, text: str) -> Iterator[None]:
        self.out.write(f"  ... {text}")
        self.out.flush()
        start = time.monotonic()
        try:
            yield
        except BaseException:
            self.say("  FAILED")
            raise
        self.say(f"  ({time.monotonic() - start:.1f} s)")

    def verdict(self, what: str, expected: str, observed: str,
                seconds: float) -> bool:
        v = Verdict(what, expected, observed, seconds)
        self.verdicts.append(v)
        mark = "OK  " if v.ok else "FAIL"
        self.say(f"  [{mark}] {what}: {observed}"
                 + ("" if v.ok else f" (expected {expected})"))
        return v.ok

    def summary(self, expected_count: int) -> bool:
        self.heading("Summary")
        width = max(len(v.what) for v in self.verdicts) if self.verdicts \
            else 10
        for v in self.verdicts:
            self.say(f"  {'OK  ' if v.ok else 'FAIL'}  {v.what:<{width}}  "
                     f"{v.observed:<36} {v.seconds * 1e3:8.0f} ms")
        good = sum(v.ok for v in self.verdicts)
        total = time.monotonic() - self.started
        complete = len(self.verdicts) == expected_count
        self.say()
        self.say(f"  {good}/{expected_count} expected verdicts"
                 + ("" if complete else
                    f" ({expected_count - len(self.verdicts)} never "
                    "reached)")
                 + f", {total:.1f} s in all")
        return complete and good == expected_count


class _Lines(logging.Handler):
    """Collects one logger's messages (the scheduler's explanations)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())

    def say(self, console: Console) -> None:
        console.say("      scheduler (TEEFilter):")
        for line in self.lines or ["(every host passed)"]:
            console.say(f"        {line}")


@contextlib.contextmanager
def _scheduler_lines() -> Iterator[_Lines]:
    """The TEE scheduler filter's explanations while the block runs."""
    lines = _Lines()
    log = logging.getLogger("nova_tee.scheduler.filters")
    log.addHandler(lines)
    old_level = log.level
    log.setLevel(logging.DEBUG)
    try:
        yield lines
    finally:
        log.removeHandler(lines)
        log.setLevel(old_level)


@dataclasses.dataclass
class Context:
    console: Console
    barbican_url: str
    snp_current: sp_snp.SecureProcessor
    snp_stale: sp_snp.SecureProcessor
    sev: sp_sev.SevPlatform
    reference: bytes
    altered: bytes
    barbican_log: str = ""


def _outcome(resp: Any, opened: bytes | None, key: bytes) -> str:
    if resp.status_code == 200:
        return "granted" if opened == key else "released a wrong secret"
    return f"denied ({flows.error_code(resp) or resp.status_code})"


def _launch_security(xml: str) -> str:
    from lxml import etree

    ls = etree.fromstring(xml.encode()).find("launchSecurity")
    if ls is None:
        return "(no <launchSecurity>)"
    ls.text = None
    for el in ls.iter():
        el.tail = None
        if el.text and len(el.text) > 64:  # SEV's session blobs
            el.text = el.text[:40] + "..."
    text: str = etree.tostring(ls, pretty_print=True).decode()
    return text


def _cases(ctx: Context) -> list[type[unittest.TestCase]]:
    # Nova's harness is imported only now: barbican-api is already up.
    from oslo_utils.fixture import uuidsentinel as uuids

    import fixtures
    import requests

    from nova_tee.scheduler import floors as tee_floors
    from nova_tee.virt.libvirt import driver as tee_driver
    from openstack_tee_demo import nova_harness
    from openstack_tee_demo import report
    from openstack_tee_demo import sev_model
    from openstack_tee_demo.sp_model import configfs

    console = ctx.console

    def show_xml(xml: str) -> None:
        for line in _launch_security(xml).rstrip().splitlines():
            console.say("      " + line)

    class SNPDemo(nova_harness.TEEServersTestBase):

        def setUp(self) -> None:
            super().setUp()
            self.flags(barbican_url=ctx.barbican_url,
                       barbican_noauth_project="nova-service", group="tee")

        def test_snp(self) -> None:
            url = ctx.barbican_url
            console.heading("AMD SEV-SNP: placement, launch, attested "
                            "release")
            with console.step("starting nova-compute on snp-current (TCB "
                              "SNP SPL 22) and snp-stale (SPL 8)"):
                self.start_tee_compute("snp-current", ctx.snp_current)
                self.start_tee_compute("snp-stale", ctx.snp_stale)
            with console.step("owner: sealed key in tee_sealed, policy "
                              "with the reference measurement"):
                secret_id, key = flows.owner_secret(
                    url, self.api.project_id, {
                        "name": "demo-snp", "tee": "amd-sev-snp",
                        "measurements": [ctx.reference.hex()],
                        "min_tcb": {"snp": 22}})
            console.say(f"      reference measurement ({VCPUS} vCPUs, "
                        f"sev-snp-measure): {ctx.reference.hex()[:32]}...")
            flavor = self.tee_flavor("amd-sev-snp", min_tcb_snp="22")
            console.say("      flavor: hw:mem_encryption=true "
                        "hw:mem_encryption_model=amd-sev-snp "
                        "tee:min_tcb_snp=22")
            start = time.monotonic()
            with _scheduler_lines() as lines, console.step(
                    "booting the SNP guest through Nova's API"):
                body = self._build_server(
                    image_uuid=uuids.tee_snp_image, flavor_id=flavor,
                    networks="none")
                body["metadata"] = {"tee_secret": secret_id}
                with nova_harness.snp_caps():
                    server = self._wait_for_state_change(
                        self.api.post_server({"server": body}), "ACTIVE")
            host = server["OS-EXT-SRV-ATTR:host"]
            lines.say(console)
            console.verdict("SNP guest placed on the up-to-date host",
                            "snp-current", host, time.monotonic() - start)
            xml = self.domain_xml(server)
            console.say("      <launchSecurity> written by "
                        "TEELibvirtDriver:")
            show_xml(xml)
            expected_hd = base64.b64encode(
                tee_driver.host_data(server["id"])).decode()
            console.verdict(
                "hostData binds the instance", "SHA-256(prefix + uuid)",
                "SHA-256(prefix + uuid)" if f"<hostData>{expected_hd}"
                "</hostData>" in xml else "missing or different", 0.0)

            host_data = tee_driver.host_data(server["id"])
            genuine = flows.SNPGuest(ctx.snp_current, ctx.reference,
                                     host_data)
            start = time.monotonic()
            resp, nonce = genuine.release(url, secret_id)
            opened = genuine.open(resp) if resp.status_code == 200 else None
            console.verdict("release to the genuine guest", "granted",
                            _outcome(resp, opened, key),
                            time.monotonic() - start)
            start = time.monotonic()
            resp, _ = genuine.release(url, secret_id, nonce=nonce)
            console.verdict("the same nonce replayed", "denied "
                            "(nonce_unknown)", _outcome(resp, None, key),
                            time.monotonic() - start)
            altered = flows.SNPGuest(ctx.snp_current, ctx.altered,
                                     host_data)
            start = time.monotonic()
            resp, _ = altered.release(url, secret_id)
            console.verdict("guest booted from altered firmware",
                            "denied (policy_measurement)",
                            _outcome(resp, None, key),
                            time.monotonic() - start)

    class SEVDemo(nova_harness.TEEServersTestBase):

        def setUp(self) -> None:
            super().setUp()
            self.libvirt.amd_sev.sev_snp = False
            self.libvirt.amd_sev.sev_es = False
            self.model = self.useFixture(sev_model.SEVModelFixture(ctx.sev))
            self.flags(barbican_url=ctx.barbican_url,
                       barbican_noauth_project="nova-service", group="tee")

        def _boot(self, host: str, secret_id: str,
                  expected: str) -> dict[str, Any]:
            flavor = self.tee_flavor("amd-sev", attestation="required")
            return self.boot_on(host, uuids.tee_sev_image, flavor,
                                secret_id, expected, nova_harness.sev_caps)

        def test_sev(self) -> None:
            url = ctx.barbican_url
            console.heading("AMD SEV: launch-time attestation (pre-"
                            "attestation by the guest owner)")
            with console.step("starting nova-compute on sev-good and "
                              "sev-altered (a patched OVMF)"):
                self.start_sev_compute("sev-good")
                self.start_sev_compute("sev-altered",
                                       firmware=PATCHED_SEV_FIRMWARE)
            digest = hashlib.sha256(sev_model.DEFAULT_FIRMWARE).hexdigest()
            policy = {"name": "demo-sev", "tee": "amd-sev",
                      "measurements": [digest]}
            secret_id, key = flows.owner_secret(url, self.api.project_id,
                                                policy)
            start = time.monotonic()
            with console.step("booting an attested SEV guest on sev-good "
                              "(paused start, measurement, secret)"):
                server = self._boot("sev-good", secret_id, "ACTIVE")
            dom = self.domain(server)
            console.say("      <launchSecurity> with the owner's session:")
            show_xml(dom.tee_xml)
            console.say("      domain events: "
                        + " -> ".join(dom.tee_events))
            injected = getattr(dom, "tee_injected", {}).get(
                sev_model.LUKS_KEY_GUID)
            observed = ("granted" if injected == key and dom.tee_events[:3]
                        == ["started-paused", "secret-injected",
                            "resumed"] else "not injected before resume")
            console.verdict("SEV key injected, decrypted in the guest",
                            "granted", observed, time.monotonic() - start)

            other_id, _ = flows.owner_secret(url, self.api.project_id,
                                             policy)
            start = time.monotonic()
            with console.step("booting the same guest on sev-altered"):
                bad = self._boot("sev-altered", other_id, "ERROR")
            fault = bad.get("fault", {}).get("message", "")
            shown = fault[fault.find("openstack-tee:"):] if (
                "openstack-tee:" in fault) else fault
            shown = shown if len(shown) < 150 else shown[:147] + "..."
            console.say(f"      server ERROR, fault: {shown}")
            doms = self.model.started.get(bad["id"], [])
            leaked = any(hasattr(d, "tee_injected")
                         or "resumed" in d.tee_events for d in doms)
            code = ("sev_measurement_mismatch"
                    if "sev_measurement_mismatch" in fault else
                    fault or "no fault")
            observed = f"denied ({code})" + (
                ", but something was injected or resumed" if leaked else "")
            console.verdict("SEV guest on altered firmware",
                            "denied (sev_measurement_mismatch)", observed,
                            time.monotonic() - start)

    class FloorDemo(nova_harness.TEEServersTestBase):
        """The operator raises the SNP floor: hosts, guests, leases."""

        def setUp(self) -> None:
            super().setUp()
            # TEEFilter reads the floors at every request here (in a
            # cloud: within [tee] floor_cache_ttl, 60 s by default).
            self.flags(barbican_url=ctx.barbican_url,
                       barbican_noauth_project="nova-service",
                       floor_cache_ttl=0, group="tee")
            self.useFixture(fixtures.MockPatchObject(
                tee_floors, "CACHE", tee_floors.FloorCache()))

        def _guest(self, command: str, tsm_root: str, secret_id: str,
                   key_file: str) -> tuple[int, str]:
            err = io.StringIO()
            rc = tee_guest.main(
                [command, "--secret", secret_id, "--endpoint",
                 ctx.barbican_url, "--tsm-root", tsm_root, "--out",
                 key_file], stdout=io.BytesIO(), stderr=err)
            return rc, err.getvalue()

        def _boot(self, flavor: str, secret_id: str, host: str,
                  expected: str) -> dict[str, Any]:
            return self.boot_on(host, uuids.tee_snp_image, flavor,
                                secret_id, expected, nova_harness.snp_caps)

        def test_floor(self) -> None:
            url = ctx.barbican_url
            console.heading("Trust over time: the operator raises the "
                            "SNP floor")
            with console.step("starting nova-compute on snp-current (SNP "
                              "SPL 22) and snp-stale (SPL 8)"):
                self.start_tee_compute("snp-current", ctx.snp_current)
                self.start_tee_compute("snp-stale", ctx.snp_stale)
            with console.step(f"owner: sealed key, policy with a lease "
                              f"(max_age {LEASE} s)"):
                secret_id, key = flows.owner_secret(
                    url, self.api.project_id, {
                        "name": "demo-lease", "tee": "amd-sev-snp",
                        "measurements": [ctx.reference.hex()],
                        "max_age": LEASE})
            flavor = self.tee_flavor("amd-sev-snp", min_tcb_snp="0")
            with console.step("booting an SNP guest on snp-stale (at "
                              "the floor of barbican.conf, 3.0.8.115)"):
                server = self._boot(flavor, secret_id, "snp-stale",
                                    "ACTIVE")
            tsm = self.useFixture(configfs.FakeConfigfsTsm(
                sp=ctx.snp_stale, report_kwargs={
                    "measurement": ctx.reference,
                    "host_data": tee_driver.host_data(server["id"])}))
            key_file = os.path.join(self.useFixture(
                fixtures.TempDir()).path, "disk.key")
            start = time.monotonic()
            rc, err = self._guest("fetch", tsm.root, secret_id, key_file)
            lease: dict[str, Any] = {}
            if rc == 0:
                with open(key_file + tee_guest.LEASE_SUFFIX) as f:
                    lease = json.load(f)
                with open(key_file, "rb") as f:
                    held = f.read() == key
            else:
                held = False
            console.say("      tee-guest fetch: " + err.strip().replace(
                "\n", "\n      tee-guest fetch: "))
            console.verdict(
                "guest on snp-stale fetches its key (tee-guest)",
                f"granted (lease {LEASE} s)",
                f"granted (lease {lease.get('max_age')} s)" if held
                else f"denied (exit {rc})", time.monotonic() - start)
            start = time.monotonic()
            rc, err = self._guest("renew", tsm.root, secret_id, key_file)
            console.verdict("its renewal before the floor moves", "renewed",
                            "renewed" if rc == 0 else f"exit {rc}",
                            time.monotonic() - start)

            with console.step("operator: PUT /v1/tee/floors/milan (openstack "
                              "tee floor set milan --bootloader 3 --tee 0 "
                              "--snp 22 --microcode 115)"):
                resp = requests.put(
                    f"{url}/v1/tee/floors/milan", json=RAISED_MILAN_FLOOR,
                    headers=flows.headers("cloud-admin", "admin"),
                    timeout=flows.TIMEOUT)
                resp.raise_for_status()
            console.say("      effective Milan floor: " + ", ".join(
                f"{k} {v}" for k, v in resp.json()["effective"].items()))

            start = time.monotonic()
            with _scheduler_lines() as lines, console.step(
                    "booting a new SNP guest, asked for on snp-stale"):
                refused = self._boot(flavor, secret_id, "snp-stale",
                                     "ERROR")
            lines.say(console)
            fault = refused.get("fault", {}).get("message", "")
            floor_line = any("snp-stale fails: SNP TCB below the milan "
                             "platform floor" in line
                             for line in lines.lines)
            console.verdict(
                "new guest on snp-stale after the raise",
                "refused (below the floor)",
                "refused (below the floor)" if floor_line
                and "No valid host" in fault else
                f"{refused.get('status')} ({fault or 'no fault'})",
                time.monotonic() - start)

            start = time.monotonic()
            rc, err = self._guest("renew", tsm.root, secret_id, key_file)
            console.say("      tee-guest renew: " + err.strip().replace(
                "\n", "\n      tee-guest renew: "))
            code = ("tcb_below_floor" if "[tcb_below_floor]" in err
                    else f"exit {rc}")
            dropped = not os.path.exists(key_file)
            console.verdict(
                "the guest on snp-stale renews after the raise",
                "denied (tcb_below_floor), key dropped",
                f"denied ({code})" + (", key dropped" if dropped
                                      else ", key still held"),
                time.monotonic() - start)
            audited = ""
            if ctx.barbican_log:
                with open(ctx.barbican_log, errors="replace") as f:
                    for line in f:
                        if (f"tee.release.denied secret={secret_id} "
                                "codes=tcb_below_floor" in line
                                and line.rstrip().endswith(
                                    "renewal=claimed")):
                            audited = line[line.find("openstack-tee "
                                                     "audit"):].rstrip()
            if audited:
                console.say(f"      barbican-api log: {audited}")
            console.verdict(
                "the refused renewal in the audit log",
                "tee.release.denied (renewal=claimed)",
                "tee.release.denied (renewal=claimed)" if audited
                else "not found", 0.0)

            start = time.monotonic()
            with console.step("operator: openstack tee tcb report"):
                columns, rows = report.tcb_report(self, url)
            widths = [max(len(c), *(len(r[i]) for r in rows))
                      if rows else len(c)
                      for i, c in enumerate(columns[:-1])]
            console.say("      " + "  ".join(
                c.ljust(w) for c, w in zip(columns[:-1], widths,
                                          strict=True)))
            for row in rows:
                console.say("      " + "  ".join(
                    v.ljust(w) for v, w in zip(row[:-1], widths,
                                              strict=True)))
            if rows:
                console.say(f"      Action: {rows[0][-1]}")
            listed = [r for r in rows if r[0] == "snp-stale"
                      and r[4] == server["id"]]
            console.verdict(
                "tcb report lists snp-stale and its guest",
                "snp-stale: below the floor, 1 guest",
                f"snp-stale: below the floor, {len(listed)} guest"
                if listed else "not listed", time.monotonic() - start)

    return [SNPDemo, SEVDemo, FloorDemo]


EXPECTED_VERDICTS = 13


def _run_case(console: Console, case: type[unittest.TestCase]) -> bool:
    suite = unittest.defaultTestLoader.loadTestsFromTestCase(case)
    # Nova's harness captures its logs while a case runs; its thread pools
    # say goodbye at INFO after that. Warnings and errors still show.
    logging.getLogger("nova.thread_pool_factory").setLevel(logging.WARNING)
    with open(os.devnull, "w") as sink:
        outcome = unittest.TextTestRunner(stream=sink, verbosity=0).run(
            suite)
    for _, trace in outcome.errors + outcome.failures:
        console.say("  the demo step failed:")
        for line in trace.rstrip().splitlines()[-12:]:
            console.say("    " + line)
    return outcome.wasSuccessful()


def run(workers: int = 2, out: TextIO | None = None) -> int:
    """The whole demonstration; 0 only if every verdict was expected."""
    console = Console(out or sys.stdout)
    console.say("openstack-tee demo: attested confidential VMs with Nova "
                "34.0.0 and Barbican 23.0.0")
    console.say("(the only stand-in: the software model of the AMD secure "
                "processor)")
    tmp = tempfile.mkdtemp(prefix="openstack-tee-demo-")
    srv: server.Server | None = None
    try:
        with console.step("software secure processors: test ARK/ASK/VCEK "
                          "and PDH keys"):
            snp_current = sp_snp.SecureProcessor(label="demo",
                                                 tcb=CURRENT_TCB)
            snp_stale = sp_snp.SecureProcessor(label="demo", tcb=STALE_TCB)
            sev = sp_sev.SevPlatform()
            roots = os.path.join(tmp, "snp-ark.pem")
            with open(roots, "wb") as f:
                f.write(snp_current.bundle_pem())
            ark, ask = os.path.join(tmp, "ark"), os.path.join(tmp, "ask")
            for path, blob in ((ark, sev.ark), (ask, sev.ask)):
                with open(path, "wb") as f:
                    f.write(blob)
        with console.step("reference values with sev-snp-measure"):
            with open(OVMF, "rb") as f:
                firmware = f.read()
            reference = measure.ReferenceCalculator(
                firmware, mode="snp", **LAUNCH).digest(VCPUS)
            patched = bytearray(firmware)
            patched[16] ^= 0x01  # one byte of code, metadata untouched
            altered = measure.ReferenceCalculator(
                bytes(patched), mode="snp", **LAUNCH).digest(VCPUS)
        port = server.free_port()
        with console.step(f"barbican-api: gunicorn, {workers} workers, "
                          f"sqlite, on 127.0.0.1:{port}"):
            layout = server.prepare(
                os.path.join(tmp, "barbican"), port, trust_root=roots,
                extra_conf={"tee_attestation": {
                    "extra_sev_trust_roots": f"{ark}:{ask}"}})
            srv = server.Server(layout, port, workers)
            srv.start()
        ctx = Context(console, srv.url, snp_current, snp_stale, sev,
                      reference, altered, layout.log_path)
        with console.step("loading Nova 34.0.0's functional harness"):
            cases = _cases(ctx)
        complete = all([_run_case(console, case) for case in cases])
        ok = console.summary(EXPECTED_VERDICTS) and complete
    finally:
        if srv is not None:
            srv.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    console.say("  demo " + ("passed: every verdict as expected" if ok
                             else "FAILED"))
    return 0 if ok else 1
