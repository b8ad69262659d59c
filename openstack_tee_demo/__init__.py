"""The demonstration and the software secure-processor model.

Nothing here runs in production. ``sp_model`` is the software model of the
AMD secure processor (test-generated ARK/ASK/VCEK and PDH keys, the real
formulas of the SEV and SEV-SNP firmware specifications) that stands in for
hardware these machines do not have; ``nova_harness`` and ``sev_model``
put it behind Nova 34.0.0's own functional harness and libvirt fixture.
The tests and ``openstack-tee demo`` share them. Production code never
trusts the model's keys unless an operator configures it to.
"""
