"""The database argument of the zc-async commands (zc.async.ops.dburi): plain
FileStorage paths, no silently created databases, ZEO URIs that name a
server."""
import os
import shutil
import tempfile
import unittest

import transaction
import ZODB

import zc.asynchronous.ops.dburi as dburi
import zc.asynchronous.worker as worker
from zc.asynchronous.tests import processes
from zc.asynchronous.tests.test_clidb import SceneLayer
from zc.asynchronous.tests.test_clidb import zc_async
from zc.asynchronous.tests.test_worker import run_command


class DirectoryTestCase(unittest.TestCase):

    def setUp(self):
        self.directory = tempfile.mkdtemp(prefix='zc.async-dburi-')
        self.addCleanup(shutil.rmtree, self.directory)
        self.path = os.path.join(self.directory, 'Data.fs')

    def make_database(self, path=None):
        db = ZODB.DB(path or self.path)
        with db.transaction() as conn:
            conn.root()['kept'] = 42
        db.close()


class FileStorageTests(DirectoryTestCase):

    def test_a_filestorage_path_is_a_file_uri(self):
        self.make_database()
        self.assertEqual(dburi.checked(self.path), 'file://' + self.path)
        self.addCleanup(os.chdir, os.getcwd())
        os.chdir(self.directory)
        self.assertEqual(dburi.checked('Data.fs'), 'file://' + self.path)

    def test_a_filestorage_of_python_2_is_recognised_too(self):
        # A zc.async 1.5 database, before its conversion.
        with open(self.path, 'wb') as f:
            f.write(b'FS21')
        self.assertEqual(dburi.checked(self.path), 'file://' + self.path)

    def test_other_paths_are_zconfig_files(self):
        conf = os.path.join(self.directory, 'db.conf')
        with open(conf, 'w') as f:
            f.write('<zodb>\n  <mappingstorage/>\n</zodb>\n')
        self.assertEqual(dburi.checked(conf), conf)
        missing = os.path.join(self.directory, 'nosuch.conf')
        self.assertEqual(dburi.checked(missing), missing)  # reported later

    def test_a_missing_file_is_refused(self):
        for text in (self.path, 'file://' + self.path,
                     'file://%s?read_only=1' % self.path,
                     'file://%s?create=false' % self.path):
            with self.subTest(text):
                with self.assertRaises(ValueError) as caught:
                    dburi.checked(text)
                self.assertIn('no FileStorage file %r' % (self.path,),
                              str(caught.exception))
                self.assertIn('--install', str(caught.exception))
                self.assertIn('create=true', str(caught.exception))
        self.assertFalse(os.path.exists(self.path))

    def test_it_is_created_on_request(self):
        self.assertEqual(dburi.checked(self.path, create=True),
                         'file://' + self.path)
        self.assertEqual(
            dburi.checked('file://%s?create=true&quota=1MB' % self.path),
            'file://%s?quota=1MB' % self.path)
        db = worker.open_database('file://%s?create=yes' % self.path)
        db.close()
        self.assertTrue(os.path.exists(self.path))

    def test_create_never_empties_an_existing_database(self):
        # zodburi passes create on to FileStorage, which starts afresh.
        self.make_database()
        db = worker.open_database('file://%s?create=true' % self.path)
        try:
            with db.transaction() as conn:
                self.assertEqual(conn.root()['kept'], 42)
        finally:
            db.close()

    def test_a_bad_create_value(self):
        self.make_database()
        with self.assertRaises(ValueError) as caught:
            dburi.checked('file://%s?create=maybe' % self.path)
        self.assertIn('create=maybe', str(caught.exception))


class ZEOTests(unittest.TestCase):

    def assertRefused(self, uri, expected):
        with self.assertRaises(ValueError) as caught:
            dburi.checked(uri)
        self.assertIn(expected, str(caught.exception))

    def test_a_host_without_a_port(self):
        self.assertRefused('zeo://127.0.0.1',
                           "the ZEO URI 'zeo://127.0.0.1' names no port")
        self.assertRefused('zeo://127.0.0.1?wait_timeout=1', 'names no port')

    def test_no_server_at_all(self):
        self.assertRefused('zeo://', "the ZEO URI 'zeo://' names no server")

    def test_a_bad_port(self):
        self.assertRefused('zeo://127.0.0.1:x', 'bad port')

    def test_good_uris_are_unchanged(self):
        for uri in ('zeo://127.0.0.1:8100', 'zeo://[::1]:8100?storage=1',
                    'zeo:///var/run/zeo.sock', 'postgres://u@h/db',
                    'memory://'):
            self.assertEqual(dburi.checked(uri), uri)


class WorkerCommandTests(DirectoryTestCase):
    """zc-async worker refuses to create a database unless --install."""

    def setUp(self):
        super().setUp()
        self.uuid_file = os.path.join(self.directory, 'uuid.txt')

    def fails(self, *args):
        status, stderr = run_command(*args, '--uuid-file', self.uuid_file)
        self.assertEqual(status, worker.EXIT_ERROR, stderr)
        self.assertNotIn('Traceback', stderr)
        return stderr.strip().splitlines()[-1]

    def test_a_mistyped_path_is_refused(self):
        for database in (self.path, 'file://' + self.path):
            last = self.fails(database)
            self.assertTrue(last.startswith(
                "zc-async worker: error: no FileStorage file '%s'"
                % (self.path,)), last)
        self.assertFalse(os.path.exists(self.path))

    def test_zeo_uris_that_name_no_server(self):
        self.assertIn("the ZEO URI 'zeo://127.0.0.1' names no port",
                      self.fails('zeo://127.0.0.1'))
        self.assertIn("the ZEO URI 'zeo://' names no server",
                      self.fails('zeo://'))

    def test_install_creates_the_database_of_a_plain_path(self):
        w = processes.WorkerProcess(
            self.path, self.directory, 'w', '--install',
            '--poll-interval', '0.2').start()
        self.addCleanup(w.kill)
        processes.wait_for(lambda: "queue '' added" in w.log,
                           message='the queue installed, in %s' % w.log_path)
        self.assertEqual(w.stop(), 0, w.log)
        db = ZODB.DB(self.path)
        try:
            with db.transaction() as conn:
                self.assertIn('zc.async', conn.root())
        finally:
            db.close()


class StatusCommandTests(unittest.TestCase):
    """The read-only commands take a plain FileStorage path."""

    layer = SceneLayer

    def test_status_of_a_path(self):
        path = os.path.join(SceneLayer.directory, 'Data.fs')
        status, out, err = zc_async('status', path)
        self.assertEqual((status, err), (0, ''), out)
        self.assertEqual(out.splitlines()[0], "queue '': 1 pending")

    def test_a_missing_path(self):
        path = os.path.join(SceneLayer.directory, 'Dtaa.fs')
        status, out, err = zc_async('jobs', path)
        self.assertEqual(status, 2)
        self.assertEqual(err.strip(), (
            "zc-async jobs: error: no FileStorage file %r (database %r); a "
            "new, empty database is created only on request: zc-async "
            "worker --install, or create=true in the URI"
            % (path, path)))
        self.assertFalse(os.path.exists(path))
