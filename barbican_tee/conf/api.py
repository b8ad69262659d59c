"""Options of the ``[tee_api]`` group: the /v1/tee REST API."""

from __future__ import annotations

from oslo_config import cfg

GROUP = cfg.OptGroup("tee_api", title="openstack-tee REST API")

OPTS = [
    cfg.IntOpt("nonce_ttl", default=300, min=10, max=3600,
               help="Seconds a challenge nonce stays valid."),
    cfg.IntOpt("release_rate_per_secret", default=30, min=1,
               help="Releases per secret per minute, counting only those "
                    "whose evidence verified and met the owner's policy "
                    "(challenges and refused releases never spend it), in "
                    "the database so that every API worker shares the "
                    "limit."),
    cfg.IntOpt("release_rate_per_client", default=120, min=1,
               help="Challenges plus releases per client address per "
                    "minute, shared by every API worker."),
    cfg.ListOpt("trusted_proxies", default=[],
                help="Addresses or CIDRs of the proxies and load balancers "
                     "in front of barbican-api. Only a connection from one "
                     "of them has its client address taken from "
                     "forwarded_header (the right-most address there that "
                     "is not itself a trusted proxy); any other "
                     "connection's address is its own, whatever it sends. "
                     "The literal 'unix' trusts a proxy connecting over a "
                     "unix socket (no peer address). "
                     "Empty: every client is the connection's address."),
    cfg.IntOpt("client_ipv6_prefix", default=64, min=32, max=128,
               help="IPv6 clients are counted against "
                    "release_rate_per_client per prefix of this length "
                    "(one /64 is usually one host or site); 128 counts "
                    "each address. IPv4 clients are counted per address."),
    cfg.StrOpt("forwarded_header", default="x-forwarded-for",
               choices=["x-forwarded-for", "forwarded"],
               ignore_case=True,
               help="The header the trusted proxies append the client's "
                    "address to: X-Forwarded-For, or RFC 7239 Forwarded "
                    "(for=). The other header is never read."),
]


def register_opts(conf: cfg.ConfigOpts) -> None:
    conf.register_group(GROUP)
    conf.register_opts(OPTS, group=GROUP)


def list_opts() -> list[tuple[cfg.OptGroup, list[cfg.Opt]]]:
    return [(GROUP, list(OPTS))]
