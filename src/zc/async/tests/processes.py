"""Real processes for tests: database servers, worker processes, layers.

:class:`ZEOServer` runs the venv's ``runzeo`` on a free loopback port with a
FileStorage in a temporary directory; :class:`PostgreSQLServer` runs a
private PostgreSQL cluster the same way, for RelStorage, where PostgreSQL's
server programs are installed.  :class:`WorkerProcess` runs
``python -m zc.async.worker`` against either, with its own UUID file and
the test job module imported.  :func:`wait_for` and :func:`wait_for_db` wait
for a condition with a deadline (never for a fixed time).  Every process
started here is recorded, and only those are ever stopped or killed: by
the layer after each test, and at interpreter exit as a last resort.
"""
import atexit
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid

import transaction
import ZEO

import zc.asynchronous

#: ``src`` directory of this checkout, put on the subprocesses' PYTHONPATH.
SRC_DIR = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(zc.asynchronous.__file__))))
#: Module with the test jobs; workers import it so job pickles resolve.
JOBS_MODULE = 'zc.async.tests.jobs_for_processes'
#: Deadline (seconds) for anything a test waits for.
TIMEOUT = 120

_started = []  # every subprocess.Popen started here, in start order


def subprocess_env(**extra):
    """The environment for child processes: this checkout importable."""
    env = dict(os.environ)
    env['PYTHONPATH'] = os.pathsep.join(
        [SRC_DIR] + [p for p in [env.get('PYTHONPATH')] if p])
    env['PYTHONUNBUFFERED'] = '1'
    env.update(extra)
    return env


def start_process(argv, log_path, cwd=None, **env):
    """Start ``argv`` (in directory ``cwd``) with stdout and stderr
    appended to ``log_path``."""
    with open(log_path, 'ab') as log:
        process = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, cwd=cwd,
            stdin=subprocess.DEVNULL, env=subprocess_env(**env))
    _started.append(process)
    return process


def end_process(process, sig=signal.SIGTERM, timeout=30):
    """Send ``sig`` to a process started here; SIGKILL it if it has not
    exited within ``timeout`` seconds.  Returns its exit code."""
    assert process in _started, 'not a process started by this module'
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


def kill_all_started():
    """SIGKILL whatever this module started that still runs."""
    for process in _started:
        if process.poll() is None:
            process.kill()
            process.wait()
    del _started[:]


atexit.register(kill_all_started)


def free_port():
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def poll(condition, timeout, interval):
    """Call ``condition`` every ``interval`` seconds until it returns a
    true value or ``timeout`` seconds passed; return its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


def wait_for(condition, timeout=TIMEOUT, message='condition', interval=0.05):
    """Call ``condition`` until it returns a true value and return that;
    fail the test after ``timeout`` seconds."""
    value = poll(condition, timeout, interval)
    if not value:
        raise AssertionError(
            'timed out after %s s waiting for %s' % (timeout, message))
    return value


def wait_for_db(db, condition, timeout=TIMEOUT, message='database state'):
    """Wait until ``condition(root)`` is true in a fresh transaction of
    ``db``; return its value (it must not keep persistent objects)."""
    tm = transaction.TransactionManager()
    conn = db.open(tm)
    try:
        def check():
            tm.begin()  # sees everything committed so far
            try:
                return condition(conn.root())
            finally:
                tm.abort()
        return wait_for(check, timeout, message)
    finally:
        conn.close()


def read(path):
    """A text file's content, or '' when it does not exist (yet)."""
    try:
        with open(path) as f:
            return f.read()
    except FileNotFoundError:
        return ''


class ZEOServer:
    """A ``runzeo`` process serving ``Data.fs`` in ``directory`` on
    127.0.0.1; the port stays the same across restarts."""

    def __init__(self, directory):
        self.directory = directory
        self.path = os.path.join(directory, 'Data.fs')
        self.log_path = os.path.join(directory, 'zeo.log')
        self.port = None
        self.process = None

    @property
    def address(self):
        return ('127.0.0.1', self.port)

    @property
    def uri(self):
        return 'zeo://127.0.0.1:%d' % self.port

    def start(self, timeout=60):
        """Start the server and wait until it accepts connections."""
        assert self.process is None, 'already started'
        if self.port is None:
            self.port = free_port()
        self.process = start_process(
            [_runzeo(), '-a', '127.0.0.1:%d' % self.port, '-f', self.path],
            self.log_path)
        wait_for(self._accepting, timeout,
                 'the ZEO server on port %d (log: %s)' % (
                     self.port, self.log_path))

    def _accepting(self):
        if self.process.poll() is not None:
            raise AssertionError('runzeo exited with %s:\n%s' % (
                self.process.returncode, read(self.log_path)[-2000:]))
        with socket.socket() as s:
            return s.connect_ex(self.address) == 0

    def stop(self, sig=signal.SIGTERM):
        """Stop the server (SIGTERM: it closes its storage cleanly)."""
        if self.process is not None:
            end_process(self.process, sig)
            self.process = None

    def restart(self):
        self.stop()
        self.start()

    def wipe(self):
        """Restart the server on an empty storage."""
        self.stop()
        for name in os.listdir(self.directory):
            if name.startswith('Data.fs'):
                os.remove(os.path.join(self.directory, name))
        self.start()

    def open_db(self):
        """A client database on this server, for the test process."""
        return ZEO.DB(self.address, wait_timeout=60)


