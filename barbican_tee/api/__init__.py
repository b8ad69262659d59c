"""barbican-api side of openstack-tee: the /v1/tee REST API."""
