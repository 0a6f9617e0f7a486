"""What the docs copy from the code agrees with the code.

Literal blocks (``::``) do not run as doctests, so a copy of a command's
help there could drift from the parser; these tests compare them.
"""
import importlib.metadata
import importlib.util
import os
import textwrap
import unittest
import unittest.mock

import manuel.doctest
import manuel.testing

import zc.asynchronous.worker

from . import test_docs
from .test_docs import DOCS


def chapter(name):
    with open(os.path.join(DOCS, name), encoding='utf-8') as f:
        return f.read()


def indented_block(text, first_line):
    """The lines of the indented literal block that starts with
    ``first_line``, up to the first line indented less."""
    start = text.index(first_line)
    indent = len(first_line) - len(first_line.lstrip())
    lines = []
    for line in text[start:].splitlines():
        if line.strip() and len(line) - len(line.lstrip()) < indent:
            break
        lines.append(line)
    return '\n'.join(lines).rstrip()


def section(text, title):
    """The text of the section titled ``title`` (underlined with ``-``),
    up to the next section title."""
    start = text.index('\n%s\n%s\n' % (title, '-' * len(title)))
    rest = text[start + 1:].splitlines()[2:]
    for number, line in enumerate(rest[1:], 1):
        if line and set(line) <= set('-=') and rest[number - 1].strip():
            return '\n'.join(rest[:number - 1])
    return '\n'.join(rest)


def usage(parser, columns=80):
    """The usage text of ``parser`` as a terminal of ``columns`` shows it.
    """
    with unittest.mock.patch.dict(os.environ, {'COLUMNS': str(columns)}):
        return parser.format_usage()


class WorkerHelpTests(unittest.TestCase):
    """docs/deployment.rst: the worker's usage and its options."""

    def setUp(self):
        self.text = chapter('deployment.rst')
        self.parser = zc.asynchronous.worker.build_parser()

    def test_the_usage_copy_is_the_parsers(self):
        copy = indented_block(self.text, '    usage: zc-async worker')
        expected = textwrap.indent(usage(self.parser).rstrip(), '    ')
        self.assertEqual(
            copy, expected, 'docs/deployment.rst shows an old usage of the '
            'worker; replace it by the output of "COLUMNS=80 zc-async '
            'worker --help" (its first lines):\n' + expected)

    def test_every_option_is_described(self):
        options = section(self.text, 'Options')
        for action in self.parser._actions:
            for option in action.option_strings:
                if option.startswith('--') and option != '--help':
                    self.assertTrue(
                        '\n``%s' % (option,) in options,
                        'the Options section of docs/deployment.rst does '
                        'not describe %s' % (option,))

    def test_the_database_argument_is_described(self):
        self.assertIn('``database`` is ', section(self.text, 'The database'))


class BootstrapTests(unittest.TestCase):
    """README.rst and bootstrap.py say which extras bootstrap installs by
    pointing at the one list of them, bootstrap.EXTRAS."""

    def setUp(self):
        root = os.path.dirname(DOCS)
        path = os.path.join(root, 'bootstrap.py')
        if not os.path.exists(path):
            self.skipTest('not a checkout')
        spec = importlib.util.spec_from_file_location('bootstrap', path)
        self.bootstrap = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(self.bootstrap)
        with open(os.path.join(root, 'README.rst'), encoding='utf-8') as f:
            self.readme = f.read()

    def test_bootstrap_installs_its_extras_which_setup_defines(self):
        extras = self.bootstrap.EXTRAS
        self.assertIn('test', extras)
        defined = importlib.metadata.metadata('zc.async').get_all(
            'Provides-Extra')
        self.assertLessEqual(set(extras), set(defined))
        self.assertTrue(self.bootstrap.package_requirement().endswith(
            '[%s]' % ','.join(extras)))

    def test_the_texts_refer_to_the_list(self):
        for text in (self.readme, self.bootstrap.__doc__):
            self.assertIn('EXTRAS', text)
            self.assertNotIn('``test`` extra', text)


def test_suite():
    """These tests, and docs/zope3.rst run without its invisible blocks:
    its visible examples work when pasted in order."""
    suite = unittest.defaultTestLoader.loadTestsFromName(__name__)
    path = os.path.join(DOCS, 'zope3.rst')
    if os.path.exists(path):  # not when the package is installed
        suite.addTest(manuel.testing.TestSuite(
            manuel.doctest.Manuel(optionflags=test_docs.OPTIONFLAGS), path,
            setUp=test_docs.setUp, tearDown=test_docs.tearDown))
    return suite
