"""barbican-tempest-plugin's tests, with and without openstack-tee.

Starts a Keystone (tests/functional/barbican/keystone_fixture.py) and, in
turn, two barbican-apis behind it, both configured as devstack configures
Barbican:

* ``with-tee``: with our devstack plugin's changes (the /v1/tee filters
  added to the paste pipelines by ``barbican_tee.api.paste``, multiple
  secret stores with ``software`` (store_crypto + simple_crypto) as the
  global default and ``tee_sealed``);
* ``without-tee``: Barbican alone (its shipped paste file with devstack's
  Keystone pipeline, one store_crypto + simple_crypto store).

Each time it writes a tempest.conf (as devstack's lib/tempest and
Barbican's devstack plugin would: Secure RBAC on, dynamic credentials),
registers that barbican-api as Keystone's ``key-manager`` endpoint, runs
``tempest run --regex barbican_tempest_plugin.tests.api`` and collects
every test's result. Exit 0 only when both runs ran tests, some passed,
and every test has the same result (success, fail or skip) in both.
``--rbac`` runs the plugin's RBAC tests (``tests.rbac``) too, the same
way (``tox -e tempest -- --rbac``).

    python tools/tempest_barbican.py --tempest-venv DIR [--workdir DIR]
        [--regex REGEX | --rbac] [--concurrency N]

Keystone's virtualenv comes from ``OPENSTACK_TEE_KEYSTONE_VENV``.
"""

from __future__ import annotations

import argparse
import configparser
import csv
import io
import os
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from tests.functional.barbican import keystone_fixture as kf  # noqa: E402

DEFAULT_REGEX = r"^barbican_tempest_plugin\.tests\.api\."
RBAC_REGEX = r"^barbican_tempest_plugin\.tests\.(api|rbac)\."


def tempest_conf(keystone: kf.KeystoneServer, log_dir: str) -> str:
    parser = configparser.RawConfigParser()
    parser.read_dict({
        "DEFAULT": {"log_dir": log_dir, "log_file": "tempest.log"},
        "auth": {"use_dynamic_credentials": "True",
                 "create_isolated_networks": "False",
                 "admin_username": "admin",
                 "admin_password": keystone.admin_password,
                 "admin_project_name": "admin",
                 "admin_domain_name": kf.DOMAIN,
                 "default_credentials_domain_name": kf.DOMAIN},
        "identity": {"uri_v3": keystone.auth_url, "auth_version": "v3",
                     "region": kf.REGION,
                     "disable_ssl_certificate_validation": "True"},
        "identity-feature-enabled": {"api_v2": "False"},
        # Barbican's devstack plugin: BARBICAN_ENFORCE_SCOPE (True).
        "enforce_scope": {"barbican": "True", "keystone": "True"},
        # As Barbican's own tempest jobs: every microversion (the secret
        # consumer tests need 1.1).
        "key_manager": {"catalog_type": "key-manager",
                        "region": kf.REGION, "endpoint_type": "public",
                        "min_microversion": "1.0",
                        "max_microversion": "latest"},
        "service_available": {"barbican": "True", "nova": "False",
                              "glance": "False", "cinder": "False",
                              "neutron": "False", "swift": "False"},
    })
    out = io.StringIO()
    parser.write(out)
    return out.getvalue()


def run_tempest(venv: str, workspace: str, regex: str, concurrency: int
                ) -> dict[str, str]:
    """``tempest run`` in ``workspace``; ``{test id: status}``."""
    subunit = os.path.join(workspace, "results.subunit")
    with open(subunit, "wb") as out:
        proc = subprocess.run(  # noqa: S603 - fixed argv
            [os.path.join(venv, "bin", "tempest"), "run", "--regex", regex,
             "--concurrency", str(concurrency), "--subunit",
             "--config-file", os.path.join(workspace, "etc",
                                           "tempest.conf")],
            cwd=workspace, stdout=out, stderr=subprocess.PIPE,
            timeout=1800, check=False)
    with open(subunit, "rb") as f:
        table = subprocess.run(  # noqa: S603 - fixed argv
            [os.path.join(venv, "bin", "subunit2csv")], stdin=f,
            capture_output=True, timeout=120, check=False).stdout.decode()
    results: dict[str, str] = {}
    for row in csv.DictReader(io.StringIO(table)):
        results[row["test"]] = row["status"]
    if proc.returncode not in (0, 1) or not results:
        sys.stderr.write(proc.stderr.decode(errors="replace")[-5000:])
    return results


