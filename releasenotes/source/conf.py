"""Sphinx configuration for the openstack-tee release notes."""

project = "openstack-tee Release Notes"
copyright = "openstack-tee developers"
extensions = ["reno.sphinxext"]
html_theme = "alabaster"
master_doc = "index"
exclude_patterns = []
