"""Black-box conformance tests: zc.async 1.5's documented behaviour.

These tests use only the public API, the way 1.5's documentation chapters
do (``configure.base()``, ``Queues``/``Queue`` under the root key, the test
``Reactor`` driving a ``Dispatcher``, the frozen clock), and check the
facts of the reference one or two assertions at a time.
"""
import datetime
import operator
import os
import shutil
import tempfile
import threading
import time
import unittest
import uuid as uuid_module

import persistent.mapping
import transaction
import twisted.python.failure
import ZODB
import ZODB.FileStorage
import ZODB.POSException
import ZODB.utils
import zope.component
import zope.component.testing
import zope.interface.verify

import zc.asynchronous
import zc.asynchronous.agent
import zc.asynchronous.configure
import zc.asynchronous.dispatcher
import zc.asynchronous.instanceuuid
import zc.asynchronous.interfaces as interfaces
import zc.asynchronous.job
import zc.asynchronous.queue
import zc.asynchronous.subscribers
import zc.asynchronous.testing as testing
import zc.asynchronous.utils
from zc.asynchronous.job import Job

UTC = datetime.timezone.utc
EST = datetime.timezone(datetime.timedelta(hours=-5), 'EST')
START = datetime.datetime(2006, 8, 10, 15, 44, 22, 211, UTC)

# ------------------------------------------------- job callables (by name)

calls = []


def multiply(*args):
    res = 1
    for a in args:
        res *= a
    return res


def record(value):
    calls.append(value)
    return value


def fail_boom():
    raise ValueError('boom')


def always_conflict():
    calls.append('conflict')
    raise ZODB.POSException.ConflictError()


def show_status():
    return zc.asynchronous.local.getJob().status


def hand_off():
    queue = zc.asynchronous.local.getQueue()
    return queue.put(Job(multiply, 21, 2))


def return_job():
    return Job(multiply, 21, 2)


def zero():
    return 0


def one():
    return 1


def two():
    return 2


def seven():
    return 7


def fourteen():
    return 14


def twenty_one():
    return 21


def postprocess(*jobs):
    return tuple(j.result for j in jobs)


def postprocess_with(prefix, *jobs):
    return (prefix, tuple(j.result for j in jobs))


def sum_jobs(*jobs):
    return sum(j.result for j in jobs)


def sum_with(prefix, *jobs):
    return (prefix, sum(j.result for j in jobs))


def got_result(result):
    return 'I got result %r' % (result,)


gates = {}


def gate(name):
    return gates.setdefault(name, threading.Event())


def wait_then_42(name='go'):
    gate(name).wait(60)
    return 42


counts = {}


def block_first_then_42():
    # the first run hangs (a "crashed" process); later runs answer 42
    counts['crash'] = counts.get('crash', 0) + 1
    if counts['crash'] == 1:
        gate('crash').wait(10)
    return 42


def fail_first_then_42():
    counts['ff'] = counts.get('ff', 0) + 1
    if counts['ff'] == 1:
        raise ValueError('first time')
    return 42


def local_info():
    local = zc.asynchronous.local
    return (local.getAgentName(), local.getDispatcher().UUID,
            local.getReactor() is local.getDispatcher().reactor,
            local.getQueue().name)


class RescheduleLater(zc.asynchronous.job.RetryCommonFourTimes):
    """Answers "try again in a minute" to job errors."""

    def jobError(self, failure, data_cache):
        return datetime.timedelta(minutes=1)


class RescheduleNow(zc.asynchronous.job.RetryCommonFourTimes):
    """Answers "try again now, first in line" to job errors."""

    def jobError(self, failure, data_cache):
        return datetime.timedelta(0)


class RescheduleNaive(zc.asynchronous.job.RetryCommonFourTimes):
    """Answers a naive datetime (taken as UTC) to job errors."""

    def jobError(self, failure, data_cache):
        return datetime.datetime(2006, 8, 10, 16, 0)


class HookedJob(Job):
    """Records setUp/tearDown (3.1 step 8)."""

    def setUp(self):
        calls.append(('setUp', self.status))
        return 'info'

    def tearDown(self, setup_info):
        calls.append(('tearDown', setup_info))


def only_multiply(job):
    return job.callable is multiply


def big_result():
    return 'x' * 20000


def return_failure():
    try:
        raise ValueError('returned')
    except ValueError:
        return twisted.python.failure.Failure()


def call_myself():
    return zc.asynchronous.local.getJob()()


def return_deferred():
    import twisted.internet.defer
    d = twisted.internet.defer.Deferred()
    zc.asynchronous.local.getReactor().callLater(1, d.callback, 42)
    return d


def append_letter(letter):
    calls.append(letter)
    return letter


def extend_composite(composite_oid):
    """A running component adds another component to its composite."""
    job = zc.asynchronous.local.getJob()
    composite = job._p_jar.get(composite_oid)
    composite.args.append(Job(append_letter, 'third'))
    return append_letter('second')


def letters(*jobs):
    return [j.result for j in jobs]


def block_first_callback(result):
    counts['cb'] = counts.get('cb', 0) + 1
    if counts['cb'] == 1:
        gate('crash').wait(10)
    return result * 2


def postprocess_failures(*jobs):
    return [isinstance(j.result, twisted.python.failure.Failure)
            for j in jobs]


def ask_annotation_with_timeout():
    return zc.asynchronous.local.getLiveAnnotation(
        'never', default='nothing', timeout=1, poll=0.5)


def flaky_chooser(agent):
    import ZEO.Exceptions
    counts['chooser'] = counts.get('chooser', 0) + 1
    if counts['chooser'] == 1:
        raise ZEO.Exceptions.ClientDisconnected()
    return agent.queue.claim()


class BadSetUpJob(Job):
    """setUp fails: a job error; tearDown gets None (A24)."""

    def setUp(self):
        raise ValueError('setUp broke')

    def tearDown(self, setup_info):
        calls.append(('tearDown', setup_info))


class BadTearDownJob(Job):
    """tearDown fails: logged CRITICAL and ignored."""

    def tearDown(self, setup_info):
        raise ValueError('tearDown broke')


def return_unpicklable():
    return threading.Lock()


def current_job_repr(result):
    return repr(zc.asynchronous.local.getJob())


def own_status(job):
    return job.status


def live_annotation_job():
    local = zc.asynchronous.local
    local.setLiveAnnotation('hello', 'from job')
    reply = local.getLiveAnnotation('reply', timeout=5, poll=0.05)
    local_view = local.getJob().annotations.get('reply', 'MISSING')
    return (reply, local_view)


# ------------------------------------------------------------- fixtures

class DBTestCase(unittest.TestCase):
    """A FileStorage DB with ``root['zc.async'] = Queues()`` and ``''``."""

    def setUp(self):
        del calls[:]
        gates.clear()
        counts.clear()
        zope.component.testing.setUp()
        zc.asynchronous.configure.base()
        self.dir = tempfile.mkdtemp()
        self.db = ZODB.DB(ZODB.FileStorage.FileStorage(
            os.path.join(self.dir, 'Data.fs')))
        self.conn = self.db.open()
        self.root = self.conn.root()
        self.root[interfaces.KEY] = zc.asynchronous.queue.Queues()
        self.queue = self.root[interfaces.KEY][''] = (
            zc.asynchronous.queue.Queue())
        transaction.commit()

    def tearDown(self):
        for event in gates.values():
            event.set()
        transaction.abort()
        self.conn.close()
        self.db.close()
        zc.asynchronous.dispatcher.clear()
        zope.component.testing.tearDown()
        testing.tearDownDatetime()
        shutil.rmtree(self.dir, ignore_errors=True)

    def assertMessage(self, cm, message):
        self.assertTrue(str(cm.exception.args[0]).startswith(message),
                        cm.exception.args)


