"""``openstack tee`` commands, version 1 of the TEE API."""
