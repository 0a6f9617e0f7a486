"""Tests of the warm shutdown (zc.async.shutdown), the handback and death
logs, and the instant take-over of an ended process's record.

Live dispatchers run on real reactors in threads (see
:mod:`zc.async.tests.live`); processes that must end (interpreter exit,
signals, a Twisted program) are real subprocesses on a FileStorage that
the test reads afterwards.
"""
import datetime
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import unittest
import uuid

import transaction
import twisted.internet.defer
import zope.testing.loggingsupport
import ZODB

import zc.asynchronous.agent
import zc.asynchronous.dispatcher as dispatcher_module
import zc.asynchronous.instanceuuid as instanceuuid
import zc.asynchronous.interfaces as interfaces
import zc.asynchronous.job
import zc.asynchronous.queue
import zc.asynchronous.shutdown as shutdown
import zc.asynchronous.testing as testing
import zc.asynchronous.utils
from zc.asynchronous.tests import processes
from zc.asynchronous.tests.live import DispatcherTestCase
from zc.asynchronous.tests.live import wait_until
from zc.asynchronous.tests.test_dispatcher import VirtualTimeTestCase

events = {}  # name -> threading.Event


def event(name):
    return events.setdefault(name, threading.Event())


def waits(name):
    """Start, then wait (10 s at most) for the event ``name``."""
    event('started ' + name).set()
    event(name).wait(10)
    return name


def double(n):
    return 2 * n


class WarmStopTests(DispatcherTestCase):

    def setUp(self):
        super().setUp()
        events.clear()
        self.running = self.start(poll_interval=0.2)
        self.dispatcher = self.running.dispatcher
        testing.get_poll(self.dispatcher, 0)

    def tearDown(self):
        for e in events.values():
            e.set()
        super().tearDown()

    def stop_in_thread(self, timeout):
        """Stop the dispatcher and its reactor in a thread; return it."""
        stopper = threading.Thread(
            target=shutdown.stop_reactor_thread,
            args=(self.dispatcher, timeout))
        stopper.start()
        wait_until(lambda: self.dispatcher.stopping
                   or not self.dispatcher.activated)
        return stopper

    def test_running_jobs_finish_and_no_job_is_claimed_meanwhile(self):
        job = self.put(waits, 'job')
        self.assertTrue(event('started job').wait(10))
        stopper = self.stop_in_thread(10)
        later = self.put(double, 21)
        testing.get_poll(self.dispatcher)  # polls go on, and claim nothing
        event('job').set()
        stopper.join(10)
        self.assertFalse(self.dispatcher.activated)
        transaction.begin()
        self.assertEqual(job.status, interfaces.COMPLETED)
        self.assertEqual(job.result, 'job')
        self.assertEqual(later.status, interfaces.PENDING)
        self.assertFalse(self.queue.dispatchers[self.uuid].activated)
        self.assertIn("stopping dispatcher %s: claiming no more jobs, and "
                      "waiting up to 10 seconds for 1 running job(s): %r"
                      % (self.uuid, job), self.messages('INFO'))
        self.assertFalse(any('handed back' in message
                             for message in self.messages('INFO')))

    def test_jobs_still_running_at_the_timeout_are_handed_back(self):
        job = self.put(waits, 'job')
        self.assertTrue(event('started job').wait(10))
        self.stop_in_thread(0.2).join(10)
        self.assertFalse(self.dispatcher.activated)
        transaction.begin()
        self.assertEqual(job.status, interfaces.ACTIVE)
        wrapper, = list(self.queue)
        self.assertEqual(wrapper.callable, job.handleInterrupt)
        infos = self.messages('INFO')
        self.assertIn('stopping dispatcher %s: 0.2 seconds have passed; '
                      'handing back the jobs still running' % (self.uuid,),
                      infos)
        self.assertIn("dispatcher %s handed back %r in queue '': "
                      "interrupted: its handleInterrupt is queued"
                      % (self.uuid, job), infos)
        # The job's thread goes on; what it does is dropped quietly.
        event('job').set()
        wait_until(lambda: any('dropping this attempt of %r' % (job,)
                               in message for message in infos
                               + self.messages('INFO')))
        self.assertEqual(self.messages('ERROR'), [])

    def test_a_second_stop_with_a_shorter_timeout_wins(self):
        job = self.put(waits, 'job')
        self.assertTrue(event('started job').wait(10))
        stopper = self.stop_in_thread(30)
        self.dispatcher.stop(0)  # from this thread: waits
        self.assertFalse(self.dispatcher.activated)
        self.assertIn('stopping dispatcher %s at once' % (self.uuid,),
                      self.messages('INFO'))
        stopper.join(10)
        transaction.begin()
        self.assertEqual(job.status, interfaces.ACTIVE)

    def test_in_the_reactor_thread_stop_returns_a_deferred(self):
        stopped = self.running.call(self.dispatcher.stop)
        self.assertIsInstance(stopped, twisted.internet.defer.Deferred)
        wait_until(lambda: stopped.called)
        self.assertFalse(self.dispatcher.activated)
        self.assertIsNone(self.dispatcher.stop())  # stopped: nothing to do

    def test_the_module_function_stops_the_process_s_dispatcher(self):
        self.dispatcher.thread = self.running.dispatcher.thread
        dispatcher_module.stop(1)
        self.assertFalse(self.dispatcher.activated)
        self.assertFalse(self.dispatcher.thread.is_alive())


