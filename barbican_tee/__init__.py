"""openstack-tee: attested confidential computing for Barbican."""
