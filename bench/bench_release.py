"""Attested release against a plain payload GET, on one real barbican-api.

One server (gunicorn, 4 workers, sqlite), the software secure processor's
root trusted. Baseline: ``GET /v1/secrets/{id}/payload`` of an ordinary
secret (store_crypto + simple_crypto), sequentially. Ours: the guest's whole
round trip for a sealed secret -- ``POST /v1/tee/challenge``, a report signed
by the model with the nonce-bound report_data, ``POST /v1/tee/release``,
JWE decryption. Ratio = release round trip / payload GET (target: at most
1.5). Then releases per second with 4 concurrent clients.
"""

from __future__ import annotations

import base64
import concurrent.futures
import hashlib
import os
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import requests  # noqa: E402

from barbican_tee.client import guest  # noqa: E402
from bench import common  # noqa: E402
from openstack_tee_demo.sp_model import snp as sp_model  # noqa: E402
from tests.functional.barbican import fixture  # noqa: E402

MEASUREMENT = hashlib.sha384(b"bench guest").digest()


def _headers(project: str) -> dict[str, str]:
    return {"X-Project-Id": project, "X-User-Id": "bench",
            "X-Roles": "admin,member,reader",
            "Content-Type": "application/json"}


def _store(session: requests.Session, url: str, project: str) -> str:
    resp = session.post(f"{url}/v1/secrets", headers=_headers(project),
                        json={"payload": base64.b64encode(
                            os.urandom(32)).decode(),
                            "payload_content_type":
                                "application/octet-stream",
                            "payload_content_encoding": "base64"},
                        timeout=30)
    resp.raise_for_status()
    return str(resp.json()["secret_ref"].rsplit("/", 1)[1])


def run() -> list[str]:
    sp = sp_model.SecureProcessor(label="bench")
    tmp = tempfile.mkdtemp()
    root = os.path.join(tmp, "ark.pem")
    with open(root, "wb") as f:
        f.write(sp.bundle_pem())
    # Rate limits off the scale: the benchmark itself is the flood.
    server = fixture.BarbicanServer(
        workers=4, trust_root=root, extra_conf={"tee_api": {
            "release_rate_per_secret": "1000000",
            "release_rate_per_client": "1000000"}})
    server.setUp()
    try:
        return _measure(server.url, sp)
    finally:
        server.cleanUp()


def _measure(url: str, sp: sp_model.SecureProcessor) -> list[str]:
    http = requests.Session()
    plain_id = _store(http, url, "bench-plain")
    owner = "bench-owner"
    stores = http.get(f"{url}/v1/secret-stores", headers=_headers(owner),
                      timeout=30).json()["secret_stores"]
    sealed = [s for s in stores if "tee" in s["name"].lower()][0]
    http.post(sealed["secret_store_ref"] + "/preferred",
              headers=_headers(owner), timeout=30).raise_for_status()
    sealed_id = _store(http, url, owner)
    policy = http.post(f"{url}/v1/tee/policies", headers=_headers(owner),
                       json={"tee": "amd-sev-snp",
                             "measurements": [MEASUREMENT.hex()]},
                       timeout=30).json()["id"]
    http.put(f"{url}/v1/tee/secrets/{sealed_id}/policy",
             headers=_headers(owner), json={"policy_id": policy},
             timeout=30).raise_for_status()
    vcek_pem = ("-----BEGIN CERTIFICATE-----\n"
                + base64.encodebytes(sp.vcek_der).decode()
                + "-----END CERTIFICATE-----\n")
    chain = sp.bundle_pem().decode()

    def plain_get(session: requests.Session = http) -> None:
        resp = session.get(f"{url}/v1/secrets/{plain_id}/payload",
                           headers=dict(_headers("bench-plain"),
                                        Accept="application/octet-stream"),
                           timeout=30)
        resp.raise_for_status()

    def release(session: requests.Session = http) -> None:
        nonce = session.post(f"{url}/v1/tee/challenge",
                             json={"secret_id": sealed_id},
                             timeout=30).json()["nonce"]
        key = guest.make_key()
        report = sp.report(measurement=MEASUREMENT,
                           report_data=guest.report_data(nonce, key))
        resp = session.post(f"{url}/v1/tee/release", timeout=30, json={
            "secret_id": sealed_id, "nonce": nonce,
            "public_key": guest.public_jwk(key),
            "evidence": {"format": "amd-sev-snp-report",
                         "report": base64.b64encode(report).decode(),
                         "vcek": vcek_pem, "cert_chain": chain}})
        resp.raise_for_status()
        guest.decrypt(resp.json()["jwe"], key)

    inner = 20
    base = common.median_seconds(plain_get, rounds=7, inner=inner)
    ours = common.median_seconds(release, rounds=7, inner=inner)
    lines = [common.ratio_line("release_round_trip_vs_payload_get",
                               ours / base, "<=", 1.5),
             f"  medians: payload GET={base * 1e3:.1f}ms attested release "
             f"round trip={ours * 1e3:.1f}ms rounds=7 x {inner}"]

    def burst(count: int) -> float:
        sessions = [requests.Session() for _ in range(4)]
        start = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda i: release(sessions[i % 4]),
                          range(count)))
        return count / (time.perf_counter() - start)

    rates = [burst(40) for _ in range(3)]
    lines.append(f"  releases per second, 4 clients, 4 workers: "
                 f"{statistics.median(rates):.1f} (median of 3 bursts of "
                 "40)")
    return lines


if __name__ == "__main__":
    print("\n".join(run()))
