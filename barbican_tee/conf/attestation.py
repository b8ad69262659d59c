"""Options of the ``[tee_attestation]`` group: what the verifiers trust."""

from __future__ import annotations

from oslo_config import cfg

GROUP = cfg.OptGroup(
    "tee_attestation",
    title="Attestation verification",
    help="What the SEV-SNP, SEV and TDX verifiers trust and accept.")

# Default TCB floors, per product (see each option's help for where the
# numbers come from; operators must review them).
_MILAN_FLOOR = {"bootloader": "3", "tee": "0", "snp": "8",
                "microcode": "115"}
_GENOA_FLOOR = {"bootloader": "10", "tee": "0", "snp": "23",
                "microcode": "84"}
_TURIN_FLOOR = {"bootloader": "1", "tee": "0", "snp": "1",
                "microcode": "1"}

OPTS = [
    cfg.ListOpt(
        "evidence_formats",
        default=["amd-sev-snp-report", "intel-tdx-quote"],
        help="Evidence formats a release accepts (evidence.format), each "
             "verified by the plugin of that name in the "
             "openstack_tee.evidence entry-point namespace. A format not "
             "listed, or whose plugin is not installed or fails to load, "
             "is refused with evidence_format. Add a third-party verifier "
             "here only once you trust it: it decides which evidence "
             "proves a guest."),
    cfg.ListOpt(
        "endorsement_sources",
        default=["database"],
        help="Endorsement sources (plugins in the "
             "openstack_tee.endorsements entry-point namespace), asked in "
             "this order for what a guest's evidence lacks (an SNP "
             "report's VCEK or VLEK, a TDX quote's collateral), and for "
             "AMD CRLs checked on every SNP report. What a source gives "
             "is verified against the trust roots like anything a guest "
             "sends: a source adds no trust. The built-in 'database' is "
             "the endorsement cache in Barbican's database (openstack tee "
             "endorsement import): local, no network, verified on import "
             "and on use. An empty list turns the cache off (guests must "
             "then send their VCEK or collateral; cached CRLs are not "
             "checked)."),
    cfg.IntOpt(
        "endorsement_cache_ttl",
        default=300, min=0,
        help="Seconds an endorsement source's answer (a VCEK, collateral) "
             "is kept in this process's cache, keyed by the source and "
             "what was asked (chip id, TCB, signer; or the quote). 0: not "
             "cached. \"Not found\" is never cached. Sources that set "
             "bounded = False are called directly; the built-in "
             "'database' source keeps the VCEKs it found for as long (never "
             "past their notAfter), and reads CRLs on every release."),
    cfg.IntOpt(
        "endorsement_cache_size",
        default=1024, min=0,
        help="Answers kept per endorsement source and process (least "
             "recently used first out)."),
    cfg.IntOpt(
        "endorsement_source_concurrency",
        default=4, min=1,
        help="Calls into one endorsement source in progress at once, per "
             "process; beyond, a release is refused with "
             "endorsement_source_busy (503) rather than queued. The "
             "release route takes no token and the chip id is the "
             "report's, unverified: this keeps a network source from "
             "being used as an amplifier."),
    cfg.IntOpt(
        "endorsement_source_calls_per_minute",
        default=120, min=1,
        help="Calls (cache misses) into one endorsement source per "
             "minute, per process; beyond, endorsement_source_busy (503)."),
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
    cfg.IntOpt(
        "lease_max_age",
        default=30 * 24 * 3600, min=1, max=365 * 24 * 3600,
        help="Longest lease, in seconds, a policy's max_age may give a "
             "released key (30 days by default). A policy asking for more "
             "is refused with policy_max_age when it is created; a stored "
             "policy's lease is cut to this at release, so lowering it "
             "shortens every lease given from then on. Policies without "
             "max_age give no lease, whatever this says."),
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
             "it endorses fail with snp_cert_revoked. A configured CRL is "
             "always checked; once past its nextUpdate every report of its "
             "product fails with snp_crl_expired (see "
             "snp_crl_allow_stale): refresh the files from "
             "https://kdsintf.amd.com/vcek/v1/<product>/crl."),
    cfg.BoolOpt(
        "snp_crl_allow_stale",
        default=False,
        help="Keep using a configured CRL after its nextUpdate instead of "
             "refusing every report of its product with snp_crl_expired. "
             "Only as a stop-gap while a fresh CRL cannot be fetched: a "
             "stale CRL can miss a revocation."),
    cfg.DictOpt(
        "tcb_floor_milan",
        default=_MILAN_FLOOR,
        help="Lowest SEV-SNP TCB (security patch levels, as "
             "bootloader:N,tee:N,snp:N,microcode:N) a Milan host may "
             "report for any key to be released. A policy's min_tcb can "
             "only raise it, field by field (reports below it fail with "
             "snp_tcb_below_floor). The default is the TCB Milan hosts "
             "ran when SEV-SNP became generally available (Azure's "
             "launch TCB, also the virtee/sev test report's): a non-zero "
             "start, NOT AMD's current recommendation. Review it against "
             "AMD's security bulletins (amd.com/en/resources/product-"
             "security.html, e.g. AMD-SB-3019) and the TCB your hosts "
             "report, and raise it. An empty value disables the floor."),
    cfg.DictOpt(
        "tcb_floor_genoa",
        default=_GENOA_FLOOR,
        help="Lowest SEV-SNP TCB a Genoa host may report (as "
             "tcb_floor_milan). The default is the TCB of a production "
             "Genoa host (Azure evidence in Trustee's test data): a "
             "non-zero start, NOT AMD's current recommendation. Review "
             "it against AMD's security bulletins and raise it."),
    cfg.DictOpt(
        "tcb_floor_turin",
        default=_TURIN_FLOOR,
        help="Lowest SEV-SNP TCB a Turin host may report (as "
             "tcb_floor_milan, plus fmc:N). No published number backs "
             "the default, which only demands bootloader, snp and "
             "microcode SPLs of at least 1: set it from AMD's security "
             "bulletins and your hosts before trusting Turin hosts."),
    cfg.ListOpt(
        "tcb_floor_tdx_statuses",
        default=[],
        help="Intel TCB statuses (as Intel PCS names them: UpToDate, "
             "SWHardeningNeeded, ConfigurationNeeded, "
             "ConfigurationAndSWHardeningNeeded, OutOfDate, "
             "OutOfDateConfigurationNeeded) a TDX platform may have for "
             "any key to be released, whatever a policy accepts. Empty: "
             "no floor here (a policy accepts UpToDate only unless it "
             "says otherwise). An administrator's floor set with "
             "`openstack tee floor set tdx` narrows it further; this "
             "option is the one a database writer cannot change."),
    cfg.StrOpt(
        "tcb_floor_tdx_tee_tcb_svn",
        default="",
        help="Lowest TEE TCB SVN (32 hex digits, the TD report's "
             "TEE_TCB_SVN, compared byte by byte) a TDX platform may "
             "report for any key to be released. Empty: no floor here."),
]


def register_opts(conf: cfg.ConfigOpts) -> None:
    conf.register_group(GROUP)
    conf.register_opts(OPTS, group=GROUP)


def list_opts() -> list[tuple[cfg.OptGroup, list[cfg.Opt]]]:
    return [(GROUP, list(OPTS))]