def _runzeo():
    """The ``runzeo`` script next to this Python (the venv's bin)."""
    path = os.path.join(os.path.dirname(sys.executable), 'runzeo')
    if not os.path.exists(path):
        raise RuntimeError('runzeo not found next to %s' % sys.executable)
    return path


class WorkerProcess:
    """A ``zc-async worker`` subprocess with its own UUID file and log.

    The UUID is chosen here, so tests know it before the process starts;
    ``start()`` after ``kill()`` or ``stop()`` restarts the same instance.
    """

    def __init__(self, uri, directory, name, *options, env=None):
        self.uri = uri
        self.name = name
        self.options = options
        self.env = env or {}  # more environment variables
        self.uuid = uuid.uuid1()
        self.uuid_path = os.path.join(directory, name + '-uuid.txt')
        self.log_path = os.path.join(directory, name + '.log')
        self.process = None
        with open(self.uuid_path, 'w') as f:
            f.write('%s\n' % self.uuid)

    def argv(self):
        return [sys.executable, '-m', 'zc.async.worker', self.uri,
                '--uuid-file', self.uuid_path, '--import', JOBS_MODULE,
                '--log-file', self.log_path, '--log-level', 'INFO',
                *self.options]

    def start(self):
        assert not self.running, 'already running'
        self.process = start_process(self.argv(), self.log_path, **self.env)
        return self

    @property
    def running(self):
        return self.process is not None and self.process.poll() is None

    @property
    def pid(self):
        return self.process.pid

    def stop(self, sig=signal.SIGTERM, timeout=60):
        """Send ``sig`` (SIGTERM or SIGINT: a clean stop); return the exit
        code (SIGKILL after ``timeout``)."""
        return end_process(self.process, sig, timeout)

    def kill(self):
        """kill -9: no clean-up of any kind happens in the worker."""
        return end_process(self.process, signal.SIGKILL)

    def wait(self, timeout=TIMEOUT):
        """Wait for the process to exit by itself; return its exit code."""
        return self.process.wait(timeout)

    @property
    def log(self):
        return read(self.log_path)


