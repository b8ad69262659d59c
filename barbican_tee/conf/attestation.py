"""Options of the ``[tee_attestation]`` group: what the verifiers trust."""

from __future__ import annotations

from oslo_config import cfg

GROUP = cfg.OptGroup(
    "tee_attestation",
    title="Attestation verification",
    help="What the SEV-SNP, SEV and TDX verifiers trust and accept.")

OPTS = [
    cfg.BoolOpt(
        "use_builtin_amd_roots",
        default=True,
        help="Trust AMD's own ARK/ASK/ASVK certificates for Milan, Genoa "
             "and Turin, shipped with this package. Turn off only when "
             "every trusted root is listed in extra_snp_trust_roots."),
    cfg.ListOpt(
        "extra_snp_trust_roots",
        default=[],
        help="PEM bundles (ARK, ASK and/or ASVK) to trust in addition to "
             "AMD's roots. Never needed in production; the test and demo "
             "environments use it for the software secure-processor "
             "model's test ARK."),
    cfg.ListOpt(
        "extra_sev_trust_roots",
        default=[],
        help="ARK_FILE:ASK_FILE pairs (AMD's binary certificate format) "
             "to trust, besides AMD's Naples, Rome, Milan and Genoa roots, "
             "when verifying a platform's SEV certificate chain (CEK, PEK, "
             "PDH, OCA) before a launch session is made. Never needed in "
             "production; tests and the demo use it for the software "
             "secure-processor model."),
    cfg.ListOpt(
        "snp_crl_files",
        default=[],
        help="CRLs from AMD's key distribution service (DER or PEM), one "
             "per product; an ASK or ASVK revoked there makes every report "
             "it endorses fail with snp_cert_revoked."),
]


def register_opts(conf: cfg.ConfigOpts) -> None:
    conf.register_group(GROUP)
    conf.register_opts(OPTS, group=GROUP)


def list_opts() -> list[tuple[cfg.OptGroup, list[cfg.Opt]]]:
    return [(GROUP, list(OPTS))]
