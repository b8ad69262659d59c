"""The OpenStack CLI plugin: ``openstack tee ...``."""