class PostgreSQLServer:
    """A private PostgreSQL cluster in ``directory`` on 127.0.0.1.

    ``initdb`` and ``postgres`` come from PATH or Debian's
    ``/usr/lib/postgresql/*/bin``.  PostgreSQL refuses to run as root, so
    under root both run as the ``postgres`` user.  Authentication is
    ``trust``, for loopback clients only.
    """

    user = 'postgres'

    def __init__(self, directory, durable=False):
        self.directory = directory
        # Tests need no durability (fsync off: faster); the benchmarks
        # measure a real server's commits (fsync on).
        self.durable = durable
        self.data = os.path.join(directory, 'pgdata')
        self.log_path = os.path.join(directory, 'postgres.log')
        self.port = None
        self.process = None

    @staticmethod
    def binary(name):
        """Path of a PostgreSQL server program, or None."""
        found = shutil.which(name)
        if found:
            return found
        candidates = sorted(glob.glob('/usr/lib/postgresql/*/bin/' + name))
        return candidates[-1] if candidates else None

    @classmethod
    def available(cls):
        """Why a private cluster cannot run here, or None if it can."""
        try:
            import psycopg2  # noqa: F401
            import relstorage  # noqa: F401
        except ImportError as e:
            return 'RelStorage and psycopg2 are needed (%s)' % e
        if not (cls.binary('initdb') and cls.binary('postgres')):
            return 'no PostgreSQL server programs (initdb, postgres)'
        if os.geteuid() == 0:
            try:
                pwd.getpwnam(cls.user)
            except KeyError:
                return 'running as root and there is no postgres user'
        return None

    def _as_owner(self):
        """Popen keyword arguments that run a program as the data owner."""
        if os.geteuid() != 0:
            return {}
        entry = pwd.getpwnam(self.user)
        return {'user': entry.pw_uid, 'group': entry.pw_gid,
                'extra_groups': []}

    def start(self, timeout=60):
        """initdb (first time), start the server, wait until it answers."""
        owner = self._as_owner()
        if owner:
            os.chown(self.directory, owner['user'], owner['group'])
        if not os.path.exists(self.data):
            subprocess.run(
                [self.binary('initdb'), '-D', self.data, '-A', 'trust',
                 '-U', self.user, '--no-sync'], check=True,
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                cwd=self.directory, **owner)
        if self.port is None:
            self.port = free_port()
        with open(self.log_path, 'ab') as log:
            self.process = subprocess.Popen(
                [self.binary('postgres'), '-D', self.data,
                 '-p', str(self.port), '-h', '127.0.0.1',
                 '-k', self.directory, *self._settings()],
                stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, cwd=self.directory, **owner)
        _started.append(self.process)
        wait_for(self._answering, timeout,
                 'PostgreSQL on port %d (log: %s)' % (
                     self.port, self.log_path))

    def _settings(self):
        switch = 'on' if self.durable else 'off'
        return ['-c', 'fsync=' + switch, '-c', 'synchronous_commit=' + switch]

    def _answering(self):
        import psycopg2
        if self.process.poll() is not None:
            raise AssertionError('postgres exited with %s:\n%s' % (
                self.process.returncode, read(self.log_path)[-2000:]))
        try:
            psycopg2.connect(**self.dsn('postgres')).close()
        except psycopg2.OperationalError:
            return False
        return True

    def dsn(self, dbname):
        return {'host': '127.0.0.1', 'port': self.port, 'user': self.user,
                'dbname': dbname}

    def uri(self, dbname):
        """A RelStorage URI of database ``dbname`` for zodburi."""
        return 'postgres://%s@127.0.0.1:%d/%s' % (
            self.user, self.port, dbname)

    def fresh_database(self, dbname):
        """Drop and create ``dbname``; RelStorage makes its schema."""
        import psycopg2
        conn = psycopg2.connect(**self.dsn('postgres'))
        try:
            conn.autocommit = True
            with conn.cursor() as cursor:
                cursor.execute('DROP DATABASE IF EXISTS %s' % dbname)
                cursor.execute('CREATE DATABASE %s' % dbname)
        finally:
            conn.close()

    def open_db(self, dbname):
        """A RelStorage database on ``dbname``, for the test process."""
        import zodburi
        import ZODB
        factory, dbkw = zodburi.resolve_uri(self.uri(dbname))
        return ZODB.DB(factory(), **dbkw)

    def stop(self):
        """Stop the server (SIGINT: PostgreSQL's fast shutdown)."""
        if self.process is not None:
            end_process(self.process, signal.SIGINT)
            self.process = None


class PostgreSQLLayer:
    """A private PostgreSQL server for the layer, when one can run here;
    each test gets an empty database (see :attr:`unavailable`)."""

    directory = None
    server = None
    unavailable = None  # why tests of this layer skip, or None
    dbname = 'zc_async_test'

    @classmethod
    def setUp(cls):
        cls.unavailable = PostgreSQLServer.available()
        if cls.unavailable:
            return
        cls.directory = tempfile.mkdtemp(prefix='zc.async-pg-')
        cls.server = PostgreSQLServer(cls.directory)
        cls.server.start()

    @classmethod
    def tearDown(cls):
        if cls.server is not None:
            cls.server.stop()
            shutil.rmtree(cls.directory, ignore_errors=True)
        cls.server = cls.directory = None

    @classmethod
    def testSetUp(cls):
        if cls.server is not None:
            cls.server.fresh_database(cls.dbname)

    @classmethod
    def testTearDown(cls):
        _kill_started_except(cls.server and cls.server.process)


class ZEOLayer:
    """A real ZEO server for the layer; each test starts on an empty
    storage, and the processes a test started are killed after it."""

    directory = None
    server = None

    @classmethod
    def setUp(cls):
        cls.directory = tempfile.mkdtemp(prefix='zc.async-zeo-')
        cls.server = ZEOServer(cls.directory)
        cls.server.start()

    @classmethod
    def tearDown(cls):
        cls.server.stop()
        kill_all_started()
        shutil.rmtree(cls.directory, ignore_errors=True)
        cls.server = cls.directory = None

    @classmethod
    def testSetUp(cls):
        cls.server.wipe()

    @classmethod
    def testTearDown(cls):
        _kill_started_except(cls.server.process)


def _kill_started_except(keep):
    """After a test: SIGKILL what it started, but not the layer's server."""
    for process in list(_started):
        if process is not keep and process.poll() is None:
            process.kill()
            process.wait()
    _started[:] = [p for p in _started if p.poll() is None]
