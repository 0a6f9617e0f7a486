"""The zc.asynchronous spelling gives the zc.async module objects."""
import importlib
import unittest


class AliasTests(unittest.TestCase):

    def test_same_module_objects(self):
        import zc.asynchronous.interfaces
        self.assertIs(zc.asynchronous.interfaces,
                      importlib.import_module('zc.async.interfaces'))
        import zc.asynchronous
        self.assertIs(zc.asynchronous, importlib.import_module('zc.async'))

    def test_from_import(self):
        from zc.asynchronous import interfaces
        from zc.asynchronous.interfaces import KEY
        self.assertIs(interfaces, importlib.import_module('zc.async.interfaces'))
        self.assertEqual(KEY, 'zc.async')

    def test_run_as_main_module(self):
        import subprocess
        import sys
        out = subprocess.run(
            [sys.executable, '-m', 'zc.asynchronous.cli', '--help'],
            capture_output=True, text=True, check=True)
        self.assertIn('zc-async', out.stdout)
