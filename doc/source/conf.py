"""Sphinx configuration for the openstack-tee documentation."""

project = "openstack-tee"
copyright = "openstack-tee developers"
extensions = [
    "oslo_config.sphinxext",
    "sphinx.ext.autodoc",
]
html_theme = "alabaster"
master_doc = "index"
exclude_patterns = []