class ReactorTestCase(DBTestCase):
    """Plus a Dispatcher on the test Reactor with a 'main' agent."""

    def setUp(self):
        super().setUp()
        zope.component.provideHandler(
            zc.asynchronous.agent.addMainAgentActivationHandler)
        testing.setUpDatetime()
        self.others = []  # more dispatchers to tear down
        self.reactor = testing.Reactor()
        self.dispatcher = zc.asynchronous.dispatcher.Dispatcher(
            self.db, self.reactor)
        self.dispatcher.activate()
        self.reactor.start()

    def tearDown(self):
        for event in gates.values():
            event.set()
        try:
            for d in [self.dispatcher] + self.others:
                if d._reactor.started:
                    d._reactor.stop()
                d.activated = False
                for pools in d.queues.values():
                    for pool in pools.values():
                        pool.setSize(0)
                testing.tear_down_dispatcher(d)
        finally:
            super().tearDown()

    def da(self):
        transaction.begin()
        return self.queue.dispatchers[self.dispatcher.UUID]

    def start_job_with_callback(self):
        job = self.queue.put(Job(block_first_then_42))
        cb = job.addCallback(got_result)
        transaction.commit()
        self.reactor.time_flies(1)
        testing.wait_for_start(job)
        return job, cb

    def new_dispatcher(self, **kw):
        """Another in-process dispatcher on its own test reactor."""
        reactor = testing.Reactor()
        dispatcher = zc.asynchronous.dispatcher.Dispatcher(
            self.db, reactor, **kw)
        self.others.append(dispatcher)
        return reactor, dispatcher

    def crash(self):
        """The dispatcher's process dies: no deactivation at all."""
        self.dispatcher.activated = False
        self.reactor.started = False
        zc.asynchronous.dispatcher.pop(self.dispatcher.UUID)


    def wait_for(self, reactor, *jobs, polls=12):
        """Let polls pass until ``jobs`` are completed."""
        for i in range(polls):
            reactor.time_flies(5)
            transaction.begin()
            if all(j.status == 'completed-status' for j in jobs):
                break
        reactor.wait_for(*jobs)

    def drive_until(self, check, seconds=30):
        """Let virtual time pass in small steps until ``check()``."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.reactor.time_flies(0.05)
            transaction.begin()
            if check():
                return
            testing.time_sleep(0.01)
        self.fail('condition never met')

    def run_job(self, job):
        job = self.queue.put(job)
        transaction.commit()
        self.reactor.wait_for(job)
        return job


# ------------------------------------------------------------ constants

class InterfacesTests(unittest.TestCase):

    def test_key_and_statuses(self):
        self.assertEqual(interfaces.KEY, 'zc.async')
        self.assertEqual(
            [interfaces.NEW, interfaces.PENDING, interfaces.ASSIGNED,
             interfaces.ACTIVE, interfaces.CALLBACKS, interfaces.COMPLETED],
            ['new-status', 'pending-status', 'assigned-status',
             'active-status', 'callback-status', 'completed-status'])

    def test_exceptions(self):
        for name in ('AbortedError', 'TimeoutError', 'BadStatusError',
                     'ReassignedError', 'FullError'):
            self.assertTrue(issubclass(getattr(interfaces, name), Exception))

    def test_local_is_exposed(self):
        from zc.asynchronous import threadlocal
        self.assertIsInstance(zc.asynchronous.local, threadlocal.Local)

    def test_utils_constants(self):
        utils = zc.asynchronous.utils
        self.assertEqual(utils.log.name, 'zc.async.events')
        self.assertEqual(utils.tracelog.name, 'zc.async.trace')
        self.assertEqual((utils.INITIAL_BACKOFF, utils.BACKOFF_INCREMENT,
                          utils.MAX_BACKOFF), (5, 5, 60))
        self.assertIn(interfaces.ReassignedError, utils.EXPLOSIVE_ERRORS)

    def test_instanceuuid(self):
        import uuid
        self.assertEqual(zc.asynchronous.instanceuuid.key, 'ZC_ASYNC_UUID')
        self.assertIsInstance(zc.asynchronous.instanceuuid.UUID, uuid.UUID)
        zope.component.testing.setUp()
        try:
            zc.asynchronous.configure.base()
            self.assertEqual(zope.component.getUtility(interfaces.IUUID),
                             zc.asynchronous.instanceuuid.UUID)
        finally:
            zope.component.testing.tearDown()

    def test_dispatcher_status_constants(self):
        d = zc.asynchronous.dispatcher
        self.assertEqual((d.STOPPED, d.RUNNING, d.STUCK, d.STARTING),
                         ('STOPPED', 'RUNNING', 'STUCK', 'STARTING'))

    def test_partial_placeholder_raises(self):
        import zc.asynchronous.partial
        with self.assertRaises(Exception):
            zc.asynchronous.partial.Partial(multiply)


class SubscriberDefaultsTests(unittest.TestCase):

    def test_queue_installers(self):
        s = zc.asynchronous.subscribers
        self.assertEqual(tuple(s.queue_installer.queues), ('',))
        self.assertIsNone(s.queue_installer.db_name)
        self.assertEqual(s.multidb_queue_installer.db_name, 'async')

    def test_dispatcher_installers(self):
        s = zc.asynchronous.subscribers
        self.assertEqual(
            s.ThreadedDispatcherInstaller().poll_interval, 5)
        self.assertEqual(
            s.threaded_dispatcher_installer.poll_interval, 5)
        self.assertEqual(s.TwistedDispatcherInstaller().poll_interval, 5)

    def test_agent_installer(self):
        s = zc.asynchronous.subscribers
        inst = s.agent_installer
        self.assertEqual((inst.agent_name, inst.chooser, inst.filter,
                          inst.size, inst.queue_names),
                         ('main', None, None, 3, None))
        with self.assertRaises(ValueError) as cm:
            s.AgentInstaller('x', chooser=lambda a: None,
                             filter=lambda j: True)
        self.assertEqual(cm.exception.args[0],
                         'cannot set both chooser and filter to non-None')
        self.assertEqual(s.signal_handlers.__class__, dict)


# ------------------------------------------------------------------ jobs

class JobTests(DBTestCase):

    def test_defaults(self):
        job = Job(multiply, 5, 3)
        self.assertEqual(job.status, 'new-status')
        self.assertIsNone(job.result)
        self.assertIsNone(job.begin_after)
        self.assertIsNone(job.begin_by)
        self.assertIsNone(job.retry_policy_factory)
        self.assertIsNone(job.failure_log_level)
        self.assertIsNone(job.parent)
        self.assertIsNone(job.active_start)
        self.assertIsNone(job.active_end)
        self.assertEqual(list(job.args), [5, 3])
        self.assertEqual(dict(job.kwargs), {})
        self.assertEqual(len(job.annotations), 0)
        self.assertIs(job.callable, multiply)
        self.assertTrue(zope.interface.verify.verifyObject(interfaces.IJob,
                                                           job))

    def test_call_standalone(self):
        job = self.root['job'] = Job(multiply, 5, 3)
        transaction.commit()
        self.assertEqual(job(), 15)
        self.assertEqual(job.result, 15)
        self.assertEqual(job.status, 'completed-status')
        self.assertIsNotNone(job.active_start)
        self.assertIsNotNone(job.active_end)

    def test_call_args_append_and_kwargs_override(self):
        job = self.root['job'] = Job(record, )
        transaction.commit()
        self.assertEqual(job(7), 7)
        job2 = self.root['job2'] = Job(multiply, 2)
        transaction.commit()
        self.assertEqual(job2(3, 4), 24)

    def test_result_read_only(self):
        job = Job(multiply)
        with self.assertRaises(AttributeError):
            job.result = 5

    def test_call_twice_raises_bad_status(self):
        job = self.root['job'] = Job(multiply, 5, 3)
        transaction.commit()
        job()
        with self.assertRaises(interfaces.BadStatusError) as cm:
            job()
        self.assertMessage(cm, 'can only call a job with NEW or ASSIGNED '
                               'status')

    def test_callable_settable_only_when_new(self):
        job = self.root['job'] = Job(multiply, 5, 3)
        job.callable = record
        self.assertIs(job.callable, record)
        transaction.commit()
        job(1)
        with self.assertRaises(interfaces.BadStatusError):
            job.callable = multiply

    def test_begin_after_validation_and_normalisation(self):
        job = Job(multiply)
        with self.assertRaises(ValueError) as cm:
            job.begin_after = datetime.datetime(2006, 8, 10, 11, 30)
        self.assertMessage(cm, 'cannot use timezone-naive values')
        job.begin_after = datetime.datetime(2006, 8, 10, 11, 30, tzinfo=EST)
        self.assertEqual(job.begin_after,
                         datetime.datetime(2006, 8, 10, 16, 30, tzinfo=UTC))
        self.assertEqual(job.begin_after.utcoffset(),
                         datetime.timedelta(0))

    def test_begin_by_validation(self):
        job = Job(multiply)
        with self.assertRaises(ValueError) as cm:
            job.begin_by = datetime.timedelta(seconds=-1)
        self.assertMessage(cm, 'negative values are not allowed')
        job.begin_by = datetime.timedelta(hours=1)
        self.assertEqual(job.begin_by, datetime.timedelta(hours=1))

    def test_quota_names(self):
        job = Job(multiply)
        with self.assertRaises(TypeError) as cm:
            job.quota_names = 'test'
        self.assertMessage(cm, 'provide an iterable of names')
        job.quota_names = ['a', 'b']
        self.assertEqual(job.quota_names, ('a', 'b'))

    def test_repr_shape(self):
        job = Job(multiply, 5, 3)
        name = __name__.replace('zc.asynchronous', 'zc.async')
        self.assertIn(repr(job), (
            '<zc.async.job.Job (oid ?, db ?) ``%s.multiply(5, 3)``>' % name,
            '<zc.async.job.Job (oid ?, db ?) ``%s.multiply(5, 3)``>'
            % __name__))
        self.root['job'] = job
        transaction.commit()
        from ZODB.utils import u64
        self.assertTrue(repr(job).startswith(
            "<zc.async.job.Job (oid %d, db 'unnamed') ``" % u64(job._p_oid)),
            repr(job))

    def test_job_module_names(self):
        self.assertEqual(Job.__module__, 'zc.async.job')
        self.assertEqual(zc.asynchronous.queue.Queue.__module__,
                         'zc.async.queue')

    def test_adapt_function_to_ijob(self):
        job = interfaces.IJob(multiply)
        self.assertIsInstance(job, Job)
        import time
        self.assertIsInstance(interfaces.IJob(time.time), Job)

    def test_bind(self):
        job = Job.bind(record)
        self.assertIs(job.args[0], job)

    def test_failure_shapes(self):
        job = self.root['job'] = Job(fail_boom)
        transaction.commit()
        res = job()
        self.assertIsInstance(res, twisted.python.failure.Failure)
        self.assertIs(job.result, res)
        self.assertIsNone(res.tb)
        self.assertTrue(res.check(ValueError))
        self.assertEqual(res.getErrorMessage(), 'boom')
        tb = res.getTraceback()
        self.assertTrue(tb.startswith('Traceback (most recent call last):'),
                        tb)
        self.assertTrue(tb.rstrip().endswith('ValueError: boom'), tb)
        self.assertTrue(res.getBriefTraceback().startswith(
            'Traceback: '), res.getBriefTraceback())
        verbose = res.getTraceback(detail='verbose')
        self.assertIn('*--- Failure #', verbose)
        self.assertIn('(pickled) ---', verbose)
        self.assertIn('*--- End of Failure #', verbose)
        transaction.begin()
        # stored in the database: it pickles
        conn2 = self.db.open()
        try:
            other = conn2.get(job._p_oid)
            self.assertTrue(other.result.check(ValueError))
        finally:
            conn2.close()

    def test_fail_default_timeout(self):
        job = self.root['job'] = Job(multiply)
        transaction.commit()
        job.fail()
        self.assertEqual(job.status, 'completed-status')
        self.assertTrue(job.result.check(interfaces.TimeoutError))
        tb = job.result.getTraceback()
        self.assertTrue(tb.startswith('Traceback (most recent call last):'))
        self.assertIn('zc.async.interfaces.TimeoutError', tb)
        with self.assertRaises(interfaces.BadStatusError) as cm:
            job.fail()
        self.assertMessage(cm, 'can only call fail on a job with NEW, '
                               'PENDING, or ASSIGNED status')

    def test_resume_and_interrupt_bad_status(self):
        job = self.root['job'] = Job(multiply)
        transaction.commit()
        with self.assertRaises(interfaces.BadStatusError) as cm:
            job.resumeCallbacks()
        self.assertMessage(cm, 'can only resumeCallbacks on a job with '
                               'CALLBACKS status')
        with self.assertRaises(interfaces.BadStatusError) as cm:
            job.handleInterrupt()
        self.assertMessage(cm, 'can only call ``handleInterrupt`` on a job '
                               'with ACTIVE status')

    def test_callback_chain_example(self):
        # 3.2: 5*3=15 -> multiply(4) -> 60 -> success records 60
        job = self.root['job'] = Job(multiply, 5, 3)
        transaction.commit()
        cb = job.addCallback(Job(multiply, 4))
        self.assertEqual(cb.status, 'new-status')
        self.assertIs(cb.parent, job)
        cb2 = cb.addCallback(record)
        transaction.commit()
        self.assertEqual(job(), 15)
        self.assertEqual(cb.result, 60)
        self.assertEqual(cb2.result, 60)
        self.assertEqual(calls, [60])
        self.assertEqual(job.result, 15)
        self.assertEqual(cb.status, 'completed-status')

    def test_callbacks_independent(self):
        job = self.root['job'] = Job(multiply, 5, 3)
        transaction.commit()
        a = job.addCallback(Job(multiply, 2))
        b = job.addCallback(Job(multiply, 3))
        transaction.commit()
        job()
        self.assertEqual((a.result, b.result, job.result), (30, 45, 15))
        self.assertEqual(list(job.callbacks), [a, b])

    def test_callback_added_to_completed_job_runs_now(self):
        job = self.root['job'] = Job(multiply, 5, 3)
        transaction.commit()
        job()
        cb = job.addCallback(record)
        self.assertEqual(cb.status, 'completed-status')
        self.assertEqual(calls, [15])
        self.assertEqual(job.status, 'completed-status')

    def test_failure_handler_returns_zero(self):
        job = self.root['job'] = Job(fail_boom)
        transaction.commit()
        proxy = job.addCallbacks(failure=Job(zero_from_failure))
        nxt = proxy.addCallback(record)
        transaction.commit()
        job()
        self.assertTrue(job.result.check(ValueError))
        self.assertEqual(proxy.result, 0)
        self.assertEqual(nxt.result, 0)

    def test_add_callbacks_proxy(self):
        job = self.root['job'] = Job(multiply, 5, 3)
        transaction.commit()
        proxy = job.addCallbacks(Job(multiply, 2), Job(record))
        self.assertIsInstance(proxy.success, Job)
        self.assertIsInstance(proxy.failure, Job)
        self.assertIsNone(proxy.job)
        transaction.commit()
        job()
        self.assertIs(proxy.job, proxy.success)
        self.assertEqual(proxy.result, 30)
        self.assertEqual(proxy.status, 'completed-status')
        self.assertEqual(proxy.failure.status, 'new-status')

    def test_add_callbacks_missing_branch_passes_bare_result_A26(self):
        job = self.root['job'] = Job(multiply, 5, 3)
        transaction.commit()
        proxy = job.addCallbacks(failure=record)
        self.assertIsNone(proxy.success)
        nxt = proxy.addCallback(Job(record))
        transaction.commit()
        job()
        self.assertEqual(proxy.result, 15)
        self.assertEqual(nxt.result, 15)
        self.assertEqual(calls, [15])

    def test_add_callbacks_no_args_returns_proxy_A9(self):
        job = Job(multiply)
        proxy = job.addCallbacks()
        self.assertIsNot(proxy, job)
        self.assertTrue(interfaces.ICallbackProxy.providedBy(proxy))

    def test_callback_default_log_level_and_policy(self):
        import logging
        job = Job(multiply)
        cb = job.addCallback(Job(record))
        self.assertEqual(cb.failure_log_level, logging.CRITICAL)
        policy_class = type(cb.getRetryPolicy())
        self.assertIs(policy_class, zc.asynchronous.job.RetryCommonForever)

    def test_default_retry_policy(self):
        job = Job(multiply)
        policy = job.getRetryPolicy()
        self.assertIsInstance(policy, zc.asynchronous.job.RetryCommonFourTimes)
        self.assertIs(job.getRetryPolicy(), policy)
        job.retry_policy_factory = zc.asynchronous.job.NeverRetry
        self.assertIs(job.getRetryPolicy(), policy)

    def test_conflict_retried_five_times_in_total(self):
        job = self.root['job'] = Job(always_conflict)
        transaction.commit()
        job()
        self.assertEqual(calls, ['conflict'] * 5)
        self.assertTrue(job.result.check(ZODB.POSException.ConflictError))

    def test_never_retry_runs_once(self):
        job = self.root['job'] = Job(
            always_conflict,
            )
        job.retry_policy_factory = zc.asynchronous.job.NeverRetry
        transaction.commit()
        job()
        self.assertEqual(calls, ['conflict'])

    def test_job_returning_job(self):
        job = self.root['job'] = Job(return_job)
        transaction.commit()
        job()
        inner = job.result
        if isinstance(inner, Job):
            # waiting on the inner job
            self.assertEqual(job.status, 'active-status')
            inner()
        self.assertEqual(job.result, 42)
        self.assertEqual(job.status, 'completed-status')

    def test_repr_kwargs_and_method(self):
        job = Job(record, 5, foo='bar')
        self.assertTrue(repr(job).endswith("record(5, foo='bar')``>"),
                        repr(job))
        transaction.commit()
        job = Job(self.root.__setitem__, 'x', 1)
        self.assertIn(' :__setitem__(', repr(job))
        self.assertIs(job.callable.__self__, self.root)

    def test_method_of_persistent_object(self):
        job = self.root['job'] = Job(self.root.__setitem__, 'x', 1)
        transaction.commit()
        job()
        self.assertEqual(self.root['x'], 1)
        self.assertEqual(job.status, 'completed-status')

    def test_setup_teardown_hooks(self):
        job = self.root['job'] = HookedJob(multiply, 5, 3)
        transaction.commit()
        self.assertEqual(job(), 15)
        self.assertEqual(calls, [('setUp', 'active-status'),
                                 ('tearDown', 'info')])

    def test_no_retry_after_begin_by_deadline_A4(self):
        testing.setUpDatetime()
        job = self.root['job'] = Job(always_conflict)
        job.begin_after = START
        job.begin_by = datetime.timedelta(seconds=10)
        transaction.commit()
        testing.set_now(START + datetime.timedelta(seconds=20))
        job()
        self.assertEqual(calls, ['conflict'])
        del calls[:]
        inside = self.root['inside'] = Job(always_conflict)
        inside.begin_after = START + datetime.timedelta(seconds=15)
        inside.begin_by = datetime.timedelta(seconds=10)
        transaction.commit()
        inside()
        self.assertEqual(calls, ['conflict'] * 5)

    def test_begin_by_settable_when_pending_only(self):
        testing.setUpDatetime()
        job = self.root['job'] = Job(multiply)
        transaction.commit()
        job()
        with self.assertRaises(interfaces.BadStatusError):
            job.begin_by = datetime.timedelta(seconds=1)
        with self.assertRaises(interfaces.BadStatusError):
            job.begin_after = START
        with self.assertRaises(interfaces.BadStatusError):
            job.quota_names = ('a',)

    def test_retry_policy_factory_string_adapter(self):
        zope.component.provideAdapter(
            zc.asynchronous.job.NeverRetry, (interfaces.IJob,),
            interfaces.IRetryPolicy, name='never')
        job = Job(multiply)
        job.retry_policy_factory = 'never'
        self.assertIsInstance(job.getRetryPolicy(),
                              zc.asynchronous.job.NeverRetry)

    def test_default_policy_adapter(self):
        zope.component.provideAdapter(
            zc.asynchronous.job.NeverRetry, (interfaces.IJob,),
            interfaces.IRetryPolicy)
        self.assertIsInstance(Job(multiply).getRetryPolicy(),
                              zc.asynchronous.job.NeverRetry)
        zope.component.provideAdapter(
            zc.asynchronous.job.NeverRetry, (interfaces.IJob,),
            interfaces.IRetryPolicy, name='callback')
        cb = Job(multiply).addCallback(record)
        self.assertIsInstance(cb.getRetryPolicy(),
                              zc.asynchronous.job.NeverRetry)

    def test_job_annotations_persist(self):
        job = self.root['job'] = Job(multiply)
        job.annotations['zc.async.test'] = 'hi'
        transaction.commit()
        conn2 = self.db.open()
        try:
            other = conn2.get(job._p_oid)
            self.assertEqual(other.annotations['zc.async.test'], 'hi')
        finally:
            conn2.close()

    def test_conditional_callback_proxy(self):
        proxy = zc.asynchronous.job.ConditionalCallbackProxy(
            (over_100, Job(record)),
            (over_10, Job(multiply, 2)),
            Job(multiply, 0))
        job = self.root['job'] = Job(multiply, 5, 3)
        self.assertIs(job.addCallback(proxy), proxy)
        self.assertEqual(proxy.status, 'new-status')
        self.assertIsNone(proxy.job)
        transaction.commit()
        job()
        self.assertEqual(proxy.result, 30)
        self.assertIs(proxy.job.callable, multiply)
        self.assertEqual(calls, [])

    def test_concurrent_callback_add_conflicts(self):
        job = self.root['job'] = Job(multiply, 5, 3)
        transaction.commit()
        tm = transaction.TransactionManager()
        conn2 = self.db.open(transaction_manager=tm)
        try:
            job2 = conn2.get(job._p_oid)
            job2.addCallback(record)  # not yet committed
            job()  # completes in the other connection
            with self.assertRaises(ZODB.POSException.ConflictError):
                tm.commit()
            tm.abort()
            cb = job2.addCallback(record)  # now runs at once
            self.assertEqual(cb.status, 'completed-status')
            self.assertEqual(calls, [15])
        finally:
            tm.abort()
            conn2.close()

    def test_callback_added_during_callbacks_runs(self):
        job = self.root['job'] = Job(multiply, 5, 3)
        job.addCallback(Job(add_callback_to_parent))
        transaction.commit()
        job()
        self.assertEqual(job.status, 'completed-status')
        self.assertEqual(calls, [15])
        self.assertEqual(len(job.callbacks), 2)

    def test_result_commit_failure(self):
        # 3.1 step 7: the commit of the result fails; the default policy
        # does not retry "other" commit errors: the commit Failure is kept
        import zope.testing.loggingsupport
        handler = zope.testing.loggingsupport.InstalledHandler(
            'zc.async.events')
        try:
            job = self.root['job'] = Job(return_unpicklable)
            transaction.commit()
            res = job()
        finally:
            handler.uninstall()
        self.assertIsInstance(res, twisted.python.failure.Failure)
        self.assertEqual(job.status, 'completed-status')
        self.assertIs(job.result, res)
        messages = [r.getMessage() for r in handler.records
                    if r.levelname == 'INFO']
        self.assertTrue([m for m in messages if m.startswith(
            'Commit failed for %r' % (job,)) and
            'Prior to this, job succeeded with result: ' in m], messages)
        transaction.begin()
        self.assertEqual(job.status, 'completed-status')

    def test_setup_failure_A24(self):
        job = self.root['job'] = BadSetUpJob(multiply, 2)
        transaction.commit()
        job()
        self.assertTrue(job.result.check(ValueError))
        self.assertEqual(calls, [('tearDown', None)])

    def test_teardown_failure_ignored(self):
        import zope.testing.loggingsupport
        handler = zope.testing.loggingsupport.InstalledHandler(
            'zc.async.events')
        try:
            job = self.root['job'] = BadTearDownJob(multiply, 2, 3)
            transaction.commit()
            self.assertEqual(job(), 6)
        finally:
            handler.uninstall()
        self.assertEqual(job.status, 'completed-status')
        self.assertIn('CRITICAL', [r.levelname for r in handler.records])

    def test_add_callbacks_success_only_on_failure_A26(self):
        job = self.root['job'] = Job(fail_boom)
        transaction.commit()
        proxy = job.addCallbacks(success=record)
        nxt = proxy.addCallback(Job(record))
        transaction.commit()
        job()
        self.assertTrue(proxy.result.check(ValueError))
        self.assertTrue(nxt.result.check(ValueError))


def over_100(result):
    return result > 100


def over_10(result):
    return result > 10


def add_callback_to_parent(result):
    job = zc.asynchronous.local.getJob().parent
    job.addCallback(record)
    return result


def zero_from_failure(failure):
    return 0


class RetryPolicyTests(DBTestCase):

    def failure(self, exc):
        try:
            raise exc
        except Exception:
            return zc.asynchronous.twist.Failure()

    def test_four_times_numbers(self):
        policy_class = zc.asynchronous.job.RetryCommonFourTimes
        self.assertEqual(policy_class.max_interruptions, 9)
        self.assertEqual(policy_class.log_every, 5)
        job = self.root['job'] = Job(multiply)
        transaction.commit()
        policy = policy_class(job)
        self.assertIs(policy.parent, job)
        cache = {}
        answers = [policy.jobError(self.failure(
            ZODB.POSException.ConflictError()), cache) for i in range(5)]
        self.assertEqual([bool(a) for a in answers],
                         [True, True, True, True, False])
        self.assertFalse(policy.jobError(self.failure(ValueError()), {}))
        self.assertFalse(policy.commitError(self.failure(ValueError()), {}))
        results = [policy.interrupted() for i in range(10)]
        self.assertEqual([bool(r) for r in results], [True] * 9 + [False])
        self.assertEqual(policy.data['interruptions'], 10)

    def test_forever_numbers(self):
        cls = zc.asynchronous.job.RetryCommonForever
        self.assertIsNone(cls.max_interruptions)
        self.assertEqual((cls.other_commit_initial_backoff,
                          cls.other_commit_incremental_backoff,
                          cls.other_commit_max_backoff), (0, 1, 60))
        job = self.root['job'] = Job(multiply)
        transaction.commit()
        policy = cls(job)
        cache = {}
        for i in range(20):
            self.assertTrue(policy.jobError(self.failure(
                ZODB.POSException.ConflictError()), cache))
        self.assertFalse(policy.jobError(self.failure(ValueError()), {}))
        for i in range(12):
            self.assertTrue(policy.interrupted())
        # first "other" commit error: no back-off sleep (0 s)
        self.assertTrue(policy.commitError(self.failure(ValueError()), {}))

    def test_never_retry(self):
        job = self.root['job'] = Job(multiply)
        transaction.commit()
        policy = zc.asynchronous.job.NeverRetry(job)
        conflict = self.failure(ZODB.POSException.ConflictError())
        self.assertFalse(policy.jobError(conflict, {}))
        self.assertFalse(policy.commitError(conflict, {}))
        self.assertFalse(policy.interrupted())


class BackoffNumbersTests(DBTestCase):
    """3.4.2 / Appendix B back-off numbers, with ``time.sleep`` patched
    the way 1.5's job.txt does."""

    def setUp(self):
        super().setUp()
        import time as time_module
        self.sleeps = []
        self.time_module = time_module
        self.old_sleep = time_module.sleep
        time_module.sleep = self.sleeps.append

    def tearDown(self):
        self.time_module.sleep = self.old_sleep
        super().tearDown()

    def failure(self, exc):
        try:
            raise exc
        except Exception:
            return zc.asynchronous.twist.Failure()

    def test_client_disconnected_backoff(self):
        import ZEO.Exceptions
        job = self.root['job'] = Job(multiply)
        transaction.commit()
        for cls in (zc.asynchronous.job.RetryCommonFourTimes,
                    zc.asynchronous.job.RetryCommonForever):
            del self.sleeps[:]
            policy = cls(job)
            cache = {}
            for i in range(14):
                self.assertTrue(policy.jobError(self.failure(
                    ZEO.Exceptions.ClientDisconnected()), cache))
            self.assertEqual(self.sleeps, [5, 10, 15, 20, 25, 30, 35, 40, 45,
                                           50, 55, 60, 60, 60])
            self.assertEqual(cache['zeo_disconnected'], 14)
            self.assertIn('last_zeo_disconnected', cache)
            self.assertIn('first_active', cache)

    def test_forever_other_commit_backoff(self):
        job = self.root['job'] = Job(multiply)
        transaction.commit()
        policy = zc.asynchronous.job.RetryCommonForever(job)
        cache = {}
        for i in range(63):
            self.assertTrue(policy.commitError(self.failure(ValueError()),
                                               cache))
        self.assertEqual([s for s in self.sleeps if s][:3], [1, 2, 3])
        self.assertEqual(self.sleeps[-3:], [60, 60, 60])
        self.assertEqual(cache['other'], 63)

    def test_conflict_no_sleep(self):
        job = self.root['job'] = Job(multiply)
        transaction.commit()
        policy = zc.asynchronous.job.RetryCommonFourTimes(job)
        cache = {}
        for i in range(4):
            policy.jobError(self.failure(ZODB.POSException.ConflictError()),
                            cache)
        self.assertFalse([s for s in self.sleeps if s])
        self.assertEqual(cache['transaction_error'], 4)

    def test_update_data_keeps_first_active(self):
        job = self.root['job'] = Job(multiply)
        transaction.commit()
        policy = zc.asynchronous.job.RetryCommonFourTimes(job)
        early = datetime.datetime(2006, 1, 1, tzinfo=UTC)
        late = datetime.datetime(2007, 1, 1, tzinfo=UTC)
        policy.updateData({'first_active': early})
        policy.updateData({'first_active': late})
        self.assertEqual(policy.data['first_active'], early)

    def test_never_fail(self):
        utils = zc.asynchronous.utils
        attempts = []

        def call():
            attempts.append(1)
            if len(attempts) < 3:
                raise ValueError('again')
            return 'done'
        self.assertEqual(utils.never_fail(call, 'test', transaction.manager),
                         'done')
        self.assertEqual(self.sleeps, [5, 10])

    def test_try_five_times(self):
        utils = zc.asynchronous.utils
        attempts = []

        def call():
            attempts.append(1)
            raise ZODB.POSException.ConflictError()
        res = utils.try_five_times(call, 'test', transaction.manager)
        self.assertEqual(len(attempts), 5)
        self.assertTrue(res.check(ZODB.POSException.ConflictError))

        def boom():
            raise ValueError('x')
        self.assertTrue(utils.try_five_times(
            boom, 'test', transaction.manager).check(ValueError))

        def explode():
            raise SystemExit()
        with self.assertRaises(SystemExit):
            utils.try_five_times(explode, 'test', transaction.manager)

    def test_wait_for_system_recovery(self):
        utils = zc.asynchronous.utils
        res = utils.wait_for_system_recovery(fail_boom, 'test',
                                             transaction.manager)
        self.assertTrue(res.check(ValueError))


