"""nova-compute side of openstack-tee."""
