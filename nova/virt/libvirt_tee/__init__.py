"""Shim: ``compute_driver = libvirt_tee.TEELibvirtDriver`` for Nova.

Nova imports compute drivers only from the ``nova.virt`` namespace. This
package is the only file openstack-tee installs under ``nova/``; it never
ships ``nova/__init__.py`` or ``nova/virt/__init__.py``.
"""

from nova_tee.virt.libvirt.driver import TEELibvirtDriver

__all__ = ["TEELibvirtDriver"]
