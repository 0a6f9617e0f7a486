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
            [sys.executable, '-m', 'zc.asynchronous.ops.cli', '--help'],
            capture_output=True, text=True, check=True)
        self.assertIn('zc-async', out.stdout)

    def test_subpackage(self):
        # In a fresh interpreter, so that neither spelling of the
        # operations subpackage was imported before: each gives the
        # module objects of the other.
        import subprocess
        import sys
        code = '\n'.join([
            'import sys',
            'import zc.asynchronous.ops.web',
            'from zc.asynchronous.ops import sandbox',
            'import zc.asynchronous.ops.metrics as metrics',
            'real = sys.modules["zc.async.ops.web"]',
            'assert zc.asynchronous.ops.web is real, "web"',
            'assert sandbox is sys.modules["zc.async.ops.sandbox"], "sandbox"',
            'assert metrics is sys.modules["zc.async.ops.metrics"], "metrics"',
            'print(real.__name__, real.start_dashboard.__module__)',
        ])
        out = subprocess.run([sys.executable, '-c', code],
                             capture_output=True, text=True)
        self.assertEqual(out.stderr, '')
        self.assertEqual(out.stdout.split(),
                         ['zc.async.ops.web', 'zc.async.ops.web'])

    def test_run_a_subpackage_module_as_main(self):
        import subprocess
        import sys
        out = subprocess.run(
            [sys.executable, '-m', 'zc.asynchronous.ops.cli', 'worker',
             '--help'], capture_output=True, text=True, check=True)
        self.assertIn('--dashboard-port', out.stdout)