class CompositeArgsTests(unittest.TestCase):

    def test_bad_keyword(self):
        for helper in (zc.asynchronous.job.serial,
                       zc.asynchronous.job.parallel):
            with self.assertRaises(TypeError) as cm:
                helper(zero, one, foo=two)
            self.assertTrue(cm.exception.args[0].startswith(
                'only accepts one keyword argument, ``postprocess``'))

    def test_args_and_postprocess_inspectable(self):
        job = zc.asynchronous.job.serial(zero, one,
                                         postprocess=postprocess)
        self.assertEqual([j.callable for j in job.args], [zero, one])
        self.assertIs(job.kwargs['postprocess'].callable, postprocess)


class UtilsAndTestingTests(unittest.TestCase):

    def tearDown(self):
        testing.tearDownDatetime()

    def test_dt_to_long(self):
        utils = zc.asynchronous.utils
        older = datetime.datetime(2006, 8, 10, 15, 44, 22, tzinfo=UTC)
        newer = datetime.datetime(2006, 8, 10, 15, 44, 23, tzinfo=UTC)
        self.assertLess(utils.dt_to_long(newer), utils.dt_to_long(older))
        self.assertIsInstance(utils.dt_to_long(newer), int)
        self.assertEqual(utils.long_to_dt(utils.dt_to_long(older)), older)
        utils.dt_to_long(datetime.datetime.min)
        utils.dt_to_long(datetime.datetime.max)

    def test_custom_repr(self):
        utils = zc.asynchronous.utils
        name = multiply.__module__
        self.assertEqual(utils.custom_repr(multiply), name + '.multiply')
        self.assertEqual(utils.custom_repr(5), '5')
        self.assertEqual(utils.custom_repr(Job(multiply))[:31],
                         'zc.async.job.Job (oid ?, db ?)')

    def test_takecount(self):
        utils = zc.asynchronous.utils
        self.assertEqual(list(utils.takecount(range(10), 3)), [0, 1, 2])
        with self.assertRaises(ValueError):
            list(utils.takecount(range(10), -1))

    def test_frozen_clock_start(self):
        testing.setUpDatetime()
        self.assertEqual(zc.asynchronous.utils.now(), START)
        self.assertEqual(datetime.datetime.now(UTC), START)
        later = datetime.datetime(2006, 8, 10, 16, 0, tzinfo=UTC)
        testing.set_now(later)
        self.assertEqual(zc.asynchronous.utils.now(), later)
        testing.tearDownDatetime()
        self.assertGreater(zc.asynchronous.utils.now().year, 2020)

    def test_waiters_time_out(self):
        job = Job(multiply)
        with self.assertRaises(AssertionError) as cm:
            testing.wait_for_result(job, seconds=0.05)
        self.assertEqual(str(cm.exception), 'job never completed')

    def test_tear_down_error_is_runtime_error(self):
        self.assertTrue(issubclass(testing.TearDownDispatcherError,
                                   RuntimeError))


# --------------------------------------------------------------- queues

