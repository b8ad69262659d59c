"""nova-api side of openstack-tee."""