class TestReactorStopTests(VirtualTimeTestCase):
    """The test reactor's stop gives jobs real time, then virtual time."""

    def setUp(self):
        super().setUp()
        events.clear()
        self.dispatcher.activate()
        self.reactor.time_flies(1)

    def tearDown(self):
        for e in events.values():
            e.set()
        super().tearDown()

    def test_jobs_that_finish_soon_complete(self):
        job = self.put(waits, 'soon')
        self.reactor.time_flies(5)
        self.assertTrue(event('started soon').wait(10))
        threading.Timer(0.05, event('soon').set).start()
        self.reactor.stop()
        transaction.begin()
        self.assertEqual(job.status, interfaces.COMPLETED)
        self.assertFalse(self.dispatcher.activated)

    def test_jobs_that_do_not_are_handed_back(self):  # C5
        job = self.put(waits, 'never')
        self.reactor.time_flies(5)
        self.assertTrue(event('started never').wait(10))
        self.reactor.stop()
        transaction.begin()
        self.assertEqual(job.status, interfaces.ACTIVE)
        self.assertEqual(list(self.queue)[0].callable, job.handleInterrupt)


class RecordLogTests(unittest.TestCase):
    """What a dispatcher record's deactivation says, by hand."""

    def setUp(self):
        self.handler = zope.testing.loggingsupport.InstalledHandler(
            'zc.async.events')
        self.addCleanup(self.handler.uninstall)
        testing.setUpDatetime()
        self.addCleanup(testing.tearDownDatetime)
        self.db = ZODB.DB(None)
        self.addCleanup(self.db.close)
        self.conn = self.db.open()
        self.addCleanup(self.conn.close)
        self.addCleanup(transaction.abort)
        queues = self.conn.root()[interfaces.KEY] = \
            zc.asynchronous.queue.Queues()
        self.queue = queues[''] = zc.asynchronous.queue.Queue()
        transaction.commit()

    def activate(self, value):
        self.queue.dispatchers.register(value)
        self.queue.dispatchers[value].activate()
        self.queue.dispatchers[value]['main'] = zc.asynchronous.agent.Agent()
        self.queue.dispatchers.ping(value)
        return self.queue.dispatchers[value]

    def test_a_death_is_one_warning_naming_the_jobs(self):
        dead = self.activate(uuid.UUID('11111111-1111-11f1-8000-000000000001'))
        alive = self.activate(uuid.UUID(
            '22222222-2222-11f1-8000-000000000002'))
        job = self.queue.put(zc.asynchronous.job.Job(double, 21))
        transaction.commit()
        self.assertIs(dead['main'].claimJob(), job)
        transaction.commit()
        testing.set_now(zc.asynchronous.utils.now()
                        + datetime.timedelta(minutes=2))
        self.queue.dispatchers.ping(alive.UUID)
        self.assertEqual(self.handler.records, [])  # not before the commit
        transaction.commit()
        message, = [r.getMessage() for r in self.handler.records]
        self.assertEqual(message, (
            "dispatcher %s in queue '' is dead (no ping since 2006-08-10 "
            "15:44:22.000211+00:00; death interval 0:01:00): dispatcher %s "
            "deactivated it; its jobs: %r: back in the queue"
            % (dead.UUID, alive.UUID, job)))
        self.assertEqual(self.handler.records[0].levelname, 'WARNING')