class QueueTests(DBTestCase):

    def setUp(self):
        super().setUp()
        testing.setUpDatetime()

    def test_queues_mapping(self):
        queues = self.root[interfaces.KEY]
        self.assertEqual(self.queue.name, '')
        self.assertIs(self.queue.parent, queues)
        with self.assertRaises(ValueError) as cm:
            queues['x'] = object()
        self.assertEqual(cm.exception.args[0], 'value must be IQueue')
        self.assertEqual(list(queues), [''])
        q = queues.pop('')
        self.assertIsNone(q.name)
        self.assertIsNone(q.parent)

    def test_queue_defaults(self):
        self.assertEqual(len(self.queue), 0)
        self.assertFalse(self.queue)
        self.assertEqual(len(self.queue.quotas), 0)
        self.assertEqual(len(self.queue.dispatchers), 0)
        self.assertTrue(interfaces.IQueue.providedBy(self.queue))

    def test_put(self):
        job = self.queue.put(multiply)
        self.assertIsInstance(job, Job)
        self.assertEqual(job.status, 'pending-status')
        self.assertIsNone(job.result)
        self.assertIs(job.parent, self.queue)
        self.assertIs(job.queue, self.queue)
        self.assertEqual(job.begin_after, START)
        self.assertIsNone(job.begin_by)
        self.assertEqual(job.assignerUUID,
                         zc.asynchronous.instanceuuid.UUID)  # A5
        self.assertEqual(len(self.queue), 1)
        self.assertIs(self.queue[0], job)
        transaction.commit()
        self.assertIsNotNone(job._p_oid)

    def test_put_twice(self):
        job = self.queue.put(multiply)
        with self.assertRaises(ValueError) as cm:
            self.queue.put(job)
        self.assertMessage(cm, 'cannot add already-assigned job')

    def test_put_unknown_quota(self):
        job = Job(multiply)
        job.quota_names = ('nope',)
        with self.assertRaises(ValueError) as cm:
            self.queue.put(job)
        self.assertEqual(cm.exception.args[:2], ('unknown quota name', 'nope'))
        self.assertEqual(len(self.queue), 0)

    def test_put_naive_begin_after(self):
        with self.assertRaises(ValueError) as cm:
            self.queue.put(multiply,
                           begin_after=datetime.datetime(2006, 8, 10))
        self.assertMessage(cm, 'cannot use timezone-naive values')
        self.assertEqual(len(self.queue), 0)

    def test_put_est_normalised(self):
        job = self.queue.put(
            multiply,
            begin_after=datetime.datetime(2006, 8, 10, 11, 30, tzinfo=EST))
        self.assertEqual(job.begin_after,
                         datetime.datetime(2006, 8, 10, 16, 30, tzinfo=UTC))

    def test_put_keeps_job_begin_after(self):
        job = Job(multiply)
        job.begin_after = START + datetime.timedelta(hours=2)
        self.queue.put(job)
        self.assertEqual(job.begin_after,
                         START + datetime.timedelta(hours=2))
        self.assertIsNone(self.queue.claim())

    def test_interfaces_verify(self):
        verify = zope.interface.verify.verifyObject
        self.assertTrue(verify(interfaces.IQueue, self.queue))
        self.queue.quotas.create('q')
        self.assertTrue(verify(interfaces.IQuota, self.queue.quotas['q']))
        agent = zc.asynchronous.agent.Agent()
        self.assertTrue(verify(interfaces.IAgent, agent))
        self.assertTrue(verify(interfaces.ICompletedCollection,
                               agent.completed))

    def test_bad_jobs_refused_at_put(self):
        with self.assertRaises(TypeError):
            self.queue.put(lambda: 1)
        with self.assertRaises(TypeError):
            self.queue.put(Job(record, lambda: 2))
        self.assertEqual(len(self.queue), 0)

    def test_put_options(self):
        import logging
        job = self.queue.put(
            multiply, begin_by=datetime.timedelta(hours=1),
            failure_log_level=logging.WARNING,
            retry_policy_factory=zc.asynchronous.job.NeverRetry)
        self.assertEqual(job.begin_by, datetime.timedelta(hours=1))
        self.assertEqual(job.failure_log_level, logging.WARNING)
        self.assertIs(job.retry_policy_factory, zc.asynchronous.job.NeverRetry)

    def test_order_past_and_future(self):
        first = self.queue.put(Job(record, 1))
        future = self.queue.put(
            Job(record, 2), begin_after=START + datetime.timedelta(hours=1))
        past = self.queue.put(
            Job(record, 3), begin_after=START - datetime.timedelta(hours=1))
        # past does not jump ahead of earlier due jobs; keeps its value
        self.assertEqual(list(self.queue), [first, past, future])
        self.assertEqual(past.begin_after,
                         START - datetime.timedelta(hours=1))
        self.assertIs(self.queue[-1], future)
        self.assertIs(self.queue.claim(), first)
        self.assertIsNone(first.parent)
        self.assertIs(self.queue.claim(), past)
        self.assertIsNone(self.queue.claim())
        self.assertEqual(self.queue.claim(default='nothing'), 'nothing')
        testing.set_now(START + datetime.timedelta(hours=1))
        self.assertIs(self.queue.claim(), future)
        self.assertEqual(len(self.queue), 0)

    def test_tie_scheduled_first(self):
        due = self.queue.put(Job(record, 1))
        scheduled = self.queue.put(
            Job(record, 2), begin_after=START + datetime.timedelta(hours=1))
        testing.set_now(START + datetime.timedelta(hours=1))
        later = self.queue.put(Job(record, 3))
        self.assertEqual(list(self.queue), [due, scheduled, later])

    def test_disabled_mapping_methods(self):
        queues = self.root[interfaces.KEY]
        with self.assertRaises(Exception):
            queues.copy()
        quotas = self.queue.quotas
        quotas.create('q')
        for call in (lambda: quotas.update({}), lambda: quotas.pop('q'),
                     lambda: quotas.__delitem__('q'), quotas.copy):
            with self.assertRaises(Exception):
                call()
        self.assertIn('q', quotas)
        quotas.remove('q')
        self.assertNotIn('q', quotas)
        import uuid
        u = uuid.uuid1()
        dispatchers = self.queue.dispatchers
        dispatchers.register(u)
        for call in (lambda: dispatchers.update({}),
                     lambda: dispatchers.pop(u),
                     lambda: dispatchers.__delitem__(u), dispatchers.copy):
            with self.assertRaises(Exception):
                call()
        self.assertIn(u, dispatchers)

    def test_timeout_wrapper_must_pass_filter(self):
        job = self.queue.put(Job(multiply),
                             begin_by=datetime.timedelta(seconds=1))
        testing.set_now(START + datetime.timedelta(seconds=5))
        self.assertIsNone(self.queue.claim(lambda j: j.callable is multiply))
        self.assertIs(self.queue[0], job)
        wrapper = self.queue.claim()
        self.assertIsNot(wrapper, job)
        self.assertEqual(wrapper.assignerUUID,
                         zc.asynchronous.instanceuuid.UUID)

    def test_quota_clean_drops_rescheduled(self):
        self.queue.quotas.create('q')
        job = Job(multiply)
        job.quota_names = ('q',)
        self.queue.put(job)
        self.assertIs(self.queue.claim(), job)
        quota = self.queue.quotas['q']
        self.assertEqual(list(quota), [job])
        # rescheduled for later: pending again with a future begin_after
        self.queue.put(job, begin_after=START + datetime.timedelta(hours=1))
        quota.clean()
        self.assertEqual(list(quota), [])

    def test_claim_filter(self):
        a = self.queue.put(Job(record, 1))
        b = self.queue.put(Job(multiply, 2))
        got = self.queue.claim(lambda job: job.callable is multiply)
        self.assertIs(got, b)
        self.assertEqual(list(self.queue), [a])

    def test_pull_and_remove(self):
        a = self.queue.put(Job(record, 1))
        b = self.queue.put(Job(record, 2))
        c = self.queue.put(Job(record, 3))
        self.assertIs(self.queue.pull(-1), c)
        self.assertIsNone(c.parent)
        self.assertEqual(c.status, 'new-status')
        with self.assertRaises(IndexError):
            self.queue.pull(5)
        self.queue.remove(a)
        self.assertEqual(list(self.queue), [b])
        with self.assertRaises(LookupError) as cm:
            self.queue.remove(a)
        self.assertEqual(cm.exception.args, ('item not in queue', a))
        # a cancelled job may be put again
        self.assertIs(self.queue.put(a), a)

    def test_put_back_served_first(self):
        a = self.queue.put(Job(record, 1))
        transaction.commit()
        b = self.queue.pull()
        self.assertIs(b, a)
        c = self.queue.put(Job(record, 2))
        self.queue.putBack(a)
        self.assertEqual(list(self.queue), [a, c])
        self.assertIs(self.queue.claim(), a)

    def test_begin_by_expired_gives_timeout_wrapper(self):
        job = self.queue.put(Job(multiply, 2, 3),
                             begin_by=datetime.timedelta(seconds=10))
        job.addCallback(record)
        transaction.commit()
        testing.set_now(START + datetime.timedelta(seconds=11))
        wrapper = self.queue.claim()
        self.assertIsNot(wrapper, job)
        self.assertIsNone(job.parent)
        self.assertEqual(len(self.queue), 0)
        self.assertEqual(wrapper.begin_after,
                         START + datetime.timedelta(seconds=11))
        self.root['wrapper'] = wrapper
        transaction.commit()
        wrapper()
        self.assertEqual(job.status, 'completed-status')
        self.assertTrue(job.result.check(interfaces.TimeoutError))
        self.assertTrue(job.result.getTraceback().rstrip().endswith(
            'zc.async.interfaces.TimeoutError:'), job.result.getTraceback())
        self.assertEqual(len(calls), 1)

    def test_get_default_queue_adapter(self):
        zope.component.provideAdapter(zc.asynchronous.queue.getDefaultQueue)
        self.assertIs(interfaces.IQueue(self.root), self.queue)


class QuotaTests(DBTestCase):

    def setUp(self):
        super().setUp()
        testing.setUpDatetime()

    def test_create_defaults_and_errors(self):
        quotas = self.queue.quotas
        quotas.create('test')
        quota = quotas['test']
        self.assertEqual((quota.name, quota.size), ('test', 1))
        self.assertIs(quota.parent, quotas)
        self.assertIs(quotas.__parent__, self.queue)
        self.assertFalse(quota.filled)
        with self.assertRaises(ValueError) as cm:
            quota.add(object())
        self.assertEqual(cm.exception.args[0], 'must be IJob')
        job = Job(multiply)
        with self.assertRaises(ValueError) as cm:
            quota.add(job)
        self.assertEqual(cm.exception.args[0],
                         'quota name must be in quota_names')
        job.quota_names = ('test',)
        quota.add(job)
        quota.add(job)  # no-op
        self.assertEqual(len(quota), 1)
        self.assertTrue(quota.filled)
        other = Job(multiply)
        other.quota_names = ('test',)
        with self.assertRaises(ValueError) as cm:
            quota.add(other)
        self.assertEqual(cm.exception.args[0], 'Quota is filled')
        with self.assertRaises(Exception):
            quotas['x'] = quota

    def test_claim_respects_quota_and_remove(self):
        self.queue.quotas.create('test')
        a = Job(record, 1)
        a.quota_names = ('test',)
        b = Job(record, 2)
        b.quota_names = ('test',)
        self.queue.put(a)
        self.queue.put(b)
        self.assertIs(self.queue.claim(), a)
        self.assertIsNone(self.queue.claim())
        self.queue.quotas['test'].size = 2
        self.assertIs(self.queue.claim(), b)

    def test_quota_clean_and_lowering(self):
        quotas = self.queue.quotas
        quotas.create('test', size=2)
        jobs = []
        for i in range(3):
            job = Job(record, i)
            job.quota_names = ('test',)
            jobs.append(self.queue.put(job))
        self.assertIs(self.queue.claim(), jobs[0])
        self.assertIs(self.queue.claim(), jobs[1])
        self.assertIsNone(self.queue.claim())
        quotas['test'].size = 1
        self.root['j0'] = jobs[0]
        transaction.commit()
        jobs[0]()  # completes: leaves the quota once cleaned
        self.assertIsNone(self.queue.claim())  # still 1 >= 1
        self.root['j1'] = jobs[1]
        transaction.commit()
        jobs[1]()
        self.assertIs(self.queue.claim(), jobs[2])
        quota = quotas['test']
        self.assertEqual(list(quota), [jobs[2]])

    def test_pending_quota_names_accepted_when_known(self):
        self.queue.quotas.create('q')
        job = self.queue.put(Job(multiply))
        job.quota_names = ('q',)
        self.assertEqual(job.quota_names, ('q',))

    def test_removed_quota_is_ignored(self):
        self.queue.quotas.create('test')
        a = Job(record, 1)
        a.quota_names = ('test',)
        b = Job(record, 2)
        b.quota_names = ('test',)
        self.queue.put(a)
        self.queue.put(b)
        self.assertIs(self.queue.claim(), a)
        self.queue.quotas.remove('test')
        self.assertIs(self.queue.claim(), b)

    def test_pending_quota_names_checked(self):
        job = self.queue.put(Job(multiply))
        with self.assertRaises(ValueError) as cm:
            job.quota_names = ('nope',)
        self.assertEqual(cm.exception.args[:2], ('unknown quota name', 'nope'))
        self.assertEqual(job.quota_names, ())


class DispatcherAgentsTests(DBTestCase):

    def setUp(self):
        super().setUp()
        testing.setUpDatetime()
        import uuid
        self.uuid = uuid.uuid1()

    def test_register_and_defaults(self):
        dispatchers = self.queue.dispatchers
        dispatchers.register(self.uuid)
        da = dispatchers[self.uuid]
        self.assertEqual(da.UUID, self.uuid)
        self.assertIs(da.parent, self.queue)
        self.assertEqual(da.ping_interval, datetime.timedelta(seconds=30))
        self.assertEqual(da.ping_death_interval,
                         datetime.timedelta(seconds=60))
        self.assertFalse(da.activated)
        self.assertFalse(da.dead)
        with self.assertRaises(ValueError) as cm:
            dispatchers.register(self.uuid)
        self.assertEqual(cm.exception.args[0], 'UUID already registered')
        with self.assertRaises(Exception):
            dispatchers[self.uuid] = da

    def test_activate_deactivate_messages(self):
        self.queue.dispatchers.register(self.uuid)
        da = self.queue.dispatchers[self.uuid]
        with self.assertRaises(ValueError) as cm:
            da.deactivate()
        self.assertEqual(cm.exception.args[0], 'Not activated')
        da.activate()
        self.assertTrue(da.activated)
        with self.assertRaises(ValueError) as cm:
            da.activate()
        self.assertEqual(cm.exception.args[0], 'Already activated')
        with self.assertRaises(ValueError) as cm:
            self.queue.dispatchers.unregister(self.uuid)
        self.assertEqual(cm.exception.args[0], 'UUID is activated.')
        da.deactivate()
        self.assertFalse(da.activated)

    def test_unregister_fires_event_A6(self):
        import zope.component.eventtesting
        zope.component.eventtesting.setUp()
        self.queue.dispatchers.register(self.uuid)
        da = self.queue.dispatchers[self.uuid]
        self.queue.dispatchers.unregister(self.uuid)
        self.assertNotIn(self.uuid, self.queue.dispatchers)
        events = zope.component.eventtesting.getEvents(
            interfaces.IDispatcherUnregistered)
        self.assertEqual([e.object for e in events], [da])

    def test_agent_setting_rules(self):
        self.queue.dispatchers.register(self.uuid)
        da = self.queue.dispatchers[self.uuid]
        with self.assertRaises(ValueError) as cm:
            da['main'] = object()
        self.assertEqual(cm.exception.args[0], 'value must be IAgent')
        agent = da['main'] = zc.asynchronous.agent.Agent()
        self.assertEqual(agent.name, 'main')
        self.assertIs(agent.parent, da)
        self.assertIs(agent.queue, self.queue)

    def test_deactivate_puts_unstarted_jobs_back(self):
        self.queue.dispatchers.register(self.uuid)
        da = self.queue.dispatchers[self.uuid]
        agent = da['main'] = zc.asynchronous.agent.Agent()
        da.activate()
        job = self.queue.put(Job(multiply))
        begin_after = job.begin_after
        self.assertIs(agent.claimJob(), job)
        with self.assertRaises(ValueError) as cm:
            da['main'] = zc.asynchronous.agent.Agent()
        self.assertEqual(cm.exception.args[0],
                         'cannot remove an agent with active jobs')
        transaction.commit()
        testing.set_now(START + datetime.timedelta(seconds=5))
        da.deactivate()
        self.assertEqual(len(agent), 0)
        self.assertEqual(job.status, 'pending-status')
        self.assertIs(self.queue[0], job)
        self.assertEqual(job.begin_after, begin_after)
        self.assertEqual(job.assignerUUID, zc.asynchronous.instanceuuid.UUID)

    def test_stale_inactive_record_is_dead(self):
        self.queue.dispatchers.register(self.uuid)
        da = self.queue.dispatchers[self.uuid]
        da.activate()
        self.queue.dispatchers.ping(self.uuid)
        da.deactivate()
        testing.set_now(START + datetime.timedelta(seconds=61))
        self.assertTrue(da.dead)

    def test_pop_refuses_agent_with_jobs(self):
        self.queue.dispatchers.register(self.uuid)
        da = self.queue.dispatchers[self.uuid]
        agent = da['main'] = zc.asynchronous.agent.Agent()
        da.activate()
        self.queue.put(Job(multiply))
        agent.claimJob()
        with self.assertRaises(ValueError) as cm:
            da.pop('main')
        self.assertEqual(cm.exception.args[0],
                         'cannot remove an agent with active jobs')
        full = zc.asynchronous.agent.Agent()
        self.queue.put(Job(multiply))
        self.queue.dispatchers.register(uuid_module.uuid1())
        other = [d for d in self.queue.dispatchers.values() if d is not da][0]
        other['x'] = full
        other.activate()
        full.claimJob()
        with self.assertRaises(ValueError) as cm:
            da['other'] = full
        self.assertIn(cm.exception.args[0],
                      ('cannot add an agent with active jobs',
                       'cannot remove an agent with active jobs'))

    def test_ping_unactivated_reactivates(self):
        import zope.component.eventtesting
        zope.component.eventtesting.setUp()
        self.queue.dispatchers.register(self.uuid)
        da = self.queue.dispatchers[self.uuid]
        self.queue.dispatchers.ping(self.uuid)
        self.assertTrue(da.activated)
        self.assertEqual(len(zope.component.eventtesting.getEvents(
            interfaces.IDispatcherReactivated)), 1)

    def test_dead_after_death_interval(self):
        self.queue.dispatchers.register(self.uuid)
        da = self.queue.dispatchers[self.uuid]
        da.activate()
        self.queue.dispatchers.ping(self.uuid)
        self.assertEqual(da.last_ping.value, START)
        testing.set_now(START + datetime.timedelta(seconds=61))
        self.assertTrue(da.dead)
        self.queue.dispatchers.ping(self.uuid)
        self.assertFalse(da.dead)


