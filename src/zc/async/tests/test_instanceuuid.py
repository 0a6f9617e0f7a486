"""Tests of zc.async.instanceuuid: finding or creating the instance UUID."""
import os
import shutil
import subprocess
import sys
import tempfile
import unittest
import uuid

import zc.asynchronous.instanceuuid as instanceuuid

SRC = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))))


class TempDirMixin:

    def setUp(self):
        self.tmpdir = tempfile.mkdtemp(prefix='zc.async-uuid-')
        self.addCleanup(shutil.rmtree, self.tmpdir, True)
        cwd = os.getcwd()
        os.chdir(self.tmpdir)
        self.addCleanup(os.chdir, cwd)
        saved_env = os.environ.pop(instanceuuid.key, None)
        if saved_env is not None:
            self.addCleanup(os.environ.__setitem__, instanceuuid.key,
                            saved_env)
        else:
            self.addCleanup(os.environ.pop, instanceuuid.key, None)
        saved_uuid = instanceuuid.__dict__.pop('UUID', None)
        self.addCleanup(self._restore_uuid, saved_uuid)

    def _restore_uuid(self, saved):
        instanceuuid.__dict__.pop('UUID', None)
        if saved is not None:
            instanceuuid.UUID = saved

    def path(self, name):
        return os.path.join(self.tmpdir, name)


class GetUUIDTests(TempDirMixin, unittest.TestCase):

    def test_constants(self):
        self.assertEqual(instanceuuid.key, 'ZC_ASYNC_UUID')
        for text in ('ZC_ASYNC_UUID', 'zdaemon', 'supervisor', 'delete'):
            self.assertIn(text, instanceuuid.msg)

    def test_new_file_in_cwd_holds_uuid1_then_msg(self):
        value = instanceuuid.getUUID()
        self.assertIsInstance(value, uuid.UUID)
        self.assertEqual(value.version, 1)
        with open(self.path('uuid.txt')) as f:
            text = f.read()
        self.assertEqual(text, str(value) + instanceuuid.msg)
        self.assertEqual(text.splitlines()[0], str(value))

    def test_existing_file_is_read_not_rewritten(self):
        first = instanceuuid.getUUID()
        with open(self.path('uuid.txt')) as f:
            before = f.read()
        self.assertEqual(instanceuuid.getUUID(), first)
        with open(self.path('uuid.txt')) as f:
            self.assertEqual(f.read(), before)

    def test_first_line_alone_decides(self):
        known = uuid.uuid4()
        with open(self.path('uuid.txt'), 'w') as f:
            f.write('  %s  \nanything else\n' % known)
        self.assertEqual(instanceuuid.getUUID(), known)

    def test_environment_variable_names_the_file(self):
        os.environ[instanceuuid.key] = self.path('other.txt')
        value = instanceuuid.getUUID()
        self.assertFalse(os.path.exists(self.path('uuid.txt')))
        with open(self.path('other.txt')) as f:
            self.assertEqual(f.readline().strip(), str(value))

    def test_empty_environment_variable_means_cwd(self):
        os.environ[instanceuuid.key] = ''
        instanceuuid.getUUID()
        self.assertTrue(os.path.exists(self.path('uuid.txt')))

    def test_explicit_path_wins(self):
        os.environ[instanceuuid.key] = self.path('env.txt')
        value = instanceuuid.getUUID(self.path('explicit.txt'))
        self.assertFalse(os.path.exists(self.path('env.txt')))
        self.assertEqual(instanceuuid.getUUID(self.path('explicit.txt')),
                         value)

    def test_deleting_the_file_gives_a_new_identity(self):
        first = instanceuuid.getUUID()
        os.remove(self.path('uuid.txt'))
        self.assertNotEqual(instanceuuid.getUUID(), first)

    def test_corrupt_file_raises_value_error_naming_it(self):
        with open(self.path('uuid.txt'), 'w') as f:
            f.write('garbage\n')
        with self.assertRaises(ValueError) as raised:
            instanceuuid.getUUID()
        message = str(raised.exception)
        self.assertIn(self.path('uuid.txt'), message)
        self.assertIn("'garbage'", message)
        self.assertIn('ZC_ASYNC_UUID', message)
        with open(self.path('uuid.txt')) as f:
            self.assertEqual(f.read(), 'garbage\n')  # nothing is lost

    def test_empty_file_is_corrupt(self):
        open(self.path('uuid.txt'), 'w').close()
        with self.assertRaises(ValueError):
            instanceuuid.getUUID()

    def test_missing_directory_raises(self):
        with self.assertRaises(FileNotFoundError):
            instanceuuid.getUUID(self.path('no/such/dir/uuid.txt'))


class LazyUUIDTests(TempDirMixin, unittest.TestCase):

    def test_UUID_is_read_on_first_access_and_kept(self):
        self.assertFalse(os.path.exists(self.path('uuid.txt')))
        value = instanceuuid.UUID
        with open(self.path('uuid.txt')) as f:
            self.assertEqual(f.readline().strip(), str(value))
        os.remove(self.path('uuid.txt'))
        self.assertIs(instanceuuid.UUID, value)  # computed once per process
        self.assertFalse(os.path.exists(self.path('uuid.txt')))

    def test_from_import_works(self):
        from zc.asynchronous.instanceuuid import UUID
        self.assertEqual(UUID, instanceuuid.getUUID())

    def test_other_names_raise_attribute_error(self):
        with self.assertRaises(AttributeError):
            instanceuuid.NOPE

    def test_import_reads_and_writes_nothing(self):
        code = ('import zc.asynchronous.instanceuuid, os;'
                ' print(os.listdir("."))')
        env = dict(os.environ, PYTHONPATH=SRC)
        env.pop(instanceuuid.key, None)
        output = subprocess.run(
            [sys.executable, '-c', code], cwd=self.tmpdir, env=env,
            check=True, capture_output=True, text=True).stdout
        self.assertEqual(output.strip(), '[]')


def test_suite():
    return unittest.defaultTestLoader.loadTestsFromName(__name__)


class InstanceUUIDTests(unittest.TestCase):
    """The instance UUID provides IUUID and is otherwise a plain UUID."""

    def test_provides_iuuid_and_behaves_as_a_uuid(self):
        import pickle
        import uuid
        from zc.asynchronous import instanceuuid
        from zc.asynchronous.interfaces import IUUID
        with tempfile.TemporaryDirectory() as tmp:
            value = instanceuuid.getUUID(os.path.join(tmp, 'uuid.txt'))
            again = instanceuuid.getUUID(os.path.join(tmp, 'uuid.txt'))
        self.assertTrue(IUUID.providedBy(value))
        self.assertTrue(IUUID.providedBy(again))
        self.assertEqual(value, again)
        plain = uuid.UUID(str(value))
        self.assertEqual(value, plain)
        self.assertEqual(hash(value), hash(plain))
        self.assertEqual(repr(value), repr(plain))
        copy = pickle.loads(pickle.dumps(value))
        self.assertIs(type(copy), uuid.UUID)
        self.assertEqual(copy, value)
