"""Sphinx configuration for the openstack-tee documentation."""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "_ext"))

project = "openstack-tee"
copyright = "openstack-tee developers"
extensions = [
    "openstackdocstheme",
    "oslo_config.sphinxext",
    "cliff.sphinxext",
    "reno.sphinxext",
    "sphinx.ext.autodoc",
    "tee_extra_specs",
]
html_theme = "openstackdocs"
openstackdocs_repo_name = "openstack-tee/openstack-tee"
openstackdocs_use_storyboard = False
openstackdocs_auto_name = False
openstackdocs_bug_project = "openstack-tee"
openstackdocs_bug_tag = "doc"
master_doc = "index"
exclude_patterns = []
autoprogram_cliff_application = "openstack"