class AgentTests(DBTestCase):

    def setUp(self):
        super().setUp()
        testing.setUpDatetime()
        import uuid
        self.uuid = uuid.uuid1()
        self.queue.dispatchers.register(self.uuid)
        self.da = self.queue.dispatchers[self.uuid]

    def test_defaults(self):
        agent = zc.asynchronous.agent.Agent()
        self.assertEqual(agent.size, 3)
        self.assertIsNone(agent.chooser)
        self.assertIsNone(agent.filter)
        self.assertTrue(interfaces.IFilterAgent.providedBy(agent))
        self.assertEqual(len(agent), 0)
        self.assertEqual(len(agent.completed), 0)

    def test_chooser_and_filter_exclusive(self):
        agent = zc.asynchronous.agent.Agent(
            chooser=zc.asynchronous.agent.chooseFirst)
        self.assertFalse(interfaces.IFilterAgent.providedBy(agent))
        with self.assertRaises(ValueError) as cm:
            agent.filter = bool
        self.assertEqual(cm.exception.args[0],
                         'cannot set both chooser and filter to non-None')
        with self.assertRaises(ValueError):
            zc.asynchronous.agent.Agent(chooser=bool, filter=bool)

    def test_claim_job(self):
        agent = self.da['main'] = zc.asynchronous.agent.Agent(size=1)
        a = self.queue.put(Job(record, 1))
        b = self.queue.put(Job(record, 2))
        self.assertIsNone(agent.claimJob())  # not activated
        self.da.activate()
        self.assertIs(agent.claimJob(), a)
        self.assertEqual(a.status, 'assigned-status')
        self.assertIs(a.parent, agent)
        self.assertIs(a.agent, agent)
        self.assertIs(a.queue, self.queue)
        self.assertIsNone(agent.claimJob())  # full
        self.assertEqual(agent.index(a), 0)
        self.assertIs(agent.pull(), a)
        self.assertIsNone(a.parent)
        self.assertIs(agent.claimJob(), b)

    def claimed(self, job, **kw):
        agent = self.da.get('main')
        if agent is None:
            agent = self.da['main'] = zc.asynchronous.agent.Agent()
            self.da.activate()
        self.queue.put(job, **kw)
        self.assertIs(agent.claimJob(), job)
        transaction.commit()
        return job

    def test_completed_retention_about_a_week(self):
        # 3.11: with steady traffic a completed job stays about 7-8 days
        completed = zc.asynchronous.agent.Agent().completed
        first = Job(multiply)
        completed.add(first)
        self.assertEqual(first.initial_callbacks_end, START)
        added = {0: first}
        for hour in range(1, 9 * 24 + 1):  # a job an hour for 9 days
            testing.set_now(START + datetime.timedelta(hours=hour))
            added[hour] = Job(multiply)
            completed.add(added[hour])
        remaining = list(completed)
        self.assertEqual(remaining[:3], [added[216], added[215], added[214]])
        self.assertNotIn(first, remaining)  # 9 days old: gone
        self.assertIn(added[3 * 24], remaining)  # 6 days old: kept
        start = START + datetime.timedelta(days=6)
        stop = START + datetime.timedelta(days=6, hours=-2)
        self.assertEqual(list(completed.iter(start, stop)),
                         [added[144], added[143], added[142]])
        self.assertIs(completed.first(), added[216])

    def test_reschedule_answers(self):
        job = self.claimed(Job(fail_boom),
                           retry_policy_factory=RescheduleNaive)
        other = self.queue.put(Job(multiply))
        self.assertIs(job(), job)
        self.assertEqual(job.status, 'pending-status')
        self.assertIsNone(job.active_start)
        self.assertEqual(job.begin_after,
                         datetime.datetime(2006, 8, 10, 16, 0, tzinfo=UTC))
        self.assertEqual(list(self.queue), [other, job])
        self.assertEqual(len(self.da['main']), 0)
        self.queue.remove(other)
        now_job = self.claimed(Job(fail_boom),
                               retry_policy_factory=RescheduleNow)
        self.assertIs(now_job(), now_job)
        self.assertIs(self.queue[0], now_job)
        self.assertEqual(now_job.status, 'pending-status')

    def test_job_completed(self):
        agent = self.da['main'] = zc.asynchronous.agent.Agent()
        self.da.activate()
        self.queue.put(Job(multiply, 5, 3))
        job = agent.claimJob()
        transaction.commit()
        job()
        self.assertEqual(len(agent), 0)
        self.assertEqual(list(agent.completed), [job])
        self.assertIs(job.parent, agent)
        self.assertIsNotNone(job.key)
        self.assertEqual(job.initial_callbacks_end, START)


class InstallerTests(DBTestCase):

    def test_queue_installer_events(self):
        import zope.component.eventtesting
        import zope.event
        zope.component.eventtesting.setUp()
        del self.root[interfaces.KEY]
        transaction.commit()
        installer = zc.asynchronous.subscribers.QueueInstaller(
            queues=('', 'other'))
        installer(interfaces.DatabaseOpened(self.db))
        transaction.begin()
        queues = self.root[interfaces.KEY]
        self.assertEqual(sorted(queues), ['', 'other'])
        added = zope.component.eventtesting.getEvents(
            interfaces.IObjectAdded)
        self.assertEqual([(e.object._p_oid, e.name) for e in added],
                         [(queues._p_oid, interfaces.KEY),
                          (queues['']._p_oid, ''),
                          (queues['other']._p_oid, 'other')])
        self.assertEqual([e.parent._p_oid for e in added],
                         [self.root._p_oid, queues._p_oid, queues._p_oid])
        installer(interfaces.DatabaseOpened(self.db))  # idempotent
        self.assertEqual(len(zope.component.eventtesting.getEvents(
            interfaces.IObjectAdded)), 3)

    def test_agent_installer_queue_names(self):
        testing.setUpDatetime()
        import uuid
        other = self.root[interfaces.KEY]['other'] = (
            zc.asynchronous.queue.Queue())
        transaction.commit()
        installer = zc.asynchronous.subscribers.AgentInstaller(
            'special', size=1, queue_names=('other',))
        zope.component.provideHandler(installer)
        u = uuid.uuid1()
        for q in (self.queue, other):
            q.dispatchers.register(u)
            q.dispatchers[u].activate()
        self.assertEqual(list(other.dispatchers[u]), ['special'])
        self.assertEqual(other.dispatchers[u]['special'].size, 1)
        self.assertEqual(list(self.queue.dispatchers[u]), [])

    def test_queue_installer_factory(self):
        made = []

        def factory(conn, name):
            made.append(name)
            return zc.asynchronous.queue.Queue()
        del self.root[interfaces.KEY]
        transaction.commit()
        zc.asynchronous.subscribers.QueueInstaller(
            queues=('a',), factory=factory)(
                interfaces.DatabaseOpened(self.db))
        self.assertEqual(made, ['a'])
        transaction.begin()
        self.assertEqual(list(self.root[interfaces.KEY]), ['a'])

    def test_main_agent_handler(self):
        testing.setUpDatetime()
        import uuid
        zope.component.provideHandler(
            zc.asynchronous.agent.addMainAgentActivationHandler)
        u = uuid.uuid1()
        self.queue.dispatchers.register(u)
        da = self.queue.dispatchers[u]
        da.activate()
        agent = da['main']
        self.assertEqual(agent.size, 3)
        da.deactivate()
        da.activate()
        self.assertIs(da['main'], agent)


class DispatcherUnitTests(DBTestCase):

    def test_defaults_and_errors(self):
        d = zc.asynchronous.dispatcher.Dispatcher(self.db)
        self.assertIs(d.db, self.db)
        self.assertEqual(d.poll_interval, 5)
        self.assertEqual(d.UUID, zc.asynchronous.instanceuuid.UUID)
        self.assertEqual(d.polls.size, 400)
        self.assertEqual(d.jobs.size, 200)
        self.assertIs(d.activated, False)
        self.assertIs(zc.asynchronous.dispatcher.get(), d)
        self.assertIs(zc.asynchronous.dispatcher.get(d.UUID), d)
        with self.assertRaises(ValueError) as cm:
            zc.asynchronous.dispatcher.Dispatcher(self.db)
        self.assertEqual(cm.exception.args[0],
                         'dispatcher for this UUID is already registered')
        with self.assertRaises(ValueError) as cm:
            d.deactivate()
        self.assertEqual(cm.exception.args[0], 'not activated')
        info = d.getStatusInfo()
        self.assertEqual(info['status'], 'STOPPED')
        self.assertEqual(set(info), {'status', 'poll interval',
                                     'time since last poll', 'uptime',
                                     'uuid'})
        self.assertEqual(info['poll interval'],
                         datetime.timedelta(seconds=5))
        self.assertIsNone(info['uptime'])
        self.assertIs(zc.asynchronous.dispatcher.pop(), d)
        self.assertIsNone(zc.asynchronous.dispatcher.get())


# ----------------------------------------------- dispatcher + test reactor

