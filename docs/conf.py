"""Sphinx configuration for the zc.async documentation.

Build with ``sphinx-build -W -b html docs docs/_build/html`` (Sphinx comes
with the ``docs`` extra; ``.ci/run`` builds them so, warnings as errors).
Every chapter's examples also run as doctests in the test suite
(``src/zc/async/tests/test_docs.py``).
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..', 'src'))

project = 'zc.async'
author = 'zc.async contributors'
copyright = 'Zope Foundation and contributors'
release = '2.0.0.dev0'
version = '2.0'

extensions = [
    'sphinx.ext.autodoc',
    'sphinx.ext.doctest',
]

master_doc = 'index'
exclude_patterns = ['_build']
html_theme = 'alabaster'
