from importlib.metadata import version as _version

# Project --------------------------------------------------------------

project = "Flask-Pusher"
copyright = "2026, the Flask-Pusher contributors"
author = "the Flask-Pusher contributors"
release = _version("Flask-Pusher")
version = ".".join(release.split(".")[:2])

# General --------------------------------------------------------------

master_doc = "index"
default_role = "code"
extensions = [
    "sphinx.ext.autodoc",
    "pallets_sphinx_themes",
]
# No intersphinx: the docs build offline. References to Python, Flask and
# Werkzeug objects are plain text, and unresolved references are not warnings.
nitpicky = False
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_description_target = "documented_params"
autodoc_preserve_defaults = True
exclude_patterns = ["_build"]

# HTML -----------------------------------------------------------------

html_theme = "flask"
html_theme_options = {"index_sidebar_logo": False}
html_context = {"project_links": []}
html_sidebars = {
    "index": ["project.html", "localtoc.html", "searchbox.html"],
    "**": ["localtoc.html", "relations.html", "searchbox.html"],
}
singlehtml_sidebars = {"index": ["project.html", "localtoc.html"]}
html_title = f"Flask-Pusher Documentation ({version})"
html_show_sourcelink = False
# The version banner script asks PyPI for the latest release; not for a dev build.
version_banner = False