class DispatcherReactorTests(ReactorTestCase):

    def test_pool_sizing_7_8_11_7(self):
        # 3.5.1; reactor already started in setUp after activate
        self.assertEqual(self.db.getPoolSize(), 8)
        self.reactor.time_flies(1)
        self.assertEqual(self.db.getPoolSize(), 11)
        self.reactor.stop()
        self.assertEqual(self.db.getPoolSize(), 7)
        self.assertIs(self.dispatcher.activated, False)
        transaction.begin()
        self.assertFalse(self.da().activated)

    def test_active_job_ids_filters(self):
        job = self.queue.put(Job(wait_then_42))
        transaction.commit()
        self.reactor.time_flies(1)
        testing.wait_for_start(job)
        jobid = zc.asynchronous.dispatcher.getId(job)
        self.assertEqual(self.dispatcher.getActiveJobIds(queue=''), [jobid])
        self.assertEqual(
            self.dispatcher.getActiveJobIds(queue='', agent='main'), [jobid])
        self.assertEqual(self.dispatcher.getActiveJobIds(queue='x'), [])
        gate('go').set()
        self.reactor.wait_for(job)

    def test_wait_for_prints_time_out(self):
        import contextlib
        import io
        job = self.queue.put(Job(wait_then_42))
        transaction.commit()
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            self.reactor.wait_for(job, attempts=2)
        self.assertEqual(out.getvalue(), 'TIME OUT\n')
        gate('go').set()
        self.reactor.wait_for(job)
        self.assertEqual(job.result, 42)

    def test_get_poll_times_out(self):
        with self.assertRaises(AssertionError) as cm:
            testing.get_poll(self.dispatcher, seconds=0.05)
        self.assertEqual(str(cm.exception), 'no poll!')

    def test_stuck_before_first_poll(self):
        testing.set_now(START + datetime.timedelta(seconds=6))
        self.assertEqual(self.dispatcher.getStatusInfo()['status'], 'STUCK')

    def test_activate_twice(self):
        with self.assertRaises(ValueError) as cm:
            self.dispatcher.activate()
        self.assertEqual(cm.exception.args[0], 'already activated')

    def test_first_poll_shape(self):
        self.assertEqual(self.dispatcher.getStatusInfo()['status'],
                         'STARTING')
        self.reactor.time_flies(1)
        poll = self.dispatcher.getPollInfo()
        self.assertEqual(dict(poll), {'': {'main': {
            'active jobs': [], 'error': None, 'len': 0, 'new jobs': [],
            'size': 3}}})
        self.assertIsInstance(poll.key, int)
        self.assertIsInstance(poll.utc_timestamp, datetime.datetime)
        da = self.da()
        self.assertTrue(da.activated)
        self.assertEqual(list(da), ['main'])
        self.assertEqual(da.last_ping.value, START)
        self.assertEqual(self.dispatcher.activated,
                         START.replace(tzinfo=None))
        info = self.dispatcher.getStatusInfo()
        self.assertEqual(info['status'], 'RUNNING')
        self.assertEqual(info['uuid'], self.dispatcher.UUID)
        testing.set_now(START + datetime.timedelta(seconds=10))
        self.assertEqual(self.dispatcher.getStatusInfo()['status'], 'STUCK')

    def test_no_queues_poll_is_empty(self):
        del self.root[interfaces.KEY]
        transaction.commit()
        self.reactor.time_flies(1)
        self.assertEqual(dict(self.dispatcher.getPollInfo()), {})

    def test_frozen_clock(self):
        self.assertEqual(zc.asynchronous.utils.now(), START)
        self.assertEqual(datetime.datetime.now(UTC), START)
        self.reactor.time_flies(5)
        self.assertEqual(zc.asynchronous.utils.now(),
                         START + datetime.timedelta(seconds=5))

    def test_not_started_reactor(self):
        reactor = testing.Reactor()
        with self.assertRaises(ValueError) as cm:
            reactor.time_flies(1)
        self.assertEqual(cm.exception.args[0], 'not started')

    def test_run_job_and_job_info(self):
        job = self.run_job(Job(multiply, 5, 3))
        self.assertEqual(job.result, 15)
        self.assertEqual(job.status, 'completed-status')
        self.assertEqual(testing.wait_for_result(job), 15)
        agent = self.da()['main']
        self.assertEqual(len(agent), 0)
        self.assertIn(job, list(agent.completed))
        jobid = zc.asynchronous.dispatcher.getId(job)
        self.assertEqual(jobid, (ZODB.utils.u64(job._p_oid), 'unnamed'))
        info = self.dispatcher.getJobInfo(*jobid)
        self.assertTrue({'agent', 'call', 'completed', 'failed', 'poll id',
                         'queue', 'quota names', 'reassigned', 'result',
                         'started', 'thread'} <= set(info), info)
        self.assertEqual(info['agent'], 'main')
        self.assertEqual(info['queue'], '')
        self.assertFalse(info['failed'])
        self.assertFalse(info['reassigned'])
        self.assertEqual(info['result'], '15')
        self.assertEqual(info['call'], repr(job))
        self.assertIsNone(info['completed'].tzinfo)
        poll_new = [p for p in self.dispatcher.iterPolls()
                    if p['']['main']['new jobs']]
        self.assertEqual(poll_new[0]['']['main']['new jobs'], [jobid])
        self.assertEqual(self.dispatcher.getActiveJobIds(), [])
        stats = self.dispatcher.getStatistics()
        self.assertEqual(stats['successful'], 1)
        self.assertEqual(stats['failed'], 0)
        self.assertLessEqual(stats['statistics start'],
                             stats['statistics end'])  # A13

    def test_failed_job_info(self):
        job = self.run_job(Job(fail_boom))
        self.assertTrue(job.result.check(ValueError))
        info = self.dispatcher.getJobInfo(
            *zc.asynchronous.dispatcher.getId(job))
        self.assertTrue(info['failed'])
        self.assertIn('ValueError', info['result'])

    def test_local_inside_job(self):
        job = self.run_job(Job(show_status))
        self.assertEqual(job.result, 'active-status')

    def test_local_outside_job(self):
        with self.assertRaises(ValueError) as cm:
            zc.asynchronous.local.setLiveAnnotation('a', 1)
        self.assertEqual(cm.exception.args[0], 'not initialized')
        with self.assertRaises(ValueError):
            zc.asynchronous.local.getLiveAnnotation('a')
        self.assertIsNone(zc.asynchronous.local.getJob())

    def test_hand_off_returns_job_42(self):
        job = self.queue.put(Job(hand_off))
        transaction.commit()
        self.wait_for(self.reactor, job)
        self.assertEqual(job.result, 42)
        self.assertEqual(len(self.da()['main']), 0)

    def test_callback_chain_in_dispatcher(self):
        job = self.queue.put(Job(multiply, 5, 3))
        cb = job.addCallback(Job(multiply, 4))
        cb2 = cb.addCallback(record)
        transaction.commit()
        self.reactor.wait_for(job)
        self.assertEqual((job.result, cb.result, cb2.result), (15, 60, 60))

    def test_serial_examples(self):
        job = self.queue.put(zc.asynchronous.job.serial(
            zero, one, two, postprocess=postprocess))
        job2 = self.queue.put(zc.asynchronous.job.serial(
            zero, one, two, postprocess=Job(postprocess_with, 'foo')))
        transaction.commit()
        self.wait_for(self.reactor, job, job2)
        self.assertEqual(job.result, (0, 1, 2))
        self.assertEqual(job2.result, ('foo', (0, 1, 2)))

    def test_parallel_examples(self):
        job = self.queue.put(zc.asynchronous.job.parallel(
            seven, fourteen, twenty_one, postprocess=sum_jobs))
        job2 = self.queue.put(zc.asynchronous.job.parallel(
            seven, fourteen, twenty_one, postprocess=Job(sum_with, 'foo')))
        transaction.commit()
        self.wait_for(self.reactor, job, job2)
        self.assertEqual(job.result, 42)
        self.assertEqual(job2.result, ('foo', 42))

    def test_default_postprocess_returns_jobs(self):
        job = self.queue.put(zc.asynchronous.job.parallel(seven, fourteen))
        transaction.commit()
        self.wait_for(self.reactor, job)
        self.assertEqual([j.result for j in job.result], [7, 14])

    def test_quota_live_example(self):
        # 3.7: jobs sharing quota 'test' run one after the other
        self.queue.quotas.create('test')
        job1 = Job(wait_then_42, 'one')
        job1.quota_names = ('test',)
        job2 = Job(wait_then_42, 'two')
        job2.quota_names = ('test',)
        self.queue.put(job1)
        self.queue.put(job2)
        transaction.commit()
        self.reactor.time_flies(1)
        testing.wait_for_start(job1)
        self.reactor.time_flies(5)
        transaction.begin()
        self.assertEqual(job1.status, 'active-status')
        self.assertEqual(job2.status, 'pending-status')
        gate('one').set()
        self.assertEqual(testing.wait_for_result(job1), 42)
        gate('two').set()
        self.reactor.wait_for(job2)
        self.assertEqual(job2.result, 42)

    def test_no_quota_runs_concurrently(self):
        job1 = self.queue.put(Job(wait_then_42, 'one'))
        job2 = self.queue.put(Job(wait_then_42, 'two'))
        transaction.commit()
        self.reactor.time_flies(1)
        testing.wait_for_start(job1)
        testing.wait_for_start(job2)
        gate('one').set()
        gate('two').set()
        self.reactor.wait_for(job1, job2)
        self.assertEqual((job1.result, job2.result), (42, 42))

    def test_live_annotations_hiya(self):
        job = self.queue.put(Job(live_annotation_job))
        transaction.commit()
        self.reactor.time_flies(1)
        self.drive_until(lambda: 'hello' in job.annotations)
        self.assertEqual(job.annotations['hello'], 'from job')
        job.annotations['reply'] = 'HIYA'
        transaction.commit()
        self.drive_until(lambda: job.status == 'completed-status')
        self.assertEqual(job.result, ('HIYA', 'MISSING'))

    def test_graceful_shutdown_c5(self):
        job, cb = self.start_job_with_callback()
        self.reactor.stop()
        transaction.begin()
        self.assertEqual(job.status, 'active-status')
        self.assertEqual(len(self.queue), 1)
        self.assertEqual(self.queue[0].callable, job.handleInterrupt)
        self.assertFalse(self.da().activated)
        # restart with the same UUID
        zc.asynchronous.dispatcher.pop(self.dispatcher.UUID)
        reactor, dispatcher = self.new_dispatcher()
        dispatcher.activate()
        reactor.start()
        self.wait_for(reactor, job, cb)
        self.assertEqual(job.result, 42)
        self.assertEqual(cb.result, 'I got result 42')
        self.assertEqual(job.getRetryPolicy().data['interruptions'], 1)

    def test_handle_interrupt_never_retry_aborts(self):
        job = self.queue.put(
            Job(block_first_then_42),
            retry_policy_factory=zc.asynchronous.job.NeverRetry)
        cb = job.addCallback(record)
        transaction.commit()
        self.reactor.time_flies(1)
        testing.wait_for_start(job)
        self.reactor.stop()
        transaction.begin()
        self.assertEqual(job.status, 'active-status')
        job.handleInterrupt()  # what the queued housekeeping job does
        self.assertEqual(job.status, 'completed-status')
        self.assertTrue(job.result.check(interfaces.AbortedError))
        self.assertEqual(cb.status, 'completed-status')

    def test_handle_interrupt_default_puts_back(self):
        job = self.queue.put(Job(block_first_then_42))
        transaction.commit()
        self.reactor.time_flies(1)
        testing.wait_for_start(job)
        self.reactor.stop()
        transaction.begin()
        wrapper = self.queue[0]
        self.assertEqual(wrapper.callable, job.handleInterrupt)
        self.assertEqual(wrapper.getRetryPolicy().__class__,
                         zc.asynchronous.job.RetryCommonForever)
        import logging
        self.assertEqual(wrapper.failure_log_level, logging.CRITICAL)
        job.handleInterrupt()
        self.assertEqual(job.status, 'pending-status')
        self.assertIs(self.queue[0], job)
        self.assertEqual(job.getRetryPolicy().data['interruptions'], 1)

    def test_put_back_interrupted_job_keeps_quota_slot(self):
        self.queue.quotas.create('q')
        job1 = Job(block_first_then_42)
        job1.quota_names = ('q',)
        job2 = Job(multiply, 2)
        job2.quota_names = ('q',)
        self.queue.put(job1)
        self.queue.put(job2)
        transaction.commit()
        self.reactor.time_flies(1)
        testing.wait_for_start(job1)
        self.reactor.stop()
        transaction.begin()
        job1.handleInterrupt()
        self.assertIs(self.queue[0], job1)
        quota = self.queue.quotas['q']
        quota.clean()
        self.assertIn(job1, quota)
        self.assertTrue(quota.filled)
        self.assertIsNone(
            self.queue.claim(lambda j: j.callable is multiply))
        self.assertIs(self.queue.claim(), job1)
        transaction.abort()

    def test_hard_crash_same_instance_c6(self):
        job, cb = self.start_job_with_callback()
        self.crash()
        reactor, dispatcher = self.new_dispatcher()
        dispatcher.activate()
        reactor.start()
        import zope.testing.loggingsupport
        handler = zope.testing.loggingsupport.InstalledHandler(
            'zc.async.events')
        try:
            reactor.time_flies(1)
        finally:
            handler.uninstall()
        self.assertTrue([r for r in handler.records
                         if r.levelname == 'ERROR' and
                         r.getMessage().startswith(
                             'UUID %s already activated in queue ' %
                             dispatcher.UUID) and
                         'another process?' in r.getMessage()],
                        [r.getMessage() for r in handler.records])
        self.assertEqual(dict(dispatcher.getPollInfo()), {'': None})
        da = self.da()
        self.assertTrue(da.activated)
        self.assertFalse(da.dead)
        self.assertEqual(job.status, 'active-status')
        self.assertIs(job.parent, da['main'])
        da.ping_death_interval = datetime.timedelta(seconds=1)
        transaction.commit()
        reactor.time_flies(5)  # the record is dead: cleaned, reactivated
        da = self.da()
        self.assertTrue(da.activated)
        self.assertFalse(da.dead)
        self.wait_for(reactor, job, cb)
        self.assertEqual(job.result, 42)
        self.assertEqual(cb.result, 'I got result 42')
        self.assertEqual(job.getRetryPolicy().data['interruptions'], 1)

    def test_hard_crash_sibling_recovery_c7(self):
        import uuid
        reactor, sibling = self.new_dispatcher(uuid=uuid.uuid1())
        reactor.start()  # same frozen clock
        job, cb = self.start_job_with_callback()
        sibling.activate()
        reactor.time_flies(1)
        self.crash()
        da = self.da()
        self.assertTrue(da.activated)
        self.assertIs(job.parent, da['main'])
        self.assertEqual(job.status, 'active-status')
        da.ping_death_interval = datetime.timedelta(seconds=1)
        transaction.commit()
        self.wait_for(reactor, job, cb)
        da = self.da()
        self.assertFalse(da.activated)
        self.assertTrue(da.dead)
        self.assertEqual(len(da['main']), 0)
        self.assertEqual(job.result, 42)
        self.assertEqual(cb.result, 'I got result 42')


