"""Sphinx configuration: Markdown pages (MyST), the furo theme, API pages from docstrings.

The API reference documents the installed package (``make venv`` installs it in editable
mode), so nothing here touches ``sys.path``. Nothing is fetched from the network.
"""

from __future__ import annotations

from importlib.metadata import version as _version

project = "appregistry"
author = "The appregistry authors"
copyright = author
release = _version("appregistry")
version = ".".join(release.split(".")[:2])

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
]

source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build"]

# Docstrings write `name` for a Python object, as in attrs and httpx: make it a cross-reference.
default_role = "py:obj"
nitpicky = False

myst_enable_extensions = ["colon_fence", "deflist"]
# Lets pages link to sections, e.g. [tokens](concepts.md#tokens).
myst_heading_anchors = 3

autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_default_options = {"show-inheritance": True}
# Long signatures (register_app has ten keyword arguments) get one parameter per line.
maximum_signature_line_length = 100

napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
napoleon_attr_annotations = True

html_theme = "furo"
html_title = f"appregistry {release}"
html_static_path: list[str] = []
