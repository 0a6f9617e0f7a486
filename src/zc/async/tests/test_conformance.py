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
import unittest

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
    gate(name).wait(10)
    return 42


counts = {}


def block_first_then_42():
    # the first run hangs (a "crashed" process); later runs answer 42
    counts['crash'] = counts.get('crash', 0) + 1
    if counts['crash'] == 1:
        gate('crash').wait(10)
    return 42


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
                testing.tear_down_dispatcher(d)
        finally:
            super().tearDown()

    def da(self):
        transaction.begin()
        return self.queue.dispatchers[self.dispatcher.UUID]

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
        self.assertTrue(interfaces.IUUID.providedBy(
            zc.asynchronous.instanceuuid.UUID))

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
        self.reactor.wait_for(job, attempts=30)
        if job.status != 'completed-status':
            self.reactor.wait_for(job, attempts=30)
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
        for i in range(6):
            self.reactor.wait_for(job, job2)
            if (job.status, job2.status) == ('completed-status',) * 2:
                break
        self.assertEqual(job.result, (0, 1, 2))
        self.assertEqual(job2.result, ('foo', (0, 1, 2)))

    def test_parallel_examples(self):
        job = self.queue.put(zc.asynchronous.job.parallel(
            seven, fourteen, twenty_one, postprocess=sum_jobs))
        job2 = self.queue.put(zc.asynchronous.job.parallel(
            seven, fourteen, twenty_one, postprocess=Job(sum_with, 'foo')))
        transaction.commit()
        for i in range(6):
            self.reactor.wait_for(job, job2)
            if (job.status, job2.status) == ('completed-status',) * 2:
                break
        self.assertEqual(job.result, 42)
        self.assertEqual(job2.result, ('foo', 42))

    def test_default_postprocess_returns_jobs(self):
        job = self.queue.put(zc.asynchronous.job.parallel(seven, fourteen))
        transaction.commit()
        for i in range(6):
            self.reactor.wait_for(job)
            if job.status == 'completed-status':
                break
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
        self.assertEqual(testing.wait_for_annotation(job, 'hello'),
                         'from job')
        job.annotations['reply'] = 'HIYA'
        transaction.commit()
        self.reactor.wait_for(job, attempts=40)
        self.assertEqual(job.result, ('HIYA', 'MISSING'))

    def test_graceful_shutdown_c5(self):
        job = self.queue.put(Job(wait_then_42))
        cb = job.addCallback(got_result)
        transaction.commit()
        self.reactor.time_flies(1)
        testing.wait_for_start(job)
        self.reactor.stop()
        transaction.begin()
        self.assertEqual(job.status, 'active-status')
        self.assertEqual(len(self.queue), 1)
        wrapper = self.queue[0]
        self.assertEqual(wrapper.callable, job.handleInterrupt)
        self.assertFalse(self.da().activated)
        # restart with the same UUID
        gate('go').set()
        testing.tear_down_dispatcher(self.dispatcher)
        zc.asynchronous.dispatcher.clear()
        self.reactor = testing.Reactor()
        self.dispatcher = zc.asynchronous.dispatcher.Dispatcher(
            self.db, self.reactor)
        self.dispatcher.activate()
        self.reactor.start()
        for i in range(4):
            self.reactor.wait_for(job, cb)
            if cb.status == 'completed-status':
                break
        self.assertEqual(job.result, 42)
        self.assertEqual(cb.result, 'I got result 42')
        self.assertEqual(job.getRetryPolicy().data['interruptions'], 1)

    def test_handle_interrupt_never_retry_aborts(self):
        job = self.queue.put(Job(wait_then_42),
                             retry_policy_factory=zc.asynchronous.job.NeverRetry)
        transaction.commit()
        self.reactor.time_flies(1)
        testing.wait_for_start(job)
        self.reactor.stop()
        gate('go').set()
        testing.tear_down_dispatcher(self.dispatcher)
        transaction.begin()
        self.assertEqual(job.status, 'active-status')
        job.handleInterrupt()
        self.assertEqual(job.status, 'completed-status')
        self.assertTrue(job.result.check(interfaces.AbortedError))

    def test_handle_interrupt_default_puts_back(self):
        job = self.queue.put(Job(wait_then_42))
        transaction.commit()
        self.reactor.time_flies(1)
        testing.wait_for_start(job)
        self.reactor.stop()
        gate('go').set()
        testing.tear_down_dispatcher(self.dispatcher)
        transaction.begin()
        self.queue.pull()  # drop the housekeeping wrapper
        job.handleInterrupt()
        self.assertEqual(job.status, 'pending-status')
        self.assertIs(self.queue[0], job)

    def test_hard_crash_same_instance_c6(self):
        job = self.queue.put(Job(wait_then_42))
        cb = job.addCallback(got_result)
        transaction.commit()
        self.reactor.time_flies(1)
        testing.wait_for_start(job)
        # the thread finishes its job but the process is "gone"
        self.dispatcher.activated = False
        self.reactor.started = False
        old = self.dispatcher
        # new process, same UUID
        zc.asynchronous.dispatcher.clear()
        reactor = testing.Reactor()
        dispatcher = zc.asynchronous.dispatcher.Dispatcher(self.db, reactor)
        dispatcher.activate()
        reactor.start()
        self.reactor, self.dispatcher = reactor, dispatcher
        self.reactor.time_flies(1)
        self.assertEqual(dict(dispatcher.getPollInfo()), {'': None})
        transaction.begin()
        da = self.da()
        self.assertTrue(da.activated)
        self.assertFalse(da.dead)
        self.assertEqual(job.status, 'active-status')
        self.assertIs(job.parent, da['main'])
        gate('go').set()
        for thread in [t for p in old._pools() for t in p.threads]:
            thread.join(3)
        # death
        da.ping_death_interval = datetime.timedelta(seconds=1)
        transaction.commit()
        for i in range(5):
            self.reactor.wait_for(job, cb)
            if cb.status == 'completed-status':
                break
        da = self.da()
        self.assertTrue(da.activated)
        self.assertFalse(da.dead)
        self.assertEqual(job.result, 42)
        self.assertEqual(cb.result, 'I got result 42')
        self.assertEqual(job.getRetryPolicy().data['interruptions'], 1)

    def test_hard_crash_sibling_recovery_c7(self):
        import uuid
        job = self.queue.put(Job(wait_then_42))
        cb = job.addCallback(got_result)
        transaction.commit()
        # sibling with a different UUID on the same clock
        sibling_reactor = testing.Reactor()
        sibling = zc.asynchronous.dispatcher.Dispatcher(
            self.db, sibling_reactor, uuid=uuid.uuid1())
        self.reactor.time_flies(1)
        testing.wait_for_start(job)
        sibling.activate()
        sibling_reactor.start()  # clock stays where it is (frozen)
        testing.set_now(START + datetime.timedelta(seconds=1))
        sibling_reactor.time_flies(1)
        # first crashes hard
        self.dispatcher.activated = False
        self.reactor.started = False
        transaction.begin()
        da = self.da()
        self.assertTrue(da.activated)
        self.assertIs(job.parent, da['main'])
        self.assertEqual(job.status, 'active-status')
        da.ping_death_interval = datetime.timedelta(seconds=1)
        transaction.commit()
        gate('go').set()
        for thread in [t for p in self.dispatcher._pools()
                       for t in p.threads]:
            thread.join(3)
        try:
            for i in range(5):
                sibling_reactor.wait_for(job, cb)
                if cb.status == 'completed-status':
                    break
            da = self.da()
            self.assertFalse(da.activated)
            self.assertTrue(da.dead)
            self.assertEqual(len(da['main']), 0)
            self.assertEqual(job.result, 42)
            self.assertEqual(cb.result, 'I got result 42')
        finally:
            sibling_reactor.stop()
            testing.tear_down_dispatcher(sibling)


# ---------------------------------------------------- threaded quick start

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
