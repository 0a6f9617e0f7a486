"""The package's layout: no import cycles, no module too long to read.

The modules of zc.async import each other in layers: a module never
imports, even inside a function, a module that imports it back, directly
or through others.  A cycle means two modules share a role, or one of
them holds something that belongs lower down: split or move it (as
``_registry`` holds the process's dispatchers below the modules that
look them up).  The imports are read from the source, so an
import inside a function, which runs late and so hides a cycle from
Python, counts like one at the top of a module.
"""
import ast
import collections
import glob
import os
import re
import shutil
import tempfile
import textwrap
import unittest

import zc.asynchronous

#: The most lines a module of the package (tests aside) may have.  A
#: module is meant to be read in one sitting and to have one role; the
#: modules were split to about 600 lines or fewer (issue 16), and this
#: leaves a little room before a module that grows must be split by role.
MAX_MODULE_LINES = 650

PACKAGE_DIR = os.path.dirname(zc.asynchronous.__file__)
CHECKOUT_DIR = os.path.dirname(os.path.dirname(os.path.dirname(PACKAGE_DIR)))

# Python source spells the package zc.asynchronous; pickles and ZCML say
# zc.async.  Both name the same modules.
_PACKAGE_NAMES = ('zc.asynchronous', 'zc.async')


def package_modules(directory, skip=('tests',)):
    """``{dotted name relative to the package: path}`` of the modules in
    ``directory`` and its subpackages, except the folders in ``skip``.
    The package itself is ``''``; a subpackage is named by its folder."""
    modules = {}
    for folder, subfolders, files in os.walk(directory):
        subfolders[:] = sorted(name for name in subfolders
                               if name not in skip and name != '__pycache__')
        prefix = os.path.relpath(folder, directory).replace(os.sep, '.')
        prefix = '' if prefix == '.' else prefix
        for name in files:
            if not name.endswith('.py'):
                continue
            module = name[:-3]
            if module == '__init__':
                dotted = prefix
            else:
                dotted = prefix + '.' + module if prefix else module
            modules[dotted] = os.path.join(folder, name)
    return modules


def imported_modules(dotted, path, modules):
    """The package modules that the module ``dotted`` at ``path`` imports,
    anywhere in its source."""
    with open(path, encoding='utf-8') as source:
        tree = ast.parse(source.read(), path)
    is_package = os.path.basename(path) == '__init__.py'
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                found.add(_within(alias.name, modules))
        elif isinstance(node, ast.ImportFrom):
            base = _from_base(dotted, is_package, node)
            if base is None:
                continue  # another distribution
            for alias in node.names:
                submodule = base + '.' + alias.name if base else alias.name
                found.add(submodule if submodule in modules else base)
    found.discard(None)
    found.discard(dotted)
    return found


def _within(absolute, modules):
    """The package module named by the absolute dotted name ``absolute``
    (the deepest one it names), or None."""
    for package in _PACKAGE_NAMES:
        if absolute == package:
            return ''
        if absolute.startswith(package + '.'):
            parts = absolute[len(package) + 1:].split('.')
            while parts and '.'.join(parts) not in modules:
                parts.pop()
            return '.'.join(parts)
    return None


def _from_base(dotted, is_package, node):
    """The package module that ``from ... import`` of ``node`` reads from
    (relative to the package's root), or None if outside the package."""
    if not node.level:
        for package in _PACKAGE_NAMES:
            if node.module == package:
                return ''
            if node.module.startswith(package + '.'):
                return node.module[len(package) + 1:]
        return None
    parts = dotted.split('.') if dotted else []
    if not is_package:
        parts = parts[:-1]  # a module's level 1 is its own package
    parts = parts[:len(parts) - (node.level - 1)]
    if node.module:
        parts.append(node.module)
    return '.'.join(parts)


def import_graph(directory):
    """``{module: set of the package modules it imports}``."""
    modules = package_modules(directory)
    return {dotted: imported_modules(dotted, path, modules)
            for dotted, path in modules.items()}


def find_cycle(graph):
    """A list of modules, each importing the next and the last the first,
    or None when the graph has no cycle."""
    done = set()  # modules on no cycle
    for start in sorted(graph):
        if start in done:
            continue
        path = [start]  # each module imports the next
        pending = [iter(sorted(graph[start]))]  # what each has left to see
        while pending:
            following = next(pending[-1], None)
            if following is None:
                pending.pop()
                done.add(path.pop())
            elif following in path:
                return path[path.index(following):]
            elif following not in done:
                path.append(following)
                pending.append(iter(sorted(graph[following])))
    return None


