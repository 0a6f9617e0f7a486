"""Run every chapter in ``docs/*.rst`` as a doctest.

Each chapter gets a fresh (cleaned) global component registry, its own
temporary directory as the working directory (available as ``tmpdir``), and
its own instance UUID file there.  When it ends, dispatchers it left
registered are torn down (failing the chapter if one does not stop) and the
test clock is unfrozen.

Chapters may use ``>>>`` examples and ``.. code-block:: python`` blocks; a
plain literal block (``::``) does not run.
"""
import doctest
import glob
import os
import shutil
import tempfile
import unittest

import manuel.codeblock
import manuel.doctest
import manuel.testing
import zope.component.testing

import zc.asynchronous._registry
import zc.asynchronous.dispatcher
import zc.asynchronous.instanceuuid
import zc.asynchronous.testing

HERE = os.path.dirname(os.path.abspath(__file__))
DOCS = os.path.normpath(os.path.join(HERE, '..', '..', '..', '..', 'docs'))

OPTIONFLAGS = (doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE |
               doctest.IGNORE_EXCEPTION_DETAIL)


def chapters():
    """The ``docs/*.rst`` files (none when the package is installed)."""
    return sorted(glob.glob(os.path.join(DOCS, '*.rst')))


def setUp(test):
    zope.component.testing.setUp(test)
    tmpdir = tempfile.mkdtemp(prefix='zc.async-docs-')
    saved = {
        'cwd': os.getcwd(),
        'env': os.environ.get(zc.asynchronous.instanceuuid.key),
        'uuid': zc.asynchronous.instanceuuid.__dict__.pop('UUID', None),
    }
    os.chdir(tmpdir)
    os.environ[zc.asynchronous.instanceuuid.key] = os.path.join(
        tmpdir, 'uuid.txt')
    test.globs.update(tmpdir=tmpdir, _docs_saved=saved)


def tearDown(test):
    saved = test.globs['_docs_saved']
    try:
        _stop_dispatchers()
    finally:
        zc.asynchronous.testing.tearDownDatetime()
        os.chdir(saved['cwd'])
        _restore_env(zc.asynchronous.instanceuuid.key, saved['env'])
        module = zc.asynchronous.instanceuuid
        module.__dict__.pop('UUID', None)
        if saved['uuid'] is not None:
            module.UUID = saved['uuid']
        shutil.rmtree(test.globs['tmpdir'], ignore_errors=True)
        zope.component.testing.tearDown(test)


def _stop_dispatchers():
    """Stop the dispatchers a chapter left registered, and forget them."""
    registered = list(zc.asynchronous._registry.dispatchers.values())
    try:
        for dispatcher in registered:
            zc.asynchronous.testing.tear_down_dispatcher(dispatcher)
    finally:
        zc.asynchronous.dispatcher.clear()


def _restore_env(name, value):
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value


def test_suite():
    paths = chapters()
    if not paths:
        return unittest.TestSuite()
    m = manuel.doctest.Manuel(optionflags=OPTIONFLAGS)
    m += manuel.codeblock.Manuel()
    return manuel.testing.TestSuite(m, *paths, setUp=setUp, tearDown=tearDown)
