"""Client side of openstack-tee: REST client, configfs-tsm and tee-guest.

:mod:`barbican_tee.client.rest` talks to the ``/v1/tee/...`` contract,
:mod:`barbican_tee.client.tsm` gets evidence through Linux configfs-tsm,
:mod:`barbican_tee.client.snp_certs` reads the SEV-SNP certificate table
and :mod:`barbican_tee.client.guest` puts them together for ``tee-guest``.
"""

from barbican_tee.client.rest import TEEClient
from barbican_tee.client.rest import TEEClientError

__all__ = ["TEEClient", "TEEClientError"]