class TakeOverTests(VirtualTimeTestCase):
    """A record that an ended process of this instance left activated."""

    def setUp(self):
        super().setUp()
        self.tmpdir = tempfile.mkdtemp(prefix='zc.async-takeover-')
        self.addCleanup(shutil.rmtree, self.tmpdir, True)
        path = os.path.join(self.tmpdir, 'uuid.txt')
        with open(path, 'w') as f:
            f.write('%s\n' % (self.uuid,))
        self.lock = instanceuuid.lock(self.uuid, path)
        self.addCleanup(instanceuuid._locks.pop, self.uuid)
        self.addCleanup(self.lock.release)
        self.assertTrue(self.lock.held)
        # A record activated, and a job started, by an earlier process of
        # this instance.
        self.queue.dispatchers.register(self.uuid)
        self.record = self.queue.dispatchers[self.uuid]
        self.record.activate()
        self.record['main'] = zc.asynchronous.agent.Agent()
        self.job = self.queue.put(zc.asynchronous.job.Job(double, 21))
        transaction.commit()
        self.record['main'].claimJob()._start_claimed()
        transaction.commit()

    def left_by(self, pid, host=None):
        self.record.instance_lock = (host or socket.gethostname(),
                                     self.lock.path, pid)
        transaction.commit()

    def test_an_ended_process_s_record_is_taken_over_at_once(self):
        self.left_by(os.getpid() + 1)
        self.dispatcher.activate()
        self.reactor.time_flies(1)
        self.assertIsNotNone(self.dispatcher.getPollInfo()[''])
        transaction.begin()
        self.assertEqual(self.record.instance_lock,
                         (socket.gethostname(), self.lock.path, os.getpid()))
        self.assertIn(
            "dispatcher %s took over its record in queue '' from its former "
            "process, which ended without deactivating it (the UUID file "
            "lock was free); its jobs: %r: interrupted: its handleInterrupt "
            "is queued" % (self.uuid, self.job), self.messages('WARNING'))
        self.reactor.wait_for(self.job)  # its handleInterrupt ran first
        self.assertEqual(self.job.result, 42)
        self.assertEqual(
            self.job.getRetryPolicy().data['interruptions'], 1)

    def test_without_proof_that_it_ended_the_record_is_left_alone(self):
        for pid, host in ((os.getpid(), None), (1, 'another.host')):
            self.left_by(pid, host)
            self.dispatcher.activate()
            self.reactor.time_flies(1)
            self.assertEqual(self.dispatcher.getPollInfo(), {'': None})
            self.assertTrue(any('another process?' in message
                                for message in self.messages('ERROR')))
            self.dispatcher.deactivate()
            transaction.begin()
            self.record.activate()
            transaction.commit()


class InstanceLockTests(unittest.TestCase):

    def setUp(self):
        self.tmpdir = tempfile.mkdtemp(prefix='zc.async-lock-')
        self.addCleanup(shutil.rmtree, self.tmpdir, True)
        self.path = os.path.join(self.tmpdir, 'uuid.txt')
        self.uuid = instanceuuid.getUUID(self.path)

    def lock_in_another_process(self):
        """Whether another process can take the lock."""
        code = ('import sys, zc.asynchronous.instanceuuid as i\n'
                'print(i.InstanceLock(sys.argv[1]).acquire())')
        done = subprocess.run([sys.executable, '-c', code, self.path],
                              capture_output=True, text=True,
                              timeout=processes.TIMEOUT,
                              env=processes.subprocess_env())
        return done.stdout.strip()

    def test_the_lock_is_exclusive_and_held_for_the_process(self):
        lock = instanceuuid.lock(self.uuid, self.path)
        self.addCleanup(instanceuuid._locks.pop, self.uuid)
        self.assertTrue(lock.held)
        self.assertIs(instanceuuid.lock(self.uuid, self.path), lock)
        self.assertEqual(instanceuuid.holder(self.uuid),
                         (socket.gethostname(), os.path.realpath(self.path),
                          os.getpid()))
        self.assertEqual(self.lock_in_another_process(), 'False')
        lock.release()
        self.assertEqual(self.lock_in_another_process(), 'True')
        # While another process holds it, this one is no holder; once that
        # process has ended, it takes the lock when asked.
        other = subprocess.Popen(
            [sys.executable, '-c', 'import sys, zc.asynchronous.instanceuuid'
             ' as i\nheld = i.InstanceLock(sys.argv[1])\n'
             'print(held.acquire(), flush=True)\nsys.stdin.read()',
             self.path],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            env=processes.subprocess_env())
        self.assertEqual(other.stdout.readline(), 'True\n')
        self.assertIsNone(instanceuuid.holder(self.uuid))
        other.stdin.close()
        other.stdout.close()
        other.wait(processes.TIMEOUT)
        self.assertEqual(instanceuuid.holder(self.uuid)[1:],
                         (os.path.realpath(self.path), os.getpid()))
        # The file is still the UUID file.
        self.assertEqual(instanceuuid.getUUID(self.path), self.uuid)
        lock.release()