class DispatcherBehaviourTests(ReactorTestCase):

    def logs(self, name):
        import zope.testing.loggingsupport
        handler = zope.testing.loggingsupport.InstalledHandler(name)
        self.addCleanup(handler.uninstall)
        return handler

    def test_local_helpers_inside_job(self):
        job = self.run_job(Job(local_info))
        self.assertEqual(job.result, ('main', self.dispatcher.UUID, True, ''))

    def test_active_job_ids_while_running(self):
        job = self.queue.put(Job(wait_then_42))
        transaction.commit()
        self.reactor.time_flies(1)
        testing.wait_for_start(job)
        jobid = zc.asynchronous.dispatcher.getId(job)
        self.assertEqual(self.dispatcher.getActiveJobIds(), [jobid])
        self.reactor.time_flies(5)
        poll = self.dispatcher.getPollInfo()
        self.assertEqual(poll['']['main']['active jobs'], [jobid])
        self.assertEqual(poll['']['main']['len'], 1)
        info = self.dispatcher.getJobInfo(*jobid)
        self.assertIsNone(info['result'])
        self.assertIsNone(info['completed'])
        self.assertIsNotNone(info['started'])
        gate('go').set()
        self.reactor.wait_for(job)
        self.assertEqual(job.result, 42)

    def test_success_and_failure_logging(self):
        trace = self.logs('zc.async.trace')
        events = self.logs('zc.async.events')
        ok = self.queue.put(Job(multiply, 5, 3))
        bad = self.queue.put(Job(fail_boom))
        cb = bad.addCallback(fail_boom_callback)
        transaction.commit()
        self.reactor.wait_for(ok, bad, cb)
        self.assertTrue([r for r in trace.records if r.levelname == 'INFO'
                         and r.getMessage().startswith(repr(ok))
                         and 'succeeded with result:\n15' in r.getMessage()],
                        [r.getMessage() for r in trace.records])
        errors = [r for r in events.records if r.levelname == 'ERROR'
                  and r.getMessage().startswith(repr(bad))
                  and 'failed with traceback:' in r.getMessage()]
        self.assertTrue(errors, [r.getMessage() for r in events.records])
        self.assertIn('*--- Failure #', errors[0].getMessage())
        self.assertTrue([r for r in events.records
                         if r.levelname == 'CRITICAL' and
                         r.getMessage().startswith(repr(cb))],
                        [r.getMessage() for r in events.records])
        self.assertTrue(bad.result.check(ValueError))
        self.assertTrue(cb.result.check(ValueError))

    def test_failure_log_level_of_put(self):
        import logging
        events = self.logs('zc.async.events')
        bad = self.queue.put(Job(fail_boom), failure_log_level=logging.WARNING)
        transaction.commit()
        self.reactor.wait_for(bad)
        self.assertEqual(
            [r.levelname for r in events.records
             if r.getMessage().startswith(repr(bad))], ['WARNING'])

    def test_future_begin_after(self):
        job = self.queue.put(
            Job(multiply, 2, 21),
            begin_after=START + datetime.timedelta(seconds=30))
        transaction.commit()
        self.reactor.time_flies(10)
        transaction.begin()
        self.assertEqual(job.status, 'pending-status')
        self.reactor.time_flies(25)
        self.reactor.wait_for(job)
        self.assertEqual(job.result, 42)
        self.assertGreaterEqual(job.active_start,
                                START + datetime.timedelta(seconds=30))

    def test_expired_begin_by_fails_with_timeout(self):
        job = self.queue.put(Job(multiply, 2, 21),
                             begin_by=datetime.timedelta(seconds=5),
                             begin_after=START - datetime.timedelta(hours=1))
        cb = job.addCallback(record)
        transaction.commit()
        self.wait_for(self.reactor, job, cb)
        self.assertTrue(job.result.check(interfaces.TimeoutError))
        self.assertEqual(cb.status, 'completed-status')

    def test_reschedule_later(self):
        job = self.queue.put(Job(fail_first_then_42),
                             retry_policy_factory=RescheduleLater)
        transaction.commit()
        self.reactor.time_flies(1)
        self.drive_until(lambda: job.status == 'pending-status')
        self.assertIs(job.parent, self.queue)
        self.assertGreater(job.begin_after,
                           START + datetime.timedelta(seconds=50))
        self.assertIsNone(job.result)
        self.wait_for(self.reactor, job, polls=20)
        self.assertEqual(job.result, 42)
        self.assertEqual(counts['ff'], 2)

    def test_reschedule_now_puts_back(self):
        job = self.queue.put(Job(fail_first_then_42),
                             retry_policy_factory=RescheduleNow)
        transaction.commit()
        self.wait_for(self.reactor, job)
        self.assertEqual(job.result, 42)
        self.assertEqual(counts['ff'], 2)

    def test_filter_agent(self):
        self.reactor.time_flies(1)
        agent = self.da()['main']
        agent.filter = only_multiply
        other = self.queue.put(Job(record, 1))
        job = self.queue.put(Job(multiply, 6, 7))
        transaction.commit()
        self.wait_for(self.reactor, job)
        self.assertEqual(job.result, 42)
        self.reactor.time_flies(5)
        transaction.begin()
        self.assertEqual(other.status, 'pending-status')
        self.assertEqual(list(self.queue), [other])

    def test_events_and_reactivation(self):
        import zope.component.eventtesting
        zope.component.eventtesting.setUp()
        self.reactor.time_flies(1)
        da = self.da()
        for iface in (interfaces.IDispatcherRegistered,
                      interfaces.IDispatcherActivated):
            self.assertEqual(
                [e.object._p_oid for e in
                 zope.component.eventtesting.getEvents(iface)], [da._p_oid])
        # someone wrongly deactivates us: the next ping reactivates
        events = self.logs('zc.async.events')
        da.deactivate()
        transaction.commit()
        self.reactor.time_flies(5)
        self.assertTrue(self.da().activated)
        self.assertEqual(len(zope.component.eventtesting.getEvents(
            interfaces.IDispatcherReactivated)), 1)
        self.assertIn('CRITICAL', [r.levelname for r in events.records])
        self.reactor.stop()
        self.assertEqual(len(zope.component.eventtesting.getEvents(
            interfaces.IDispatcherDeactivated)), 2)

    def test_poll_history_api(self):
        self.reactor.time_flies(11)
        polls = list(self.dispatcher.iterPolls())
        self.assertEqual(len(polls), 3)
        self.assertGreater(polls[0].utc_timestamp, polls[-1].utc_timestamp)
        self.assertIs(self.dispatcher.getPollInfo(), polls[0])
        self.assertIs(self.dispatcher.getPollInfo(at=polls[1].key), polls[1])
        self.assertIs(self.dispatcher.getPollInfo(before=polls[1].key),
                      polls[2])
        with self.assertRaises(ValueError):
            self.dispatcher.getPollInfo(at=polls[0].key,
                                        before=polls[0].key)
        self.assertEqual(
            len(list(self.dispatcher.iterPolls(count=2))), 2)
        info = self.dispatcher.getStatusInfo()
        self.assertIsInstance(info['time since last poll'],
                              datetime.timedelta)
        self.assertIsInstance(info['uptime'], datetime.timedelta)

    def test_unknown_job_info(self):
        with self.assertRaises((ValueError, KeyError)):
            self.dispatcher.getJobInfo(123456)

    def test_completed_collection(self):
        a = self.run_job(Job(multiply, 1))
        self.reactor.time_flies(60)
        b = self.run_job(Job(multiply, 2))
        completed = self.da()['main'].completed
        self.assertEqual(list(completed), [b, a])
        self.assertIs(completed.first(), b)
        self.assertIs(completed.last(), a)
        self.assertEqual(len(completed), 2)
        self.assertLess(a.initial_callbacks_end, b.initial_callbacks_end)

    def test_ping_write_limited_to_ping_interval(self):
        self.reactor.time_flies(1)
        self.assertEqual(self.da().last_ping.value, START)
        self.reactor.time_flies(10)
        self.assertEqual(self.da().last_ping.value, START)
        self.reactor.time_flies(25)
        self.assertGreaterEqual(self.da().last_ping.value,
                                START + datetime.timedelta(seconds=30))

    def test_result_truncated_in_job_info(self):
        job = self.run_job(Job(big_result))
        info = self.dispatcher.getJobInfo(
            *zc.asynchronous.dispatcher.getId(job))
        self.assertEqual(len(info['result']),
                         10000 + len('\n[...TRUNCATED...]'))
        self.assertTrue(info['result'].endswith('\n[...TRUNCATED...]'))

    def test_statistics_keys(self):
        self.run_job(Job(multiply, 3))
        self.run_job(Job(fail_boom))
        stats = self.dispatcher.getStatistics()
        self.assertTrue({'started', 'successful', 'failed', 'unknown',
                         'shortest successful', 'longest successful',
                         'shortest failed', 'longest failed',
                         'shortest active', 'longest active',
                         'statistics start', 'statistics end'} <= set(stats),
                        stats)
        self.assertEqual((stats['started'], stats['successful'],
                          stats['failed']), (2, 1, 1))

    def test_job_failed_while_pending_is_dropped(self):
        events = self.logs('zc.async.events')
        job = self.queue.put(Job(multiply, 2))
        transaction.commit()
        job.fail()
        transaction.commit()
        self.assertTrue(job.result.check(interfaces.TimeoutError))
        self.reactor.time_flies(1)
        self.drive_until(lambda: len(self.queue) == 0 and
                         len(self.da()['main']) == 0)
        self.reactor.time_flies(5)
        self.assertTrue([r for r in events.records if r.levelname == 'ERROR'
                         and 'job already completed?' in r.getMessage()],
                        [r.getMessage() for r in events.records])
        self.assertTrue(job.result.check(interfaces.TimeoutError))

    def test_returned_failure_is_result(self):
        job = self.run_job(Job(return_failure))
        self.assertTrue(job.result.check(ValueError))

    def test_job_calling_itself_fails_with_bad_status(self):
        job = self.run_job(Job(call_myself))
        self.assertTrue(job.result.check(interfaces.BadStatusError))

    def test_deferred_result(self):
        job = self.queue.put(Job(return_deferred))
        transaction.commit()
        self.wait_for(self.reactor, job)
        self.assertEqual(job.result, 42)

    def test_returning_job_waits_in_agent(self):
        job = self.queue.put(Job(hand_off))
        transaction.commit()
        self.reactor.time_flies(1)
        self.drive_until(lambda: isinstance(job.result, Job))
        self.assertEqual(job.status, 'active-status')
        self.assertEqual(len(self.da()['main']), 1)
        self.wait_for(self.reactor, job)
        self.assertEqual(job.result, 42)
        self.assertEqual(len(self.da()['main']), 0)

    def test_dynamic_extension(self):
        for helper in (zc.asynchronous.job.serial,
                       zc.asynchronous.job.parallel):
            del calls[:]
            composite = Job(helper, postprocess=Job(letters))
            composite = helper(Job(append_letter, 'first'),
                               postprocess=letters)
            transaction.commit()
            self.root['c'] = composite
            transaction.commit()
            composite.args.append(Job(extend_composite, composite._p_oid))
            self.queue.put(composite)
            transaction.commit()
            self.wait_for(self.reactor, composite)
            self.assertEqual(composite.result, ['first', 'second', 'third'])

    def test_parallel_interrupted_then_completes(self):
        composite = self.queue.put(zc.asynchronous.job.parallel(
            seven, Job(block_first_then_42), postprocess=sum_jobs))
        transaction.commit()
        blocked = composite.args[1]
        self.reactor.time_flies(1)
        self.drive_until(lambda: blocked.status == 'active-status' and
                         composite.args[0].status == 'completed-status')
        self.reactor.stop()
        transaction.begin()
        self.assertEqual(composite.status, 'active-status')
        self.assertEqual(blocked.status, 'active-status')
        wrappers = sorted(j.callable.__self__._p_oid for j in self.queue)
        self.assertEqual(wrappers, sorted([composite._p_oid, blocked._p_oid]))
        zc.asynchronous.dispatcher.pop(self.dispatcher.UUID)
        reactor, dispatcher = self.new_dispatcher()
        dispatcher.activate()
        reactor.start()
        self.wait_for(reactor, composite, polls=20)
        self.assertEqual(composite.result, 49)

    def test_monitor_async_command(self):
        import io
        import json
        import zc.asynchronous.monitor as monitor
        self.reactor.time_flies(1)

        class Connection:
            def __init__(self):
                self.out = io.StringIO()

            def write(self, data):
                self.out.write(data)

        conn = Connection()
        monitor.async_(conn, 'status')
        status = json.loads(conn.out.getvalue())
        self.assertEqual(status['status'], 'RUNNING')
        self.assertEqual(status['uuid'], str(self.dispatcher.UUID))
        self.assertEqual(status['poll interval'], {'seconds': 5.0})
        conn = Connection()
        monitor.async_(conn, 'nonesuch')
        self.assertEqual(conn.out.getvalue().strip(),
                         '[Unknown tool name for this command: nonesuch]')
        conn = Connection()
        monitor.async_(conn, 'UUID')
        self.assertEqual(conn.out.getvalue().strip(),
                         str(self.dispatcher.UUID))
        conn = Connection()
        monitor.async_(conn, 'poll')
        poll = json.loads(conn.out.getvalue())
        self.assertEqual(set(poll), {'key', 'time', 'results'})
        self.assertEqual(poll['results'], {'': {'main': {
            'active jobs': [], 'error': None, 'len': 0, 'new jobs': [],
            'size': 3}}})
        self.assertTrue(poll['time'].endswith('Z'))

    def test_monitor_more_tools(self):
        import io
        import json
        import zc.asynchronous.monitor as monitor
        import zc.asynchronous.monitordb as monitordb
        self.reactor.time_flies(21)

        class Connection:
            def __init__(self):
                self.out = io.StringIO()

            def write(self, data):
                self.out.write(data)

        def run(func, *args):
            conn = Connection()
            func(conn, *args)
            return conn.out.getvalue()

        self.assertEqual(len(json.loads(run(monitor.async_, 'polls'))), 3)
        self.assertEqual(
            len(json.loads(run(monitor.async_, 'polls', 'count:2'))), 2)
        self.assertEqual(
            run(monitor.async_, 'help', 'nonesuch').strip(),
            'Unknown async tool')
        self.assertEqual(run(monitor.async_, 'utcnow'),
                         '2006-08-10T15:44:43.000211Z\n')
        with self.assertRaises(ValueError) as cm:
            monitor.async_(Connection(), 'polls', 'count:2', 'x')
        self.assertEqual(cm.exception.args[0],
                         'placeful modifiers must come before named '
                         'modifiers')
        self.assertEqual(json.loads(monitor.encoder.encode(
            datetime.timedelta(0))), {'seconds': 0.0})
        self.assertEqual(json.loads(monitor.encoder.encode(
            datetime.timedelta(days=1, seconds=3661.5))),
            {'days': 1, 'hours': 1, 'minutes': 1, 'seconds': 1.5})
        self.assertEqual(json.loads(monitor.encoder.encode(START)),
                         '2006-08-10T15:44:22.000211Z')
        # the asyncdb command opens its own connection
        self.assertEqual(
            json.loads(run(monitordb.asyncdb, 'count', 'pending')), 0)
        self.assertIsNone(json.loads(run(monitordb.asyncdb,
                                         'lastcompleted')))
        job = self.run_job(Job(multiply, 2))
        for display in ('details', 'detail'):  # A15
            out = json.loads(run(monitordb.asyncdb, 'jobs', 'completed',
                                 'display:%s' % display))
            self.assertEqual(out[0]['repr'], repr(job))
        stats = json.loads(run(monitordb.asyncdb, 'jobstats', 'completed'))
        self.assertEqual(stats['succeeded'], 1)
        self.assertEqual(json.loads(run(
            monitordb.asyncdb, 'count', 'completed', 'end:since1H')), 1)
        self.assertEqual(json.loads(run(
            monitordb.asyncdb, 'count', 'completed', 'end:before1H')), 0)

    def test_several_queues_polled(self):
        self.root[interfaces.KEY]['other'] = zc.asynchronous.queue.Queue()
        transaction.commit()
        job = self.root[interfaces.KEY]['other'].put(Job(multiply, 6, 7))
        transaction.commit()
        self.wait_for(self.reactor, job)
        self.assertEqual(job.result, 42)
        self.assertEqual(sorted(self.dispatcher.getPollInfo()), ['', 'other'])

    def test_jobs_size_rolls(self):
        self.assertEqual(self.dispatcher.jobs.size, 200)
        self.dispatcher.jobs.size = 2
        done = [self.run_job(Job(multiply, i)) for i in range(3)]
        self.assertEqual(len(self.dispatcher.jobs), 2)
        self.assertNotIn(zc.asynchronous.dispatcher.getId(done[0]),
                         self.dispatcher.jobs)

    def test_false_death_c9(self):
        import uuid
        events = self.logs('zc.async.events')
        reactor, sibling = self.new_dispatcher(uuid=uuid.uuid1())
        reactor.start()  # the same frozen clock
        job = self.queue.put(Job(wait_then_42))
        transaction.commit()
        self.reactor.time_flies(1)
        testing.wait_for_start(job)
        jobid = zc.asynchronous.dispatcher.getId(job)
        self.assertEqual(self.dispatcher.getActiveJobIds(), [jobid])
        da = self.da()
        da.ping_death_interval = datetime.timedelta(seconds=2)
        transaction.commit()
        # a sibling polls; the clock jumps past our death interval
        testing.set_now(zc.asynchronous.utils.now() +
                        datetime.timedelta(seconds=4))
        sibling.activate()
        reactor.time_flies(1)
        self.drive_sibling(reactor, lambda: (
            not self.da().activated and
            jobid in [j for p in [sibling.getPollInfo()] if p
                      for a in p[''].values() for j in a['active jobs'] +
                      a['new jobs']]))
        # our next poll reactivates us and marks the job reassigned
        self.reactor.time_flies(5)
        self.assertTrue(self.da().activated)
        self.assertTrue(self.dispatcher.getJobInfo(*jobid)['reassigned'])
        gate('go').set()
        self.drive_sibling(reactor, lambda: job.status == 'completed-status')
        self.assertEqual(job.result, 42)
        self.drive_sibling(reactor, lambda: [
            r for r in events.records if r.levelname == 'ERROR' and
            r.getMessage().endswith('was reassigned.  Likely cause was that '
                                    'polling was unable to occur as regularly '
                                    'as expected, perhaps because of long '
                                    'commit times in the application.')])
        self.drive_sibling(
            reactor, lambda: self.dispatcher.getActiveJobIds() == [])

    def drive_sibling(self, reactor, check, seconds=30):
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            reactor.time_flies(1)
            if self.reactor.started:
                self.reactor.time_flies(0)  # its calls now due
            transaction.begin()
            if check():
                return
            testing.time_sleep(0.01)
        self.fail('condition never met')

    def test_interrupted_callback_is_retried(self):
        job = self.queue.put(Job(multiply, 3, 7))
        cb = job.addCallback(block_first_callback)
        transaction.commit()
        self.reactor.time_flies(1)
        self.drive_until(lambda: cb.status == 'active-status')
        self.reactor.stop()
        transaction.begin()
        self.assertEqual(job.status, 'callback-status')
        self.assertEqual([w.callable for w in self.queue],
                         [job.resumeCallbacks])
        zc.asynchronous.dispatcher.pop(self.dispatcher.UUID)
        reactor, dispatcher = self.new_dispatcher()
        dispatcher.activate()
        reactor.start()
        self.wait_for(reactor, job, cb)
        self.assertEqual(job.result, 21)
        self.assertEqual(cb.result, 42)
        self.assertEqual(counts['cb'], 2)

    def test_local_get_job_in_callback(self):
        job = self.queue.put(Job(multiply, 2))
        cb = job.addCallback(current_job_repr)
        transaction.commit()
        self.reactor.wait_for(job)
        self.assertEqual(cb.result, repr(cb))

    def test_bound_job_in_queue(self):
        job = self.run_job(Job.bind(own_status))
        self.assertEqual(job.result, 'active-status')

    def test_parallel_with_failing_component(self):
        job = self.queue.put(zc.asynchronous.job.parallel(
            seven, fail_boom, postprocess=postprocess_failures))
        transaction.commit()
        self.wait_for(self.reactor, job)
        self.assertEqual(job.result, [False, True])

    def test_live_annotation_timeout_default(self):
        job = self.queue.put(Job(ask_annotation_with_timeout))
        transaction.commit()
        self.reactor.time_flies(1)
        self.drive_until(lambda: job.status == 'completed-status')
        self.assertEqual(job.result, 'nothing')

    def test_asyncdb_tools(self):
        import zc.asynchronous.monitordb as monitordb
        ok = self.run_job(Job(multiply, 6, 7))
        bad = self.run_job(Job(fail_boom))
        pending = self.queue.put(Job(multiply, 1),
                                 begin_after=START + datetime.timedelta(
                                     days=1))
        transaction.commit()
        self.reactor.time_flies(5)
        transaction.begin()
        conn = self.conn
        self.assertEqual(monitordb.count(conn, 'completed'), 2)
        self.assertEqual(monitordb.count(conn, 'succeeded'), 1)
        self.assertEqual(monitordb.count(conn, 'failed'), 1)
        self.assertEqual(monitordb.count(conn, 'pending'), 1)
        self.assertEqual(monitordb.count(conn, 'pending', 'completed'), 3)
        self.assertEqual(
            monitordb.count(conn, 'completed', callable='fail_boom'), 1)
        self.assertEqual(list(monitordb.jobs(conn, 'completed')),
                         [zc.asynchronous.dispatcher.getId(bad),
                          zc.asynchronous.dispatcher.getId(ok)])
        with self.assertRaises(ValueError) as cm:
            monitordb.count(conn, 'succeeded', 'failed')
        self.assertEqual(cm.exception.args[0],
                         'can only include zero or one of "completed", '
                         '"succeeded," or "failed" states.')
        with self.assertRaises(ValueError) as cm:
            monitordb.count(conn, 'nonesuch')
        self.assertTrue(str(cm.exception.args[0]).startswith(
            'Available states are'))
        with self.assertRaises(ValueError):
            monitordb.count(conn)
        summary = monitordb.lastcompleted(conn)
        self.assertEqual(summary['repr'], repr(bad))
        self.assertTrue(summary['failed'])
        self.assertEqual(summary['status'], 'completed')
        for key in ('args', 'kwargs', 'begin after', 'active start',
                    'active end', 'initial callbacks end', 'wait', 'active',
                    'result', 'quota names', 'agent', 'dispatcher', 'queue',
                    'callbacks'):
            self.assertIn(key, summary)
        self.assertEqual(monitordb.nextpending(conn)['repr'], repr(pending))
        self.assertEqual(list(monitordb.UUIDs(conn)),
                         [str(self.dispatcher.UUID)])
        oid = zc.asynchronous.dispatcher.getId(bad)[0]
        tb = monitordb.traceback(conn, oid)
        self.assertIn('ValueError', tb)
        self.assertIsNone(monitordb.traceback(
            conn, zc.asynchronous.dispatcher.getId(ok)[0]))
        status = monitordb.status(conn)
        dispatchers = {str(k): v
                       for k, v in status['']['dispatchers'].items()}
        agents = dispatchers[str(self.dispatcher.UUID)]['agents']
        self.assertEqual(agents['main']['size'], 3)
        self.assertEqual(status['']['len'], 1)

    def test_agent_sequence_api(self):
        self.reactor.time_flies(1)
        agent = self.da()['main']
        self.reactor.stop()  # nobody claims from now on
        transaction.begin()
        da = self.da()
        da.activate()
        jobs = [self.queue.put(Job(multiply, i)) for i in range(3)]
        for job in jobs:
            self.assertIs(agent.claimJob(), job)
        self.assertEqual(list(agent), jobs)
        self.assertIs(agent[1], jobs[1])
        self.assertTrue(agent)
        with self.assertRaises(ValueError):
            agent.index(Job(multiply))
        agent.remove(jobs[1])
        del agent[0]
        self.assertEqual(list(agent), [jobs[2]])
        self.assertIsNone(agent.claimJob())  # the queue is empty
        self.assertIs(agent.pull(), jobs[2])
        self.assertIsNone(jobs[2].parent)
        da.deactivate()
        self.assertEqual(len(agent), 0)
        transaction.abort()

    def test_chooser_disconnect_c3b(self):
        self.reactor.time_flies(1)
        agent = self.da()['main']
        agent.filter = None
        agent.chooser = flaky_chooser
        job = self.queue.put(Job(multiply, 6, 7))
        transaction.commit()
        self.reactor.time_flies(5)
        info = self.dispatcher.getPollInfo()['']['main']
        self.assertIsInstance(info['error'], twisted.python.failure.Failure)
        self.assertIn('ClientDisconnected', info['error'].getTraceback())
        self.assertEqual(info['new jobs'], [])
        self.wait_for(self.reactor, job)
        self.assertEqual(job.result, 42)

    def test_removed_agent_pool_pruned_A20(self):
        self.reactor.time_flies(1)
        self.assertEqual(self.db.getPoolSize(), 11)
        del self.da()['main']
        transaction.commit()
        self.reactor.time_flies(5)
        self.assertEqual(self.db.getPoolSize(), 8)
        self.assertEqual(dict(self.dispatcher.getPollInfo()), {'': {}})


