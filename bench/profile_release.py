"""Profile the server side of attested releases (not a benchmark).

  python bench/profile_release.py [COUNT] [SORT]

Builds barbican-api's real app (``barbican_tee.wsgi``, the paste pipeline
``openstack-tee serve`` runs, sqlite) in this process and sends it COUNT
challenge + release pairs through WSGI; cProfile runs only while the app
handles them (the client's report signing and decryption are outside).
Prints the top functions by SORT (default ``cumulative``); PROFILE=0
measures the app's CPU time without the profiler, PROFILE_DUMP=FILE also
writes the stats to FILE (``pstats``).
"""

from __future__ import annotations

import base64
import cProfile
import hashlib
import json
import os
import pstats
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import webob  # type: ignore[import-untyped] # noqa: E402

from barbican_tee.client import guest  # noqa: E402
from barbican_tee import server  # noqa: E402
from openstack_tee_demo.sp_model import snp as sp_model  # noqa: E402

MEASUREMENT = hashlib.sha384(b"bench guest").digest()


def main(count: int, sort: str) -> None:
    sp = sp_model.SecureProcessor(label="profile")
    data = tempfile.mkdtemp()
    root = os.path.join(data, "ark.pem")
    with open(root, "wb") as f:
        f.write(sp.bundle_pem())
    layout = server.prepare(data, server.free_port(), trust_root=root,
                            check=False, extra_conf={"tee_api": {
                                "release_rate_per_secret": "1000000",
                                "release_rate_per_client": "1000000"}})
    os.environ.update(server.server_env(layout))
    from barbican_tee import wsgi
    app = wsgi.build_application()
    # CPU time, as the benchmark counts the workers' (I/O waits, say an
    # fsync, are not in it).
    prof = cProfile.Profile(time.process_time)
    # PROFILE=0: the app's CPU time per pair without the profiler's.
    profiling = os.environ.get("PROFILE", "1") != "0"
    spent = [0.0]
    pairs: list[float] = []

    def call(method: str, path: str, body: object = None,
             project: str | None = None) -> webob.Response:
        headers = {"Content-Type": "application/json"}
        if project:
            headers.update({"X-Project-Id": project, "X-User-Id": "p",
                            "X-Roles": "admin,member,reader"})
        req = webob.Request.blank(
            path, method=method, headers=headers,
            body=b"" if body is None else json.dumps(body).encode(),
            environ={"REMOTE_ADDR": "127.0.0.1"})
        start = time.process_time()
        if profiling:
            prof.enable()
        resp = req.get_response(app)
        if profiling:
            prof.disable()
        spent[0] += time.process_time() - start
        if resp.status_int >= 300:
            raise RuntimeError(f"{method} {path}: {resp.status} "
                               f"{resp.text[:300]}")
        return resp

    payload = base64.b64encode(os.urandom(32)).decode()
    policy = call("POST", "/v1/tee/policies",
                  {"tee": "amd-sev-snp", "measurements": [MEASUREMENT.hex()]},
                  "owner").json["id"]
    ref = call("POST", "/v1/tee/secrets",
               {"payload": payload, "payload_content_encoding": "base64",
                "payload_content_type": "application/octet-stream",
                "policy": policy}, "owner").json["secret_ref"]
    secret_id = ref.rsplit("/", 1)[1]
    vcek = ("-----BEGIN CERTIFICATE-----\n"
            + base64.encodebytes(sp.vcek_der).decode()
            + "-----END CERTIFICATE-----\n")
    chain = sp.bundle_pem().decode()

    def release() -> None:
        nonce = call("POST", "/v1/tee/challenge",
                     {"secret_id": secret_id}).json["nonce"]
        key = guest.make_key()
        report = sp.report(measurement=MEASUREMENT,
                           report_data=guest.report_data(nonce, key))
        jwe = call("POST", "/v1/tee/release", {
            "secret_id": secret_id, "nonce": nonce,
            "public_key": guest.public_jwk(key),
            "evidence": {"format": "amd-sev-snp-report",
                         "report": base64.b64encode(report).decode(),
                         "vcek": vcek, "cert_chain": chain}}).json["jwe"]
        guest.decrypt(jwe, key)

    for _ in range(5):
        release()  # warm
    prof = cProfile.Profile(time.process_time)
    spent[0] = 0.0
    for _ in range(count):
        before = spent[0]
        release()
        pairs.append(spent[0] - before)
    # Batches of 20 pairs: on cores shared with other jobs the best
    # batch is the steadiest figure to compare changes with.
    batches = [statistics.mean(pairs[i:i + 20])
               for i in range(0, len(pairs) - 19, 20)]
    print(f"{count} challenge + release pairs: "
          f"{spent[0] / count * 1e3:.2f} ms of app CPU time each "
          "(profiler overhead included); best batch of 20: "
          f"{min(batches, default=0.0) * 1e3:.2f} ms, median batch "
          f"{statistics.median(batches or [0.0]) * 1e3:.2f} ms")
    if not profiling:
        return
    lines = int(os.environ.get("PROFILE_LINES", "45"))
    stats = pstats.Stats(prof)
    if os.environ.get("PROFILE_DUMP"):
        # For pstats' callers/callees views afterwards.
        stats.dump_stats(os.environ["PROFILE_DUMP"])
    stats.sort_stats(sort).print_stats(lines)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 200,
         sys.argv[2] if len(sys.argv) > 2 else "cumulative")