def _describe(cycle):
    return ' -> '.join(name or '(the package)' for name in cycle + cycle[:1])


class LayoutTests(unittest.TestCase):

    def test_no_import_cycle(self):
        cycle = find_cycle(import_graph(PACKAGE_DIR))
        if cycle is not None:
            self.fail('import cycle: ' + _describe(cycle))

    def test_no_module_too_long(self):
        too_long = []
        for path in sorted(package_modules(PACKAGE_DIR).values()):
            with open(path, encoding='utf-8') as source:
                count = sum(1 for line in source)
            if count > MAX_MODULE_LINES:
                name = os.path.relpath(path, PACKAGE_DIR)
                too_long.append('%s (%d)' % (name, count))
        if too_long:
            self.fail('modules over %d lines (split them by role): %s' % (
                MAX_MODULE_LINES, ', '.join(too_long)))


class MapTests(unittest.TestCase):
    """The README's "Map of the code" matches the tree."""

    def setUp(self):
        path = os.path.join(CHECKOUT_DIR, 'README.rst')
        if not os.path.exists(path):
            self.skipTest('not a checkout')
        with open(path, encoding='utf-8') as readme:
            text = readme.read()
        start = text.index('\nMap of the code\n===')
        following = re.search(r'\n\S[^\n]*\n=+\n', text[start + 1:])
        self.map = text[start:start + 1 + following.start()
                        if following else None]

    def test_every_module_is_on_the_map(self):
        # A module by its path (``ops/web.py``), a subpackage by its
        # folder (``ops/``).
        named = re.findall(r'``([\w/]+)(?:\.py|/)``', self.map)
        modules = [name.replace('.', '/') for name in
                   package_modules(PACKAGE_DIR) if name]
        self.assertEqual(sorted(set(modules) - set(named)), [])
        self.assertEqual(sorted(name for name, count in
                                collections.Counter(named).items()
                                if count > 1), [], 'named more than once')

    def test_what_the_map_names_exists(self):
        # Paths: with a slash, or a file name with a known extension.
        paths = re.findall(r'``([\w.*]*/[\w.*/]*|[\w*]+\.(?:py|zcml|\*))``',
                           self.map)
        self.assertIn('dispatcher.py', paths)
        missing = [path for path in paths
                   if not glob.glob(os.path.join(PACKAGE_DIR, path))
                   and not glob.glob(os.path.join(CHECKOUT_DIR, path))]
        self.assertEqual(missing, [])


class CycleFinderTests(unittest.TestCase):
    """The finder sees the cycles the layout test is for, in real files."""

    def package(self, files):
        directory = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, directory)
        for name, text in files.items():
            path = os.path.join(directory, *name.split('/'))
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, 'w', encoding='utf-8') as out:
                out.write(textwrap.dedent(text))
        return directory

    def test_an_import_inside_a_function_makes_a_cycle(self):
        directory = self.package({
            '__init__.py': '',
            'a.py': 'from . import b\n',
            'b.py': 'import zc.asynchronous.c\n',
            'c.py': '''
                def late():
                    from .a import something
                    return something
                ''',
        })
        self.assertEqual(find_cycle(import_graph(directory)), ['a', 'b', 'c'])

    def test_layers_without_cycle(self):
        directory = self.package({
            '__init__.py': 'from .top import run\n',
            'top.py': 'from . import low, mid\nfrom .mid import helper\n',
            'mid.py': 'from .low import x\nimport os\n',
            'low.py': 'import zc.queue\nfrom zope import interface\n',
            'ops/__init__.py': '',
            'ops/web.py': 'from .. import top\nfrom ..mid import helper\n',
        })
        graph = import_graph(directory)
        self.assertEqual(graph, {
            '': {'top'}, 'top': {'low', 'mid'}, 'mid': {'low'}, 'low': set(),
            'ops': set(), 'ops.web': {'top', 'mid'}})
        self.assertIsNone(find_cycle(graph))

    def test_a_subpackage_importing_its_parent_back(self):
        directory = self.package({
            '__init__.py': '',
            'core.py': 'def f():\n    from .ops import web\n',
            'ops/__init__.py': '',
            'ops/web.py': 'from zc.asynchronous import core\n',
        })
        self.assertEqual(find_cycle(import_graph(directory)),
                         ['core', 'ops.web'])