def one_run(label: str, with_tee: bool, keystone: kf.KeystoneServer,
            args: argparse.Namespace) -> dict[str, str]:
    workspace = os.path.join(args.workdir, label)
    # A plain directory, not `tempest init` (which registers workspaces in
    # the user's home): `tempest run --config-file` from it.
    os.makedirs(os.path.join(workspace, "etc"))
    os.makedirs(os.path.join(workspace, "logs"))
    extra = {} if with_tee else {
        # Barbican alone, as its devstack plugin leaves it: one store.
        "secretstore": {"enable_multiple_secret_stores": "False"}}
    barbican = kf.KeystoneBarbicanServer(keystone, with_tee=with_tee,
                                         workers=1, extra_conf=extra)
    barbican.setUp()
    try:
        service = keystone.add_endpoint("key-manager", "barbican",
                                        barbican.url)
        with open(os.path.join(workspace, "etc", "tempest.conf"), "w",
                  encoding="utf-8") as f:
            f.write(tempest_conf(keystone,
                                 os.path.join(workspace, "logs")))
        started = time.monotonic()
        results = run_tempest(args.tempest_venv, workspace, args.regex,
                              args.concurrency)
        print(f"{label}: {summary(results)} in "
              f"{time.monotonic() - started:.0f} s", flush=True)
        keystone.delete_service(service)
    finally:
        if args.keep:
            shutil.copy(barbican.log_path,
                        os.path.join(workspace, "barbican-api.log"))
        barbican.cleanUp()
    return results


def summary(results: dict[str, str]) -> str:
    counts: dict[str, int] = {}
    for status in results.values():
        counts[status] = counts.get(status, 0) + 1
    return ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))


def compare(with_tee: dict[str, str], without: dict[str, str]) -> list[str]:
    problems = []
    for label, results in (("with-tee", with_tee),
                           ("without-tee", without)):
        if not results:
            problems.append(f"{label}: no test ran")
        elif "success" not in results.values():
            problems.append(f"{label}: no test passed")
    for test in sorted(set(with_tee) | set(without)):
        a, b = with_tee.get(test, "absent"), without.get(test, "absent")
        if a != b:
            problems.append(f"{test}: {a} with openstack-tee, {b} without")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tempest-venv", required=True)
    parser.add_argument("--workdir")
    tests = parser.add_mutually_exclusive_group()
    tests.add_argument("--regex", default=DEFAULT_REGEX)
    tests.add_argument("--rbac", dest="regex", action="store_const",
                       const=RBAC_REGEX,
                       help="the RBAC tests (tests.rbac) too")
    # One test at a time, one worker per server: sqlite (Keystone's and
    # Barbican's) answers concurrent writers with "database is locked",
    # a 500 that would make the two runs differ by chance.
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--keep", action="store_true",
                        help="keep the workspaces and logs")
    args = parser.parse_args()
    made = args.workdir is None
    args.workdir = args.workdir or tempfile.mkdtemp(prefix="tempest-")
    keystone = kf.KeystoneServer(users=(), workers=1)
    started = time.monotonic()
    keystone.setUp()
    try:
        with_tee = one_run("with-tee", True, keystone, args)
        without = one_run("without-tee", False, keystone, args)
    finally:
        keystone.cleanUp()
        if made and not args.keep:
            shutil.rmtree(args.workdir, ignore_errors=True)
    problems = compare(with_tee, without)
    for line in problems:
        print(line)
    outcome = "differ" if problems else "match"
    print(f"barbican-tempest-plugin tests ({args.regex}): results {outcome} "
          f"({len(with_tee)} tests; {summary(with_tee)}); "
          f"{time.monotonic() - started:.0f} s in all")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