# ----------------------------------------------------------- processes

PROGRAM = textwrap.dedent('''
    import logging, os, signal, sys, time
    import BTrees.Length
    import transaction, ZODB, ZODB.FileStorage
    import zc.asynchronous.configure
    from zc.asynchronous.interfaces import IQueue
    from zc.asynchronous.job import Job
    from zc.asynchronous.tests.jobs_for_processes import gated

    directory, mode = sys.argv[1:]
    logging.basicConfig(filename=os.path.join(directory, 'log'),
                        level=logging.INFO)
    db = ZODB.DB(ZODB.FileStorage.FileStorage(
        os.path.join(directory, 'Data.fs')))
    zc.asynchronous.configure.base()
    zc.asynchronous.configure.start(db, poll_interval=0.1)
    tm = transaction.TransactionManager()
    conn = db.open(transaction_manager=tm)
    with tm:
        IQueue(conn).put(Job(gated, BTrees.Length.Length(), 21, directory))
    while not os.path.exists(os.path.join(directory, 'starts.log')):
        time.sleep(0.01)
    print('started', flush=True)
    if mode == 'exit':
        # The end of the program: the job finishes during the exit.
        open(os.path.join(directory, 'gate'), 'w').close()
    else:
        time.sleep(60)  # until signalled
''')


class ProcessTests(unittest.TestCase):
    """Programs that end, the way programs end."""

    def setUp(self):
        self.directory = tempfile.mkdtemp(prefix='zc.async-shutdown-')
        self.addCleanup(shutil.rmtree, self.directory, True)

    def run_program(self, mode):
        env = processes.subprocess_env(
            ZC_ASYNC_UUID=os.path.join(self.directory, 'uuid.txt'))
        program = subprocess.Popen(
            [sys.executable, '-c', PROGRAM, self.directory, mode],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env=env)
        self.addCleanup(program.stdout.close)
        self.addCleanup(lambda: program.poll() is None and program.kill())
        self.assertEqual(program.stdout.readline(), 'started\n')
        return program

    def jobs(self):
        """From the database left behind: the completed jobs' statuses and
        results, whether the record is activated, and the statuses of the
        jobs handed back (their handleInterrupt in the queue)."""
        db = ZODB.DB(os.path.join(self.directory, 'Data.fs'))
        try:
            conn = db.open()
            queue = conn.root()[interfaces.KEY]['']
            record, = queue.dispatchers.values()
            return ([(job.status, job.result)
                     for job in record['main'].completed],
                    bool(record.activated),
                    [wrapper.callable.__self__.status for wrapper in queue])
        finally:
            db.close()

    def test_the_end_of_the_interpreter_stops_the_dispatcher(self):
        program = self.run_program('exit')
        self.assertEqual(program.wait(processes.TIMEOUT), 0)
        self.assertEqual(self.jobs(), ([(interfaces.COMPLETED, 42)], False,
                                       []))

    def wait_log(self, text, count=1):
        path = os.path.join(self.directory, 'log')
        processes.wait_for(lambda: processes.read(path).count(text) >= count,
                           message='%r in %s' % (text, path))

    def test_sigterm_lets_the_job_finish_and_a_second_one_stops_at_once(self):
        program = self.run_program('signal')
        program.send_signal(signal.SIGTERM)
        self.wait_log('running job(s)')
        self.assertIsNone(program.poll())  # the job waits for its gate
        open(os.path.join(self.directory, 'gate'), 'w').close()
        self.assertEqual(program.wait(processes.TIMEOUT), 0)  # SystemExit
        self.assertEqual(self.jobs(), ([(interfaces.COMPLETED, 42)], False,
                                       []))
        os.remove(os.path.join(self.directory, 'gate'))
        os.remove(os.path.join(self.directory, 'starts.log'))
        program = self.run_program('signal')
        program.send_signal(signal.SIGTERM)
        self.wait_log('running job(s)', 2)
        program.send_signal(signal.SIGTERM)
        self.assertEqual(program.wait(processes.TIMEOUT), 0)
        self.wait_log('at once')
        self.assertEqual(self.jobs(), ([(interfaces.COMPLETED, 42)], False,
                                       [interfaces.ACTIVE]))


def test_suite():
    return unittest.defaultTestLoader.loadTestsFromName(__name__)
