"""openstack-tee: attestation-aware confidential VMs for Nova."""