def fail_boom_callback(result):
    raise ValueError('callback boom')


# ---------------------------------------------------- threaded quick start

class MultiDatabaseTests(unittest.TestCase):
    """3.12: queues in a database named 'async', run by a dispatcher."""

    def setUp(self):
        zope.component.testing.setUp()
        zc.asynchronous.configure.base()
        zope.component.provideHandler(
            zc.asynchronous.agent.addMainAgentActivationHandler)
        self.dir = tempfile.mkdtemp()
        databases = {}
        self.db = ZODB.DB(ZODB.FileStorage.FileStorage(
            os.path.join(self.dir, 'Main.fs')),
            databases=databases, database_name='')
        self.async_db = ZODB.DB(ZODB.FileStorage.FileStorage(
            os.path.join(self.dir, 'Async.fs')),
            databases=databases, database_name='async')
        self.conn = self.db.open()
        async_conn = self.conn.get_connection('async')
        queues = async_conn.root()['mine'] = zc.asynchronous.queue.Queues()
        async_conn.add(queues)
        self.conn.root()[interfaces.KEY] = queues
        self.queue = queues[''] = zc.asynchronous.queue.Queue()
        transaction.commit()
        testing.setUpDatetime()
        self.reactor = testing.Reactor()
        self.dispatcher = zc.asynchronous.dispatcher.Dispatcher(
            self.db, self.reactor)
        self.dispatcher.activate()
        self.reactor.start()

    def tearDown(self):
        try:
            if self.reactor.started:
                self.reactor.stop()
            testing.tear_down_dispatcher(self.dispatcher)
        finally:
            transaction.abort()
            self.conn.close()
            self.db.close()
            self.async_db.close()
            zc.asynchronous.dispatcher.clear()
            zope.component.testing.tearDown()
            testing.tearDownDatetime()
            shutil.rmtree(self.dir, ignore_errors=True)

    def test_job_runs_from_async_database(self):
        data = self.conn.root()['data'] = (
            persistent.mapping.PersistentMapping())
        transaction.commit()
        job = self.queue.put(Job(data.__setitem__, 'x', 42))
        transaction.commit()
        self.assertEqual(job._p_jar.db().database_name, 'async')
        self.reactor.wait_for(job)
        self.assertEqual(job.status, 'completed-status')
        transaction.begin()
        self.assertEqual(data['x'], 42)
        jobid = zc.asynchronous.dispatcher.getId(job)
        self.assertEqual(jobid[1], 'async')
        info = self.dispatcher.getJobInfo(*jobid)
        self.assertFalse(info['failed'])


class Z3JobTests(unittest.TestCase):

    def test_defaults(self):
        import zc.asynchronous.z3
        job = zc.asynchronous.z3.Job(multiply, 2)
        self.assertIsNone(job.site)
        self.assertEqual(job.participants, ())
        self.assertIsInstance(job, Job)


class FileStorageDispatcherTestCase(unittest.TestCase):
    """A FileStorage database in a temporary directory; the dispatcher a
    test starts is torn down after it."""

    def setUp(self):
        zope.component.testing.setUp()
        self.dir = tempfile.mkdtemp()
        self.db = ZODB.DB(ZODB.FileStorage.FileStorage(
            os.path.join(self.dir, 'Data.fs')))

    def tearDown(self):
        d = zc.asynchronous.dispatcher.get()
        try:
            if d is not None:
                testing.tear_down_dispatcher(d)
        finally:
            transaction.abort()
            self.db.close()
            zc.asynchronous.dispatcher.clear()
            zope.component.testing.tearDown()
            shutil.rmtree(self.dir, ignore_errors=True)


class SignalTests(FileStorageDispatcherTestCase):
    """3.16: SIGINT stops a threaded dispatcher and deactivates it."""

    def test_sigint(self):
        import signal
        received = []
        previous = signal.signal(signal.SIGINT,
                                 lambda *args: received.append(args[0]))
        try:
            zc.asynchronous.configure.base()
            zc.asynchronous.configure.start(self.db, poll_interval=0.1)
            d = zc.asynchronous.dispatcher.get()
            testing.get_poll(d, 0)
            handlers = zc.asynchronous.subscribers.signal_handlers[id(d)]
            self.assertIn(signal.SIGINT, handlers)
            self.assertIn(signal.SIGTERM, handlers)
            os.kill(os.getpid(), signal.SIGINT)
            testing.wait_for_deactivation(d)
            self.assertEqual(received, [signal.SIGINT])
            conn = self.db.open()
            try:
                da = conn.root()[interfaces.KEY][''].dispatchers[d.UUID]
                self.assertFalse(da.activated)
            finally:
                conn.close()
        finally:
            d = zc.asynchronous.dispatcher.get()
            if d is not None:
                zc.asynchronous.subscribers.restore_signal_handlers(d)
            signal.signal(signal.SIGINT, previous)


class LegacyTests(unittest.TestCase):

    def test_success_or_failure(self):
        import zc.asynchronous.legacy as legacy
        self.assertEqual(legacy.success_or_failure(record, fail_boom, 5), 5)
        self.assertIs(zc.asynchronous.agent.chooseFirst, legacy.chooseFirst)


class ZCMLAndFunctionalTests(FileStorageDispatcherTestCase):
    """4.3: the ZCML files and ftesting, with a real threaded reactor."""

    def test_configure_zcml(self):
        import zope.configuration.xmlconfig
        zope.configuration.xmlconfig.string('''
            <configure xmlns="http://namespaces.zope.org/zope">
              <include package="zc.async" />
            </configure>''')
        self.assertIsInstance(interfaces.IJob(multiply), Job)
        self.assertEqual(zope.component.getUtility(interfaces.IUUID),
                         zc.asynchronous.instanceuuid.UUID)

    def test_basic_dispatcher_policy_zcml(self):
        import signal
        import zope.configuration.xmlconfig
        import zope.event
        before = signal.getsignal(signal.SIGINT)
        zope.configuration.xmlconfig.string('''
            <configure xmlns="http://namespaces.zope.org/zope">
              <include package="zc.async"
                       file="basic_dispatcher_policy.zcml" />
              <adapter factory="zc.async.twist.connection" />
            </configure>''')
        zope.event.notify(interfaces.DatabaseOpened(self.db))
        d = zc.asynchronous.dispatcher.get()
        self.assertIsNotNone(d)
        self.assertIsNotNone(d.thread)
        poll = testing.get_poll(d, 0)
        self.assertEqual(dict(poll), {'': {'main': {
            'active jobs': [], 'error': None, 'len': 0, 'new jobs': [],
            'size': 3}}})
        self.assertTrue(d.activated)
        self.assertIn(id(d), zc.asynchronous.subscribers.signal_handlers)
        conn = self.db.open()
        try:
            root = conn.root()
            q = interfaces.IQueue(root)
            job = q.put(Job(operator.mul, 21, 2))
            transaction.commit()
            self.assertEqual(testing.wait_for_result(job), 42)
        finally:
            transaction.abort()
            conn.close()
        testing.tear_down_dispatcher(d)
        self.assertEqual(signal.getsignal(signal.SIGINT), before)

    def test_multidb_queue_installer(self):
        import ZODB.MappingStorage
        databases = {}
        main = ZODB.DB(ZODB.FileStorage.FileStorage(
            os.path.join(self.dir, 'Main.fs')),
            databases=databases, database_name='')
        other = ZODB.DB(ZODB.FileStorage.FileStorage(
            os.path.join(self.dir, 'Async.fs')),
            databases=databases, database_name='async')
        try:
            zc.asynchronous.configure.base()
            zc.asynchronous.subscribers.multidb_queue_installer(
                interfaces.DatabaseOpened(main))
            conn = main.open()
            try:
                queues = conn.root()[interfaces.KEY]
                self.assertEqual(queues._p_jar.db().database_name, 'async')
                self.assertIn('', queues)
                job = queues[''].put(Job(multiply, 2))
                transaction.commit()
                self.assertEqual(zc.asynchronous.dispatcher.getId(job)[1],
                                 'async')
            finally:
                transaction.abort()
                conn.close()
        finally:
            main.close()
            other.close()

    def test_ftesting(self):
        import io
        import zc.asynchronous.ftesting
        zc.asynchronous.configure.base()
        zope.component.provideAdapter(zc.asynchronous.queue.getDefaultQueue)
        conn = self.db.open()
        try:
            zc.asynchronous.ftesting.setUp(conn, log_file=io.StringIO())
            try:
                d = zc.asynchronous.dispatcher.get()
                self.assertTrue(d.activated)
                self.assertEqual(d.poll_interval, 0.1)
                transaction.begin()
                job = interfaces.IQueue(conn.root()).put(
                    Job(multiply, 6, 7))
                transaction.commit()
                self.assertEqual(testing.wait_for_result(job), 42)
            finally:
                zc.asynchronous.ftesting.tearDown()
            self.assertIsNone(zc.asynchronous.dispatcher.get())
        finally:
            transaction.abort()
            conn.close()



class QuickStartTests(unittest.TestCase):

    def setUp(self):
        zope.component.testing.setUp()
        self.dir = tempfile.mkdtemp()
        self.db = ZODB.DB(ZODB.FileStorage.FileStorage(
            os.path.join(self.dir, 'Data.fs')))

    def tearDown(self):
        d = zc.asynchronous.dispatcher.get()
        if d is not None:
            testing.tear_down_dispatcher(d)
        transaction.abort()
        self.db.close()
        zc.asynchronous.dispatcher.clear()
        zope.component.testing.tearDown()
        shutil.rmtree(self.dir, ignore_errors=True)

    def test_start_agent_size(self):
        zc.asynchronous.configure.base()
        zc.asynchronous.configure.start(self.db, poll_interval=0.1,
                                        agent_size=1)
        d = zc.asynchronous.dispatcher.get()
        poll = testing.get_poll(d, 0)
        self.assertEqual(poll['']['main']['size'], 1)
        self.assertEqual(d.poll_interval, 0.1)

    def test_virtualenv_quickstart(self):
        import time
        zc.asynchronous.configure.base()
        zc.asynchronous.configure.start(self.db, poll_interval=0.1)
        conn = self.db.open()
        try:
            q = interfaces.IQueue(conn)
            self.assertIs(q, conn.root()[interfaces.KEY][''])
            j = q.put(time.time)
            self.assertIsNone(j.result)
            self.assertEqual(j.status, 'pending-status')
            transaction.commit()
            self.assertIsInstance(testing.wait_for_result(j), float)
            self.assertEqual(j.status, 'completed-status')
            d = zc.asynchronous.dispatcher.get()
            self.assertTrue(d.activated)
            poll = testing.get_poll(d)
            self.assertEqual(poll['']['main']['size'], 3)
        finally:
            transaction.abort()
            conn.close()
