"""Tests for zc.async.job: the job lifecycle, callbacks and interruptions.

The tests run jobs against a real ZODB (MappingStorage), standalone or in a
real Queue with a real Agent, with the zc.async clock frozen and retry
backoffs recorded instead of slept.
"""
import datetime
import logging
import operator
import threading
import types
import unittest
import uuid

import persistent
import persistent.list
import persistent.mapping
import transaction
import twisted.internet.defer
import zc.queue
import zope.component
import zope.interface
import zope.interface.verify
import zope.testing.cleanup
import BTrees.OOBTree
import ZEO.Exceptions
import ZODB
import ZODB.MappingStorage
import ZODB.POSException

import zc.asynchronous
import zc.asynchronous.job
from zc.asynchronous import clock
from zc.asynchronous import interfaces
from zc.asynchronous import logs
from zc.asynchronous import retry
from zc.asynchronous import twist
from zc.asynchronous import txn
from zc.asynchronous import utils
from zc.asynchronous.agent import Agent
from zc.asynchronous.job import Job
from zc.asynchronous.queue import Queue
from zc.asynchronous.tests.reactorcase import ReactorTestCase

UTC = datetime.timezone.utc
START = datetime.datetime(2006, 8, 10, 15, 44, 22, 211, tzinfo=UTC)
UUID = uuid.UUID('d10f43dc-ffdf-11dc-abd4-0017f2c49bdd')
OTHER_UUID = uuid.UUID('b0a5f2a6-ffe0-11dc-abd4-0017f2c49bdd')


# ------------------------------------------------ module-level callables
# Jobs are stored in the database, so their callables must be importable.

calls = []  # what the callables below were called with


def record(*args, **kwargs):
    calls.append((args, kwargs))
    return len(calls)


def fail_with_value_error():
    raise ValueError('bad data')


def conflict_always():
    calls.append('conflict')
    raise ZODB.POSException.ConflictError()


def conflict_times(count, value):
    """Raise a ConflictError for the first ``count`` calls, then return."""
    calls.append('called')
    if calls.count('called') <= count:
        raise ZODB.POSException.ConflictError()
    return value


def disconnect_times(count, value):
    calls.append('called')
    if calls.count('called') <= count:
        raise ZEO.Exceptions.ClientDisconnected()
    return value


def system_exit():
    raise SystemExit()


def set_root_value(key, value):
    """Change the database from inside a job (the job's own connection)."""
    job = zc.asynchronous.local.getJob()
    job._p_jar.root()[key] = value
    return value


def set_and_fail(key, value):
    set_root_value(key, value)
    raise ValueError('changed, then failed')


def set_and_return_failure(key, value):
    set_root_value(key, value)
    return twist.Failure(ValueError('failure returned'))


def current_job():
    return zc.asynchronous.local.getJob()


def call_current_job():
    return zc.asynchronous.local.getJob()()


def return_unpicklable(times):
    """Return a value no commit can store, the first ``times`` calls."""
    calls.append('called')
    if len(calls) <= times:
        return threading.Lock()
    return 42


def return_job(job):
    return job


def return_deferred():
    deferred = twisted.internet.defer.Deferred()
    DEFERREDS.append(deferred)
    return deferred


DEFERREDS = []


def note_result(result):
    calls.append(result)
    return result


def note_args(*args):
    calls.append(args)
    return args


def add_callback_to_parent(result):
    """A callback adding another callback to the job it belongs to."""
    parent = zc.asynchronous.local.getJob().parent
    parent.addCallback(Job(note_result))
    return result


def isTimeoutError(value):
    return (zc.asynchronous.job.isFailure(value)
            and value.check(interfaces.TimeoutError) is not None)


class Demo(persistent.Persistent):
    """A persistent object with methods for jobs."""

    counter = 0

    def increase(self, value=1):
        self.counter += value
        return self.counter


class SetUpJob(Job):
    """Records setUp/tearDown calls in the module-level ``calls``."""

    fail_setup = fail_teardown = False

    def setUp(self):
        calls.append('setUp')
        if self.fail_setup:
            raise RuntimeError('setUp failed')
        return 'info'

    def tearDown(self, setup_info):
        # _p_changed tells whether the attempt was committed (or aborted)
        calls.append(('tearDown', setup_info, self._p_changed))
        if self.fail_teardown:
            raise RuntimeError('tearDown failed')


class SelfCallingJob(Job):
    """A job whose callable is one of its own methods."""

    def __init__(self):
        super().__init__(self.compute)

    def compute(self):
        return 'computed by %s' % type(self).__name__


def policy_answer(job):
    return AnsweringPolicy(job)


class AnsweringPolicy(persistent.Persistent):
    """A retry policy that answers what the test stored in ``ANSWERS``."""

    def __init__(self, job):
        self.parent = self.__parent__ = job

    def jobError(self, failure, data_cache):
        return ANSWERS.pop(0)

    commitError = jobError

    def interrupted(self):
        return ANSWERS.pop(0)

    def updateData(self, data_cache):
        pass


ANSWERS = []


# ----------------------------------------------------------- fixtures

class DatabaseTestCase(unittest.TestCase):
    """A real ZODB, a frozen clock, recorded sleeps and captured logs."""

    def setUp(self):
        del calls[:], DEFERREDS[:], ANSWERS[:]
        self.db = ZODB.DB(ZODB.MappingStorage.MappingStorage())
        self.conn = self.db.open()
        self.root = self.conn.root()
        clock._set_frozen_now(START)
        self.sleeps = []
        self._patch(retry, 'backoff_sleep', self.sleeps.append)
        self._patch(txn, '_sleep', self.sleeps.append)
        self.records = []
        self._capture_logs()

    def tearDown(self):
        transaction.abort()
        self.conn.close()
        self.db.close()
        clock._set_frozen_now(None)
        zc.asynchronous.local.job = None
        zc.asynchronous.local.dispatcher = None
        zc.asynchronous.local.name = None
        zope.testing.cleanup.cleanUp()

    def _patch(self, module, name, value):
        original = getattr(module, name)
        setattr(module, name, value)
        self.addCleanup(setattr, module, name, original)

    def _capture_logs(self):
        logger = logging.getLogger('zc.async')
        handler = logging.Handler(logging.DEBUG)
        handler.emit = self.records.append
        old = logger.level, logger.propagate
        logger.setLevel(logging.DEBUG)
        logger.propagate = False
        logger.addHandler(handler)

        def restore():
            logger.removeHandler(handler)
            logger.level, logger.propagate = old
        self.addCleanup(restore)

    def logged(self, level=None, logger=None, text=''):
        """The messages of the captured records that match."""
        return [r.getMessage() for r in self.records
                if (level is None or r.levelno == level)
                and (logger is None or r.name == logger)
                and text in r.getMessage()]

    def store(self, job, key='job'):
        self.root[key] = job
        transaction.commit()
        return job

    def make_queue(self):
        """A stored queue with an activated dispatcher and agent 'main'."""
        queue = self.root['queue'] = Queue()
        queue.dispatchers.register(UUID)
        agents = queue.dispatchers[UUID]
        agents.activate()
        agents['main'] = Agent()
        transaction.commit()
        return queue, agents['main']

    def claimed(self, queue, agent, item, **kw):
        """Put ``item`` and let ``agent`` claim it (committed)."""
        job = queue.put(item, **kw)
        transaction.commit()
        self.assertIs(agent.claimJob(), job)
        transaction.commit()
        return job

    def sync(self):
        transaction.begin()

    def other_connection(self):
        """A second connection with its own transaction manager."""
        tm = transaction.TransactionManager()
        conn = self.db.open(transaction_manager=tm)
        self.addCleanup(conn.close)
        self.addCleanup(tm.abort)
        return conn, tm


# --------------------------------------------------------------- tests

class ConstructionTests(DatabaseTestCase):

    def test_provides_IJob(self):
        job = Job(record)
        self.assertTrue(zope.interface.verify.verifyObject(
            interfaces.IJob, job))

    def test_stores_callable_args_and_kwargs_persistently(self):
        # How they are stored: see test_jobparts.
        job = self.store(Job(record, 1, 2, three=3))
        self.assertIs(job.callable, record)
        self.assertEqual(job.args, [1, 2])
        self.assertEqual(job.kwargs, {'three': 3})
        self.assertEqual(list(job.callbacks), [])
        self.assertEqual(dict(job.annotations), {})
        job.args.append(4)
        job.kwargs['five'] = 5
        job.annotations['six'] = 6
        transaction.commit()
        conn, tm = self.other_connection()
        other = conn.get(job._p_oid)
        self.assertEqual((other.args, other.kwargs, dict(other.annotations)),
                         ([1, 2, 4], {'three': 3, 'five': 5}, {'six': 6}))
        self.assertIsInstance(other.annotations, BTrees.OOBTree.OOBTree)

    def test_new_job_defaults(self):
        job = Job(record)
        self.assertEqual(job.status, interfaces.NEW)
        for name in ('result', 'parent', 'begin_after', 'begin_by',
                     'active_start', 'active_end', 'initial_callbacks_end',
                     'key', 'retry_policy_factory', 'failure_log_level',
                     'assignerUUID', 'queue', 'agent'):
            self.assertIsNone(getattr(job, name), name)
        self.assertEqual(job.quota_names, ())

    def test_no_callable_is_a_type_error(self):
        with self.assertRaisesRegex(TypeError, 'callable'):
            Job()

    def test_non_callable_is_a_type_error_naming_it(self):
        with self.assertRaisesRegex(TypeError, "'not callable'"):
            Job('not callable')

    def test_result_is_read_only(self):
        with self.assertRaises(AttributeError):
            Job(record).result = 1

    def test_bind_passes_the_job_first(self):
        job = Job.bind(record, 'x')
        self.assertIs(job.args[0], job)
        self.assertEqual(job(), 1)
        self.assertIs(calls[0][0][0], job)
        self.assertEqual(calls[0][0][1], 'x')


class CallableTests(DatabaseTestCase):

    def test_bound_method_of_persistent_object_is_stored_as_owner_and_name(
            self):
        demo = self.root['demo'] = Demo()
        job = self.store(Job(demo.increase, 5))
        self.assertIs(job._callable_root, demo)
        self.assertEqual(job._callable_name, 'increase')
        self.assertEqual(job.callable, demo.increase)
        # It survives a round trip through another connection.
        conn, tm = self.other_connection()
        other = conn.root()['job']
        self.assertEqual(other(), 5)
        self.sync()
        self.assertEqual(demo.counter, 5)
        self.assertEqual(job.result, 5)

    def test_method_wrapper_is_stored_as_owner_and_name(self):
        mapping = self.root['mapping'] = persistent.mapping.PersistentMapping()
        job = Job(mapping.__setitem__, 'key', 'value')
        self.assertIs(job._callable_root, mapping)
        self.assertEqual(job._callable_name, '__setitem__')
        self.store(job)
        job()
        self.assertEqual(mapping['key'], 'value')

    def test_builtin_method_is_stored_as_owner_and_name(self):
        items = self.root['items'] = persistent.list.PersistentList()
        job = self.store(Job(items.append, 7))
        self.assertIs(job._callable_root, items)
        self.assertEqual(job._callable_name, 'append')
        job()
        self.assertEqual(list(items), [7])

    def test_builtin_function_is_stored_as_is(self):
        job = Job(len, [1, 2])
        self.assertIs(job._callable_root, len)
        self.assertIsNone(job._callable_name)
        self.assertEqual(job(), 2)

    def test_callable_settable_only_while_new(self):
        queue, agent = self.make_queue()
        job = queue.put(record)
        with self.assertRaises(interfaces.BadStatusError) as caught:
            job.callable = len
        # 1.5's text, although only NEW is allowed (reference A8).
        self.assertEqual(caught.exception.args, (
            'can only set callable when a job has NEW, PENDING, or ASSIGNED '
            'status',))

    def test_callable_can_be_changed_while_new(self):
        job = Job(record)
        job.callable = len
        self.assertIs(job.callable, len)

    def test_wrapper_adopts_a_job_without_parent(self):
        inner = Job(record)
        wrapper = Job(inner.fail)
        self.assertIs(inner.parent, wrapper)

    def test_wrapper_leaves_a_job_with_a_parent_alone(self):
        queue, agent = self.make_queue()
        inner = queue.put(record)
        Job(inner.fail)
        self.assertIs(inner.parent, queue)

    def test_a_job_may_call_its_own_method(self):
        job = self.store(SelfCallingJob())
        self.assertIsNone(job.parent)
        self.assertEqual(job(), 'computed by SelfCallingJob')


class ReprTests(DatabaseTestCase):

    def test_repr_of_new_function_job(self):
        job = Job(record, 1, 'a', key=None)
        self.assertEqual(
            repr(job),
            "<zc.async.job.Job (oid ?, db ?) "
            "``zc.async.tests.test_job.record(1, 'a', key=None)``>")

    def test_repr_of_stored_method_job(self):
        demo = self.root['demo'] = Demo()
        job = self.store(Job(demo.increase, Job(record)))
        text = repr(job)
        self.assertRegex(
            text,
            r"^<zc\.async\.job\.Job \(oid \d+, db 'unnamed'\) "
            r"``zc\.async\.tests\.test_job\.Demo \(oid \d+, db 'unnamed'\) "
            r":increase\(zc\.async\.job\.Job \(oid \d+, db 'unnamed'\)\)``>$")


class StatusTests(DatabaseTestCase):

    def test_pending_in_queue_and_assigned_in_agent(self):
        queue, agent = self.make_queue()
        job = queue.put(record)
        self.assertEqual(job.status, interfaces.PENDING)
        self.assertIs(job.queue, queue)
        self.assertIsNone(job.agent)
        transaction.commit()
        agent.claimJob()
        self.assertEqual(job.status, interfaces.ASSIGNED)
        self.assertIs(job.agent, agent)
        self.assertIs(job.queue, queue)

    def test_pulled_job_is_new_again(self):
        queue, agent = self.make_queue()
        job = queue.put(record)
        self.assertIs(queue.pull(), job)
        self.assertEqual(job.status, interfaces.NEW)

    def test_callback_status_follows_its_parent_container(self):
        queue, agent = self.make_queue()
        job = queue.put(record)
        callback = job.addCallback(record)
        self.assertEqual(callback.status, interfaces.PENDING)
        self.assertIs(callback.queue, queue)
        transaction.commit()
        agent.claimJob()
        self.assertEqual(callback.status, interfaces.ASSIGNED)
        self.assertIs(callback.agent, agent)

    def test_standalone_job_goes_new_active_callbacks_completed(self):
        job = self.store(Job(own_status))
        job.addCallback(parent_status)
        self.assertEqual(job.status, interfaces.NEW)
        job()
        self.assertEqual(calls, [interfaces.ACTIVE, interfaces.CALLBACKS])
        self.assertEqual(job.status, interfaces.COMPLETED)


def own_status():
    calls.append(zc.asynchronous.local.getJob().status)


def parent_status(result):
    calls.append(zc.asynchronous.local.getJob().parent.status)


class BeginAfterTests(DatabaseTestCase):

    def test_naive_datetime_is_refused_naming_the_argument(self):
        job = Job(record)
        with self.assertRaises(ValueError) as caught:
            job.begin_after = datetime.datetime(2006, 8, 10, 15)
        self.assertTrue(str(caught.exception).startswith(
            'cannot use timezone-naive values'))
        self.assertIn('begin_after', str(caught.exception))

    def test_aware_datetime_is_stored_in_utc(self):
        job = Job(record)
        est = datetime.timezone(datetime.timedelta(hours=-5))
        job.begin_after = datetime.datetime(2006, 8, 10, 11, 30, tzinfo=est)
        self.assertEqual(job.begin_after,
                         datetime.datetime(2006, 8, 10, 16, 30, tzinfo=UTC))
        self.assertEqual(job.begin_after.utcoffset(), datetime.timedelta(0))

    def test_settable_only_while_new(self):
        queue, agent = self.make_queue()
        job = queue.put(record)
        with self.assertRaises(interfaces.BadStatusError) as caught:
            job.begin_after = START
        self.assertEqual(caught.exception.args, (
            'can only set begin_after when a job has NEW status',))


class BeginByTests(DatabaseTestCase):

    def test_negative_values_are_refused(self):
        job = Job(record)
        with self.assertRaisesRegex(ValueError,
                                    '^negative values are not allowed'):
            job.begin_by = datetime.timedelta(seconds=-1)

    def test_settable_while_new_or_pending(self):
        job = Job(record)
        job.begin_by = datetime.timedelta(hours=1)
        queue, agent = self.make_queue()
        queue.put(job)
        job.begin_by = datetime.timedelta(hours=2)
        self.assertEqual(job.begin_by, datetime.timedelta(hours=2))
        transaction.commit()
        agent.claimJob()
        with self.assertRaises(interfaces.BadStatusError):
            job.begin_by = None


class QuotaNamesTests(DatabaseTestCase):

    def test_a_string_is_refused(self):
        with self.assertRaisesRegex(TypeError,
                                    '^provide an iterable of names'):
            Job(record).quota_names = 'abc'

    def test_new_job_takes_any_names_as_a_tuple(self):
        job = Job(record)
        job.quota_names = ['a', 'b']
        self.assertEqual(job.quota_names, ('a', 'b'))

    def test_pending_job_needs_existing_quotas(self):
        queue, agent = self.make_queue()
        queue.quotas.create('known')
        job = queue.put(record)
        with self.assertRaises(ValueError) as caught:
            job.quota_names = ('known', 'unknown')
        self.assertEqual(caught.exception.args,
                         ('unknown quota name', 'unknown'))
        self.assertEqual(job.quota_names, ())
        job.quota_names = ('known',)
        self.assertEqual(job.quota_names, ('known',))

    def test_other_statuses_are_refused(self):
        queue, agent = self.make_queue()
        self.claimed(queue, agent, record)
        job = agent[0]
        with self.assertRaises(interfaces.BadStatusError):
            job.quota_names = ()


class CallTests(DatabaseTestCase):

    def test_call_args_are_appended_and_kwargs_override(self):
        job = self.store(Job(record, 1, a=1, b=2))
        self.assertEqual(job(2, b=3, c=4), 1)
        self.assertEqual(calls, [((1, 2), {'a': 1, 'b': 3, 'c': 4})])
        self.assertEqual(dict(job.kwargs), {'a': 1, 'b': 2})

    def test_result_status_and_times(self):
        job = self.store(Job(record))
        job()
        self.assertEqual(job.result, 1)
        self.assertEqual(job.status, interfaces.COMPLETED)
        self.assertEqual(job.active_start, START)
        self.assertEqual(job.active_end, START)
        self.assertEqual(self.logged(logging.INFO, 'zc.async.trace',
                                     'succeeded with result:\n1'),
                         ['%r succeeded with result:\n1' % (job,)])

    def test_result_is_committed(self):
        job = self.store(Job(record))
        job()
        transaction.abort()
        conn, tm = self.other_connection()
        self.assertEqual(conn.root()['job'].result, 1)
        self.assertEqual(conn.root()['job'].status, interfaces.COMPLETED)

    def test_calling_twice_is_a_bad_status(self):
        job = self.store(Job(record))
        job()
        with self.assertRaises(interfaces.BadStatusError) as caught:
            job()
        # 1.5's message exactly: tests match it.
        self.assertEqual(str(caught.exception),
                         'can only call a job with NEW or ASSIGNED status')

    def test_pending_job_cannot_be_called(self):
        queue, agent = self.make_queue()
        job = queue.put(record)
        with self.assertRaisesRegex(interfaces.BadStatusError,
                                    'NEW or ASSIGNED status'):
            job()

    def test_assigned_job_runs_and_tells_its_agent(self):
        queue, agent = self.make_queue()
        job = self.claimed(queue, agent, record)
        self.assertEqual(job(), 1)
        self.assertEqual(len(agent), 0)
        self.assertEqual(list(agent.completed), [job])
        self.assertIs(job.parent, agent)
        self.assertIsNotNone(job.key)
        self.assertEqual(job.initial_callbacks_end, START)

    def test_a_job_calling_itself_fails_with_bad_status(self):
        job = self.store(Job(call_current_job))
        job()
        self.assertTrue(job.result.check(interfaces.BadStatusError))
        self.assertEqual(job.status, interfaces.COMPLETED)

    def test_local_job_is_the_job_while_it_runs(self):
        job = self.store(Job(current_job))
        self.assertIs(job(), job)
        self.assertIsNone(zc.asynchronous.local.getJob())

    def test_raised_error_becomes_failure_and_is_logged(self):
        job = self.store(Job(fail_with_value_error))
        res = job()
        self.assertIs(res, job.result)
        self.assertIsInstance(res, twist.Failure)
        self.assertTrue(res.check(ValueError))
        self.assertEqual(job.status, interfaces.COMPLETED)
        [message] = self.logged(logging.ERROR, 'zc.async.events')
        self.assertTrue(message.startswith(
            '%r failed with traceback:\n*--- Failure' % (job,)))
        self.assertIn('bad data', message)

    def test_failure_log_level_is_honoured(self):
        job = Job(fail_with_value_error)
        job.failure_log_level = logging.WARNING
        self.store(job)()
        self.assertEqual(len(self.logged(logging.WARNING, text='failed')), 1)
        self.assertEqual(self.logged(logging.ERROR), [])

    def test_raising_job_changes_are_aborted(self):
        job = self.store(Job(set_and_fail, 'x', 1))
        job()
        self.assertNotIn('x', self.root)

    def test_returned_failure_does_not_abort(self):
        job = self.store(Job(set_and_return_failure, 'x', 1))
        job()
        self.assertEqual(self.root['x'], 1)
        self.assertTrue(job.result.check(ValueError))

    def test_explosive_error_is_reraised_and_leaves_job_active(self):
        job = self.store(SetUpJob(system_exit))
        with self.assertRaises(SystemExit):
            job()
        transaction.abort()
        self.assertEqual(job.status, interfaces.ACTIVE)
        self.assertEqual(calls, ['setUp', ('tearDown', 'info', False)])

    def test_standalone_job_without_database(self):
        job = Job(operator.mul, 6, 7)
        self.assertEqual(job(), 42)
        self.assertEqual(job.status, interfaces.COMPLETED)


class SetUpTearDownTests(DatabaseTestCase):

    def test_teardown_runs_after_commit_with_setup_info(self):
        job = self.store(SetUpJob(record))
        job()
        # No pending changes: tearDown ran after the result's commit.
        self.assertEqual(calls[0], 'setUp')
        self.assertEqual(calls[2], ('tearDown', 'info', False))

    def test_setup_failure_is_a_job_error_and_teardown_gets_none(self):
        job = SetUpJob(record)
        job.fail_setup = True
        self.store(job)()
        self.assertTrue(job.result.check(RuntimeError))
        self.assertEqual(calls, ['setUp', ('tearDown', None, False)])

    def test_teardown_errors_are_logged_critical_and_ignored(self):
        job = SetUpJob(record)
        job.fail_teardown = True
        self.store(job)()
        self.assertEqual(job.result, 2)  # setUp was the first ``calls`` item
        self.assertEqual(len(self.logged(logging.CRITICAL,
                                         text='Error while tearDown for')), 1)

    def test_a_retry_reruns_setup_and_teardown(self):
        job = SetUpJob(conflict_times, 1, 'done')
        self.store(job)()
        self.assertEqual(job.result, 'done')
        self.assertEqual(
            [c for c in calls if c != 'called'],
            ['setUp', ('tearDown', 'info', False),
             'setUp', ('tearDown', 'info', False)])


class RetryTests(DatabaseTestCase):

    def test_conflicts_are_tried_five_times_by_default(self):
        job = self.store(Job(conflict_always))
        job()
        self.assertEqual(len(calls), 5)
        self.assertTrue(job.result.check(ZODB.POSException.ConflictError))
        self.assertEqual(self.sleeps, [])
        policy = job.getRetryPolicy()
        self.assertIsInstance(policy, zc.asynchronous.job.RetryCommonFourTimes)
        self.assertEqual(policy.data['transaction_error'], 4)
        self.assertEqual(policy.data['first_active'], START)

    def test_conflicts_then_success(self):
        job = self.store(Job(conflict_times, 2, 'ok'))
        self.assertEqual(job(), 'ok')
        self.assertEqual(len(calls), 3)

    def test_retry_forever_policy(self):
        job = Job(conflict_times, 12, 'ok')
        job.retry_policy_factory = zc.asynchronous.job.RetryCommonForever
        self.store(job)()
        self.assertEqual(job.result, 'ok')
        self.assertEqual(len(calls), 13)

    def test_never_retry_policy(self):
        job = Job(conflict_always)
        job.retry_policy_factory = zc.asynchronous.job.NeverRetry
        self.store(job)()
        self.assertEqual(len(calls), 1)

    def test_disconnects_are_retried_with_backoff(self):
        job = self.store(Job(disconnect_times, 14, 'ok'))
        self.assertEqual(job(), 'ok')
        self.assertEqual(self.sleeps,
                         [5, 10, 15, 20, 25, 30, 35, 40, 45, 50, 55, 60, 60,
                          60])

    def test_other_errors_are_not_retried(self):
        job = self.store(Job(fail_with_value_error))
        job()
        self.assertTrue(job.result.check(ValueError))
        self.assertEqual(job.getRetryPolicy().data.get('transaction_error'),
                         None)

    def test_no_retry_once_past_the_begin_by_deadline(self):
        queue, agent = self.make_queue()
        job = self.claimed(queue, agent, conflict_always,
                           begin_by=datetime.timedelta(minutes=1))
        clock._set_frozen_now(START + datetime.timedelta(minutes=2))
        job()
        self.assertEqual(len(calls), 1)
        self.assertTrue(job.result.check(ZODB.POSException.ConflictError))

    def test_retries_inside_the_begin_by_window(self):
        queue, agent = self.make_queue()
        job = self.claimed(queue, agent, conflict_times,
                           begin_by=datetime.timedelta(minutes=1))
        job.args.extend([2, 'ok'])
        transaction.commit()
        self.assertEqual(job(), 'ok')
        self.assertEqual(len(calls), 3)


class RetryPolicySelectionTests(DatabaseTestCase):

    def test_default_policy(self):
        job = Job(record)
        policy = job.getRetryPolicy()
        self.assertIsInstance(policy, zc.asynchronous.job.RetryCommonFourTimes)
        self.assertIs(policy.parent, job)
        self.assertIs(job.getRetryPolicy(), policy)

    def test_unnamed_adapter_replaces_the_default(self):
        zope.component.provideAdapter(
            zc.asynchronous.job.NeverRetry,
            provides=interfaces.IRetryPolicy)
        self.assertIsInstance(Job(record).getRetryPolicy(),
                              zc.asynchronous.job.NeverRetry)

    def test_factory_wins(self):
        zope.component.provideAdapter(
            zc.asynchronous.job.NeverRetry,
            provides=interfaces.IRetryPolicy)
        job = Job(record)
        job.retry_policy_factory = zc.asynchronous.job.RetryCommonForever
        self.assertIsInstance(job.getRetryPolicy(),
                              zc.asynchronous.job.RetryCommonForever)

    def test_string_factory_names_an_adapter(self):
        zope.component.provideAdapter(
            zc.asynchronous.job.NeverRetry,
            provides=interfaces.IRetryPolicy, name='never')
        job = Job(record)
        job.retry_policy_factory = 'never'
        self.assertIsInstance(job.getRetryPolicy(),
                              zc.asynchronous.job.NeverRetry)

    def test_policy_is_created_once(self):
        job = Job(record)
        policy = job.getRetryPolicy()
        job.retry_policy_factory = zc.asynchronous.job.NeverRetry
        self.assertIs(job.getRetryPolicy(), policy)

    def test_callbacks_get_the_callback_policy_and_critical_level(self):
        job = Job(record)
        callback = job.addCallback(record)
        self.assertIs(callback.retry_policy_factory,
                      zc.asynchronous.job.callback_retry_policy_factory)
        self.assertEqual(callback.failure_log_level, logging.CRITICAL)
        self.assertIsInstance(callback.getRetryPolicy(),
                              zc.asynchronous.job.RetryCommonForever)

    def test_callback_adapter_is_used_for_callbacks(self):
        zope.component.provideAdapter(
            zc.asynchronous.job.NeverRetry,
            provides=interfaces.IRetryPolicy, name='callback')
        callback = Job(record).addCallback(record)
        self.assertIsInstance(callback.getRetryPolicy(),
                              zc.asynchronous.job.NeverRetry)

    def test_explicit_callback_settings_win(self):
        callback = Job(record).addCallback(
            record, failure_log_level=logging.INFO,
            retry_policy_factory=zc.asynchronous.job.NeverRetry)
        self.assertEqual(callback.failure_log_level, logging.INFO)
        self.assertIs(callback.retry_policy_factory,
                      zc.asynchronous.job.NeverRetry)


class CommitErrorTests(DatabaseTestCase):

    def test_unstorable_result_becomes_the_commit_failure(self):
        job = self.store(Job(return_unpicklable, 1))
        res = job()
        self.assertEqual(len(calls), 1)
        self.assertIs(res, job.result)
        self.assertTrue(zc.asynchronous.job.isFailure(res))
        self.assertEqual(job.status, interfaces.COMPLETED)
        [lost] = self.logged(logging.INFO, text='Commit failed for')
        self.assertTrue(lost.startswith('Commit failed for %r' % (job,)))
        self.assertIn('Prior to this, job succeeded with result: <unlocked',
                      lost)
        self.assertEqual(len(self.logged(logging.ERROR,
                                         text='failed with traceback')), 1)

    def test_lost_failure_is_logged_at_the_failure_level(self):
        job = self.store(Job(set_lock_and_return_failure))
        job()
        [lost] = self.logged(logging.ERROR, text='Commit failed for')
        self.assertIn('Prior to this, job failed with traceback:', lost)
        self.assertIn('unpicklable partner', lost)

    def test_commit_conflict_reruns_the_callable(self):
        job = self.store(Job(conflicting_commit, 1))
        self.assertEqual(job(), 'committed')
        self.assertEqual(calls.count('called'), 2)

    def test_commit_conflicts_count_with_job_conflicts(self):
        job = self.store(Job(conflicting_commit, 10))
        job()
        self.assertEqual(calls.count('called'), 5)
        self.assertTrue(job.result.check(ZODB.POSException.ConflictError))
        self.assertEqual(
            len(self.logged(logging.INFO, text='Commit failed for')), 1)

    def test_retry_forever_retries_other_commit_errors_with_backoff(self):
        job = Job(return_unpicklable, 3)
        job.retry_policy_factory = zc.asynchronous.job.RetryCommonForever
        self.store(job)()
        self.assertEqual(job.result, 42)
        self.assertEqual(len(calls), 4)
        self.assertEqual(self.sleeps, [1, 2])
        self.assertEqual(len(self.logged(
            logging.CRITICAL, text='requests another attempt in 0 seconds '
            'after 1 counts of other occurrences')), 1)


def set_lock_and_return_failure():
    job = zc.asynchronous.local.getJob()
    job.annotations['partner'] = threading.Lock()
    return twist.Failure(ValueError('unpicklable partner'))


def conflicting_commit(times):
    """Change ``root['x']``, and have another connection change it first,
    the first ``times`` calls: the job's commit then conflicts."""
    calls.append('called')
    job = zc.asynchronous.local.getJob()
    job._p_jar.root()['x'] = len(calls)
    if calls.count('called') <= times:
        tm = transaction.TransactionManager()
        conn = job._p_jar.db().open(transaction_manager=tm)
        conn.root()['x'] = -1
        tm.commit()
        conn.close()
    return 'committed'


class LostCommitTests(DatabaseTestCase):
    """A ZEO disconnect in the second phase of a commit raises although the
    server committed: the job must neither stop nor run twice."""

    def disconnect_after_commit(self, job, nth):
        """Make the ``nth`` commit of the job's manager land, then raise
        ClientDisconnected as a lost second phase would."""
        manager = twist.transactionManager(job)
        commits = []
        real_commit = manager.commit

        def commit():
            commits.append(None)
            real_commit()
            if len(commits) == nth:
                raise ZEO.Exceptions.ClientDisconnected('lost tpc_finish')
        self._patch(manager, 'commit', commit)

    def test_a_lost_start_commit_is_taken_as_started(self):
        job = self.store(Job(record, 'once'))
        self.disconnect_after_commit(job, 1)
        self.assertEqual(job(), 1)
        self.assertEqual(calls, [(('once',), {})])
        self.assertEqual(job.status, interfaces.COMPLETED)

    def test_a_lost_result_commit_does_not_run_the_callable_again(self):
        job = self.store(Job(record, 'once'))
        self.disconnect_after_commit(job, 2)
        self.assertEqual(job(), 1)
        self.assertEqual(calls, [(('once',), {})])
        self.assertEqual(job.status, interfaces.COMPLETED)
        self.assertEqual(job.result, 1)


class RescheduleTests(DatabaseTestCase):

    def _job_with_answers(self, queue, agent, *answers):
        ANSWERS.extend(answers)
        return self.claimed(queue, agent, fail_with_value_error,
                            retry_policy_factory=policy_answer)

    def test_timedelta_answer_puts_the_job_back_later(self):
        queue, agent = self.make_queue()
        job = self._job_with_answers(queue, agent,
                                     datetime.timedelta(minutes=5))
        self.assertIs(job(), job)
        self.assertEqual(job.status, interfaces.PENDING)
        self.assertEqual(len(agent), 0)
        self.assertEqual(list(queue), [job])
        self.assertEqual(job.begin_after,
                         START + datetime.timedelta(minutes=5))
        self.assertIsNone(job.active_start)
        self.assertIsNone(job.result)

    def test_future_datetime_answer(self):
        queue, agent = self.make_queue()
        later = START + datetime.timedelta(hours=1)
        job = self._job_with_answers(queue, agent, later)
        job()
        self.assertEqual(job.begin_after, later)

    def test_naive_datetime_answer_means_utc(self):
        queue, agent = self.make_queue()
        later = START + datetime.timedelta(hours=1)
        job = self._job_with_answers(queue, agent,
                                     later.replace(tzinfo=None))
        job()
        self.assertEqual(job.begin_after, later)

    def test_zero_answer_puts_the_job_back_first(self):
        queue, agent = self.make_queue()
        job = self._job_with_answers(queue, agent, datetime.timedelta(0))
        other = queue.put(record)
        job()
        self.assertEqual(list(queue), [job, other])
        self.assertEqual(job.begin_after, START)  # kept as it was

    def test_past_datetime_answer_puts_the_job_back_first(self):
        queue, agent = self.make_queue()
        job = self._job_with_answers(
            queue, agent, START - datetime.timedelta(days=1))
        other = queue.put(record)
        job()
        self.assertEqual(list(queue), [job, other])

    def test_rescheduled_job_runs_again(self):
        queue, agent = self.make_queue()
        job = self._job_with_answers(queue, agent,
                                     datetime.timedelta(seconds=-1))
        job()
        transaction.commit()
        self.assertIs(agent.claimJob(), job)
        ANSWERS.append(False)
        job()
        self.assertTrue(job.result.check(ValueError))
        self.assertEqual(job.status, interfaces.COMPLETED)

    def test_standalone_job_cannot_be_rescheduled(self):
        ANSWERS.append(datetime.timedelta(minutes=1))
        job = Job(fail_with_value_error)
        job.retry_policy_factory = policy_answer
        self.store(job)()
        self.assertTrue(job.result.check(ValueError))
        self.assertEqual(len(self.logged(
            logging.CRITICAL, text='can only reschedule a job directly in '
            'an agent')), 1)


class InnerJobTests(DatabaseTestCase):

    def test_outer_job_waits_for_a_returned_job(self):
        queue, agent = self.make_queue()
        inner = Job(operator.mul, 21, 2)
        outer = self.claimed(queue, agent, Job(return_job, inner))
        callback = outer.addCallback(note_result)
        queue.put(inner)
        transaction.commit()
        self.assertIs(outer(), inner)
        self.assertEqual(outer.status, interfaces.ACTIVE)
        self.assertIs(outer.result, inner)
        self.assertEqual(len(agent), 1)
        self.assertIs(agent.claimJob(), inner)
        transaction.commit()
        inner()
        self.assertEqual(outer.status, interfaces.COMPLETED)
        self.assertEqual(outer.result, 42)
        self.assertEqual(callback.result, 42)
        self.assertEqual(len(agent), 0)
        self.assertIs(outer.parent, agent)

    def test_chains_cascade(self):
        last = Job(operator.add, 40, 2)
        middle = Job(return_job, last)
        first = self.store(Job(return_job, middle))
        first()
        middle()
        self.assertEqual(first.status, interfaces.ACTIVE)
        last()
        self.assertEqual(middle.result, 42)
        self.assertEqual(first.result, 42)
        self.assertEqual(first.status, interfaces.COMPLETED)
        self.assertIsNone(first.parent)

    def test_inner_failure_is_the_outer_result(self):
        inner = Job(fail_with_value_error)
        outer = self.store(Job(return_job, inner))
        outer()
        inner()
        self.assertTrue(outer.result.check(ValueError))

    def test_completed_inner_job_completes_the_outer_at_once(self):
        inner = self.store(Job(operator.mul, 6, 7), 'inner')
        inner()
        outer = self.store(Job(return_job, inner))
        outer()
        self.assertEqual(outer.result, 42)
        self.assertEqual(outer.status, interfaces.COMPLETED)


    def test_inner_job_finishing_while_outer_is_put_back(self):
        # The outer job was interrupted and put back (handleInterrupt) while
        # its inner job ran on: the inner job's completion callback fails,
        # and the outer job's re-run must wait on the inner job anew.
        queue, agent = self.make_queue()
        inner = Job(operator.mul, 21, 2)
        outer = self.claimed(queue, agent, Job(return_job, inner))
        queue.put(inner)
        transaction.commit()
        outer()
        outer.handleInterrupt()
        transaction.commit()
        self.assertEqual(outer.status, interfaces.PENDING)
        self.assertIs(agent.claimJob(), outer)  # put back: first in line
        self.assertIs(agent.claimJob(), inner)
        transaction.commit()
        inner()
        self.assertEqual(outer.status, interfaces.ASSIGNED)
        outer()
        self.assertEqual(outer.status, interfaces.COMPLETED)
        self.assertEqual(outer.result, 42)


class DeferredTests(DatabaseTestCase):

    def test_deferred_result_is_stored_in_its_own_connection(self):
        job = self.store(Job(return_deferred))
        callback = job.addCallback(note_result)
        transaction.commit()
        self.assertIs(job(), DEFERREDS[0])
        self.assertEqual(job.status, interfaces.ACTIVE)
        self.assertIsNone(job.result)
        DEFERREDS[0].callback(42)
        self.assertEqual(job.status, interfaces.ACTIVE)  # not synced yet
        self.sync()
        self.assertEqual(job.status, interfaces.COMPLETED)
        self.assertEqual(job.result, 42)
        self.assertEqual(callback.result, 42)

    def test_deferred_failure(self):
        job = self.store(Job(return_deferred))
        job()
        DEFERREDS[0].errback(ValueError('too bad'))
        self.sync()
        self.assertIsInstance(job.result, twist.Failure)
        self.assertTrue(job.result.check(ValueError))
        self.assertEqual(len(self.logged(logging.ERROR,
                                         text='failed with traceback')), 1)


class CallbackTests(DatabaseTestCase):

    def test_callbacks_get_the_result_and_do_not_chain(self):
        job = self.store(Job(operator.mul, 5, 3))
        first = job.addCallback(Job(operator.mul, 4))
        second = job.addCallback(note_result)
        self.assertIs(first.parent, job)
        job()
        self.assertEqual(first.result, 60)
        self.assertEqual(second.result, 15)
        self.assertEqual(job.result, 15)
        self.assertEqual(first.status, interfaces.COMPLETED)

    def test_chaining_on_a_callback(self):
        job = self.store(Job(operator.mul, 5, 3))
        job.addCallback(Job(operator.mul, 4)).addCallback(note_result)
        job()
        self.assertEqual(calls, [60])

    def test_callbacks_run_in_order(self):
        job = self.store(Job(operator.add, 1, 1))
        for ix in range(3):
            job.addCallback(Job(note_args, 'cb%d' % ix))
        job()
        self.assertEqual(calls, [('cb0', 2), ('cb1', 2), ('cb2', 2)])

    def test_local_job_in_a_callback_is_the_callback(self):
        job = self.store(Job(record))
        callback = job.addCallback(Job(current_job_ignoring))
        job()
        self.assertIs(callback.result, callback)

    def test_callback_added_while_running_callbacks_is_run(self):
        job = self.store(Job(operator.add, 1, 1))
        job.addCallback(add_callback_to_parent)
        job()
        self.assertEqual(calls, [2])
        self.assertEqual(len(list(job.callbacks)), 2)
        self.assertEqual(job.status, interfaces.COMPLETED)

    def test_callback_added_to_completed_job_runs_at_once(self):
        job = self.store(Job(operator.add, 1, 1))
        job()
        callback = job.addCallback(note_result)
        self.assertEqual(callback.result, 2)
        self.assertEqual(job.status, interfaces.COMPLETED)
        transaction.abort()
        self.assertEqual(callback.status, interfaces.COMPLETED)

    def test_failing_callback_is_logged_critical_and_parent_unaffected(self):
        job = self.store(Job(operator.add, 1, 1))
        callback = job.addCallback(Job(fail_with_value_error_ignoring))
        job()
        self.assertEqual(job.result, 2)
        self.assertTrue(callback.result.check(ValueError))
        self.assertEqual(len(self.logged(logging.CRITICAL,
                                         text='failed with traceback')), 1)

    def test_expired_callback_is_failed(self):
        job = self.store(Job(operator.add, 1, 1))
        callback = Job(note_result)
        callback.begin_after = START
        callback.begin_by = datetime.timedelta(seconds=1)
        job.addCallback(callback)
        clock._set_frozen_now(START + datetime.timedelta(seconds=2))
        job()
        self.assertTrue(isTimeoutError(callback.result))
        self.assertEqual(calls, [])
        self.assertEqual(len(self.logged(
            logging.ERROR, text='failing expired callback')), 1)

    def test_interrupted_callback_is_retried_by_default(self):
        job = self.store(Job(operator.add, 1, 1))
        callback = job.addCallback(note_result)
        self._interrupt_during_callbacks(job, callback)
        job.resumeCallbacks()
        self.assertEqual(callback.result, 2)
        self.assertEqual(job.status, interfaces.COMPLETED)
        self.assertEqual(callback.getRetryPolicy().data['interruptions'], 1)
        self.assertEqual(len(self.logged(
            logging.DEBUG, text='retrying interrupted callback')), 1)

    def test_interrupted_callback_aborted_by_its_policy(self):
        job = self.store(Job(operator.add, 1, 1))
        callback = job.addCallback(
            note_result, retry_policy_factory=zc.asynchronous.job.NeverRetry)
        self._interrupt_during_callbacks(job, callback)
        job.resumeCallbacks()
        self.assertTrue(callback.result.check(interfaces.AbortedError))
        self.assertEqual(job.status, interfaces.COMPLETED)

    def test_interrupted_callback_with_time_answer_is_retried_now(self):
        job = self.store(Job(operator.add, 1, 1))
        callback = job.addCallback(note_result,
                                   retry_policy_factory=policy_answer)
        ANSWERS.append(datetime.timedelta(0))
        self._interrupt_during_callbacks(job, callback)
        job.resumeCallbacks()
        self.assertEqual(callback.result, 2)
        self.assertEqual(len(self.logged(
            logging.ERROR, text='cannot reschedule a callback, only retry.'
            )), 1)

    def _interrupt_during_callbacks(self, job, callback):
        """Leave ``job`` in CALLBACKS and ``callback`` ACTIVE, as a
        dispatcher that died while running the callback would."""
        job._status_id = zc.asynchronous.job._CALLBACKS
        job._result = 2
        callback._status_id = zc.asynchronous.job._ACTIVE
        transaction.commit()

    def test_callback_in_callbacks_status_is_resumed(self):
        job = self.store(Job(operator.add, 1, 1))
        callback = job.addCallback(note_result)
        grandchild = callback.addCallback(Job(note_result))
        job._status_id = callback._status_id = (
            zc.asynchronous.job._CALLBACKS)
        job._result = callback._result = 2
        transaction.commit()
        job.resumeCallbacks()
        self.assertEqual(grandchild.result, 2)
        self.assertEqual(callback.status, interfaces.COMPLETED)
        self.assertEqual(calls, [2])

    def test_resume_callbacks_needs_callbacks_status(self):
        with self.assertRaisesRegex(
                interfaces.BadStatusError,
                '^can only resumeCallbacks on a job with CALLBACKS status'):
            Job(record).resumeCallbacks()


def current_job_ignoring(result):
    return zc.asynchronous.local.getJob()


def fail_with_value_error_ignoring(result):
    raise ValueError('callback failed')


class ConcurrentCallbackTests(DatabaseTestCase):
    """jobs_and_transactions: callbacks added by other transactions."""

    def test_callback_added_by_another_thread_while_running_callbacks(self):
        job = self.store(Job(operator.add, 1, 1))
        job.addCallback(Job(add_callback_elsewhere))
        job()
        self.assertEqual(calls, [2])
        self.assertEqual(len(list(job.callbacks)), 2)

    def test_callback_added_just_before_completion_is_run(self):
        job = self.store(LateCallbackJob(operator.add, 1, 1))
        job()
        self.assertEqual(calls, ['late', 2])
        self.assertEqual(job.status, interfaces.COMPLETED)

    def test_adding_to_a_job_completed_meanwhile_conflicts(self):
        job = self.store(Job(operator.add, 1, 1))
        conn, tm = self.other_connection()
        other_job = conn.root()['job']
        other_job.addCallback(note_result)
        job()  # completes in this connection
        with self.assertRaises(ZODB.POSException.ConflictError):
            tm.commit()
        tm.abort()
        callback = other_job.addCallback(note_result)  # now runs at once
        self.assertEqual(callback.result, 2)
        self.assertEqual(calls, [2])

    def test_a_job_that_changed_nothing_completes_in_its_result_commit(self):
        job = self.store(Job(record, 'quiet'))
        start = self.db.lastTransaction()
        job()
        commits = list(self.db.storage.iterator(start))[1:]
        self.assertEqual(len(commits), 2)  # ACTIVE, then result + COMPLETED
        self.assertEqual(job.status, interfaces.COMPLETED)

    def test_a_late_callback_does_not_run_a_quiet_callable_again(self):
        job = self.store(LateCallbackJob(record, 'once'))
        job.late_once = True
        transaction.commit()
        job()
        # The completing commit conflicted: only the result was stored
        # again, then the late callback ran with it.
        self.assertEqual(calls, [(('once',), {}), 'late', 1])
        self.assertEqual(job.status, interfaces.COMPLETED)


def add_callback_elsewhere(result):
    """A callback that makes another connection add a callback to its
    parent and commit, as a second thread would."""
    job = zc.asynchronous.local.getJob()
    tm = transaction.TransactionManager()
    conn = job._p_jar.db().open(transaction_manager=tm)
    try:
        parent = conn.get(job.parent._p_oid)
        parent.addCallback(Job(note_result))
        tm.commit()
    finally:
        conn.close()
    return result


class LateCallbackJob(Job):
    """Another connection adds a callback just before the job completes."""

    late_once = False  # add the late callback even after other calls

    def _finish(self):
        if not calls or (self.late_once and 'late' not in calls):
            calls.append('late')
            tm = transaction.TransactionManager()
            conn = self._p_jar.db().open(transaction_manager=tm)
            conn.get(self._p_oid).addCallback(Job(note_result))
            tm.commit()
            conn.close()
        super()._finish()


class CallbackProxyTests(DatabaseTestCase):

    def test_success_branch(self):
        job = self.store(Job(operator.mul, 6, 7))
        proxy = job.addCallbacks(note_result, failure_note)
        self.assertIsInstance(proxy,
                              zc.asynchronous.job.SuccessFailureCallbackProxy)
        self.assertTrue(zope.interface.verify.verifyObject(
            interfaces.ICallbackProxy, proxy))
        self.assertEqual(proxy.success.callable, note_result)
        self.assertEqual(proxy.failure.callable, failure_note)
        self.assertIsNone(proxy.job)
        self.assertEqual(proxy.status, interfaces.NEW)
        job()
        self.assertIs(proxy.job, proxy.success)
        self.assertEqual(proxy.result, 42)
        self.assertEqual(proxy.status, interfaces.COMPLETED)
        self.assertEqual(calls, [42])

    def test_failure_branch_and_chaining(self):
        job = self.store(Job(fail_with_value_error))
        proxy = job.addCallbacks(note_result, failure_note)
        proxy.addCallback(Job(note_result))
        job()
        self.assertIs(proxy.job, proxy.failure)
        self.assertEqual(calls, ['failure', 0])
        self.assertTrue(job.result.check(ValueError))
        self.assertEqual(proxy.result, 0)

    def test_missing_branch_passes_the_bare_result(self):
        job = self.store(Job(operator.mul, 6, 7))
        proxy = job.addCallbacks(failure=failure_note)
        chained = proxy.addCallback(note_result)
        job()
        self.assertEqual(proxy.result, 42)
        self.assertEqual(chained.result, 42)
        self.assertEqual(calls, [42])

    def test_no_branches_give_a_pass_through_proxy(self):
        job = self.store(Job(operator.mul, 6, 7))
        proxy = job.addCallbacks()
        self.assertIsNone(proxy.success)
        self.assertIsNone(proxy.failure)
        job()
        self.assertEqual(proxy.result, 42)

    def test_callbacks_added_after_choice_go_to_the_chosen_job(self):
        job = self.store(Job(operator.mul, 6, 7))
        proxy = job.addCallbacks(note_result)
        job()
        callback = proxy.addCallback(Job(note_result))
        self.assertIs(callback.parent, proxy.job)
        self.assertEqual(callback.result, 42)

    def test_conditional_proxy_picks_first_true_condition(self):
        job = self.store(Job(operator.mul, 6, 7))
        proxy = zc.asynchronous.job.ConditionalCallbackProxy(
            (is_small, Job(note_args, 'small')),
            (is_answer, Job(note_args, 'answer')),
            Job(note_args, 'default'))
        job.addCallback(proxy)
        self.assertEqual(proxy.default.failure_log_level, logging.CRITICAL)
        job()
        self.assertEqual(calls, [('answer', 42)])

    def test_conditional_proxy_default(self):
        job = self.store(Job(operator.mul, 6, 6))
        proxy = job.addCallback(zc.asynchronous.job.ConditionalCallbackProxy(
            (is_answer, Job(note_args, 'answer')),
            Job(note_args, 'default')))
        job()
        self.assertEqual(calls, [('default', 36)])
        self.assertIs(proxy.job, proxy.default)

    def test_proxy_status_follows_parents_until_chosen(self):
        queue, agent = self.make_queue()
        job = queue.put(record)
        proxy = job.addCallbacks(note_result)
        self.assertEqual(proxy.status, interfaces.PENDING)

    def test_bad_conditionals_are_refused(self):
        with self.assertRaisesRegex(TypeError, 'condition, job'):
            zc.asynchronous.job.ConditionalCallbackProxy(
                ('not callable', Job(record)))


def failure_note(failure):
    calls.append('failure')
    return 0


def is_small(value):
    return value < 10


def is_answer(value):
    return value == 42


class HandleInterruptTests(DatabaseTestCase):

    def _interrupted(self, queue, agent, item=record, **kw):
        """A claimed job left ACTIVE, pulled from its agent by cleanup and
        wrapped in a handleInterrupt job (as a dead dispatcher's is)."""
        job = self.claimed(queue, agent, item, **kw)
        job._status_id = zc.asynchronous.job._ACTIVE
        job._active_start = START
        agent.pull()
        wrapper = queue.put(job.handleInterrupt,
                            retry_policy_factory=zc.asynchronous.job
                            .RetryCommonForever)
        transaction.commit()
        self.assertIs(job.parent, wrapper)
        return job, wrapper

    def test_default_policy_puts_the_job_back_first(self):
        queue, agent = self.make_queue()
        job, wrapper = self._interrupted(queue, agent)
        other = queue.put(record)
        self.assertIs(agent.claimJob(), wrapper)
        transaction.commit()
        self.assertIs(job.queue, queue)
        wrapper()
        self.assertEqual(job.status, interfaces.PENDING)
        self.assertEqual(list(queue), [job, other])
        self.assertEqual(job.getRetryPolicy().data['interruptions'], 1)
        self.assertEqual(job.getRetryPolicy().data['first_active'], START)
        self.assertEqual(wrapper.status, interfaces.COMPLETED)
        self.assertIs(agent.claimJob(), job)
        transaction.commit()
        self.assertEqual(job(), 1)

    def test_tenth_interruption_aborts(self):
        queue, agent = self.make_queue()
        job = self.claimed(queue, agent, record)
        callback = job.addCallback(note_result)
        job.getRetryPolicy().data['interruptions'] = 9
        job._status_id = zc.asynchronous.job._ACTIVE
        transaction.commit()
        job.handleInterrupt()
        self.assertTrue(job.result.check(interfaces.AbortedError))
        self.assertEqual(job.status, interfaces.COMPLETED)
        self.assertTrue(callback.result.check(interfaces.AbortedError))
        self.assertEqual(len(agent), 0)
        self.assertEqual(len(self.logged(logging.ERROR,
                                         text='AbortedError')), 1)

    def test_never_retry_aborts_at_once(self):
        queue, agent = self.make_queue()
        job = self.claimed(queue, agent, record,
                           retry_policy_factory=zc.asynchronous.job
                           .NeverRetry)
        job._status_id = zc.asynchronous.job._ACTIVE
        transaction.commit()
        job.handleInterrupt()
        self.assertTrue(job.result.check(interfaces.AbortedError))

    def test_time_answer_puts_the_job_back_later(self):
        queue, agent = self.make_queue()
        ANSWERS.append(datetime.timedelta(hours=1))
        job = self.claimed(queue, agent, record,
                           retry_policy_factory=policy_answer)
        job._status_id = zc.asynchronous.job._ACTIVE
        transaction.commit()
        job.handleInterrupt()
        self.assertEqual(job.status, interfaces.PENDING)
        self.assertEqual(job.begin_after, START + datetime.timedelta(hours=1))
        self.assertEqual(len(agent), 0)

    def test_callbacks_status_resumes_callbacks(self):
        job = self.store(Job(operator.add, 1, 1))
        callback = job.addCallback(note_result)
        job._status_id = zc.asynchronous.job._CALLBACKS
        job._result = 2
        transaction.commit()
        job.handleInterrupt()
        self.assertEqual(callback.result, 2)
        self.assertEqual(job.status, interfaces.COMPLETED)

    def test_other_statuses_are_refused(self):
        with self.assertRaisesRegex(
                interfaces.BadStatusError,
                '^can only call ``handleInterrupt`` on a job with ACTIVE '
                'status'):
            Job(record).handleInterrupt()


class FailTests(DatabaseTestCase):

    def test_fail_defaults_to_timeout_error_and_runs_callbacks(self):
        job = self.store(Job(record))
        callback = job.addCallback(note_result)
        job.fail()
        self.assertTrue(isTimeoutError(job.result))
        self.assertTrue(job.result.getTraceback().rstrip().endswith(
            'zc.async.interfaces.TimeoutError: '.rstrip()))
        self.assertEqual(job.status, interfaces.COMPLETED)
        self.assertIs(callback.result, calls[0])
        self.assertEqual(len(self.logged(logging.ERROR,
                                         text='failed with traceback')), 1)

    def test_fail_with_an_error(self):
        job = self.store(Job(record))
        job.fail(RuntimeError('stop'))
        self.assertTrue(job.result.check(RuntimeError))
        self.assertEqual(calls, [])

    def test_fail_a_pending_job_runs_its_callbacks(self):
        queue, agent = self.make_queue()
        job = queue.put(record)
        callback = job.addCallback(note_result)
        transaction.commit()
        job.fail()
        self.assertEqual(job.status, interfaces.COMPLETED)
        self.assertTrue(isTimeoutError(callback.result))

    def test_active_or_completed_jobs_cannot_fail(self):
        job = self.store(Job(record))
        job()
        with self.assertRaisesRegex(
                interfaces.BadStatusError,
                '^can only call fail on a job with NEW, PENDING, or ASSIGNED '
                'status'):
            job.fail()

    def test_fail_of_a_job_left_in_callbacks_resumes_them(self):
        job = self.store(Job(record))
        callback = job.addCallback(note_result)
        job._status_id = zc.asynchronous.job._CALLBACKS
        transaction.commit()
        job.fail()
        self.assertEqual(job.status, interfaces.COMPLETED)
        self.assertEqual(callback.status, interfaces.COMPLETED)


class ReassignmentTests(DatabaseTestCase):

    def _as_worker(self, agent_name='main', uuid=UUID):
        local = zc.asynchronous.local
        local.dispatcher = types.SimpleNamespace(UUID=uuid, reactor=None)
        local.name = agent_name

    def test_job_runs_in_its_own_dispatchers_thread(self):
        queue, agent = self.make_queue()
        job = self.claimed(queue, agent, record)
        self._as_worker()
        self.assertEqual(job(), 1)

    def test_job_of_another_agent_is_refused(self):
        queue, agent = self.make_queue()
        job = self.claimed(queue, agent, record)
        self._as_worker(agent_name='other')
        with self.assertRaisesRegex(interfaces.ReassignedError,
                                    "agent 'main'.*not agent 'other'"):
            job()
        self.assertEqual(calls, [])
        self.assertEqual(job.status, interfaces.ASSIGNED)
        self.assertEqual(len(self.logged(logging.ERROR, text='was reassigned.'
                                         '  Likely cause')), 1)

    def test_job_of_another_dispatcher_is_refused(self):
        queue, agent = self.make_queue()
        job = self.claimed(queue, agent, record)
        self._as_worker(uuid=OTHER_UUID)
        with self.assertRaises(interfaces.ReassignedError):
            job()

    def test_job_taken_away_during_a_retry_decision(self):
        queue, agent = self.make_queue()
        job = self.claimed(queue, agent, conflict_after_reassignment)
        self._as_worker()
        with self.assertRaises(interfaces.ReassignedError):
            job()
        self.assertEqual(calls, ['called'])

    def test_returning_a_completed_job_of_no_agent(self):
        done = self.store(Job(operator.mul, 6, 7), 'done')
        done()
        queue, agent = self.make_queue()
        job = self.claimed(queue, agent, Job(return_job, done))
        self._as_worker()
        self.assertIs(job(), done)
        self.assertEqual(job.result, 42)
        self.assertEqual(job.status, interfaces.COMPLETED)

    def test_callbacks_are_checked_too(self):
        queue, agent = self.make_queue()
        job = self.claimed(queue, agent, record)
        job.addCallback(Job(note_result))
        job.addCallback(Job(rename_agent))
        job.addCallback(Job(note_args, 'never'))
        transaction.commit()
        self._as_worker()
        with self.assertRaises(interfaces.ReassignedError):
            job()
        self.assertEqual(calls[1:], [1])


def conflict_after_reassignment():
    calls.append('called')
    zc.asynchronous.local.name = 'someone else'
    raise ZODB.POSException.ConflictError()


def rename_agent(result):
    zc.asynchronous.local.name = 'renamed'


class PicklabilityTests(DatabaseTestCase):

    def test_plain_and_stored_parts_are_fine(self):
        demo = self.root['demo'] = Demo()
        transaction.commit()
        job = Job(demo.increase, Job(record), key=Demo())
        job.addCallback(note_result)
        job._check_picklable()  # raises nothing

    def test_unpicklable_argument_is_named(self):
        job = Job(record, 1, threading.Lock())
        with self.assertRaisesRegex(TypeError,
                                    r'cannot store .*: its argument 1 '
                                    r'cannot be pickled'):
            job._check_picklable()

    def test_unpicklable_keyword_argument_is_named(self):
        job = Job(record, lock=threading.Lock())
        with self.assertRaisesRegex(TypeError, "keyword argument 'lock'"):
            job._check_picklable()

    def test_local_function_is_named(self):
        def local_function():
            pass
        with self.assertRaisesRegex(TypeError, 'its callable'):
            Job(local_function)._check_picklable()

    def test_new_persistent_objects_are_checked_with_their_state(self):
        demo = Demo()
        demo.lock = threading.Lock()
        with self.assertRaisesRegex(TypeError, 'its argument 0'):
            Job(record, demo)._check_picklable()

    def test_unpicklable_callback_is_found(self):
        job = Job(record)
        job.addCallback(Job(record, threading.Lock()))
        with self.assertRaisesRegex(TypeError, 'its callbacks'):
            job._check_picklable()

    def test_queue_put_refuses_an_unpicklable_job(self):
        queue, agent = self.make_queue()
        with self.assertRaisesRegex(TypeError, 'cannot be pickled'):
            queue.put(Job(record, threading.Lock()))
        self.assertEqual(len(queue), 0)


class ModuleTests(unittest.TestCase):

    def test_1_5_names_are_importable_from_zc_async_job(self):
        import importlib
        job = importlib.import_module('zc.async.job')
        for name in ('Job', 'ConditionalCallbackProxy',
                     'SuccessFailureCallbackProxy', 'RetryCommonFourTimes',
                     'RetryCommonForever', 'NeverRetry',
                     'callback_retry_policy_factory', 'serial', 'parallel',
                     '_transparent', '_queue_next', '_schedule_serial',
                     '_queue_all', '_schedule_parallel', 'isFailure'):
            obj = getattr(job, name)
            self.assertEqual(obj.__module__, 'zc.async.job', name)

    def test_unknown_attribute(self):
        with self.assertRaises(AttributeError):
            zc.asynchronous.job.no_such_name


def deferred_from_the_reactor():
    """Return a Deferred that the dispatcher's reactor fires a second later.
    """
    deferred = twisted.internet.defer.Deferred()
    zc.asynchronous.local.getReactor().callLater(1, deferred.callback, 42)
    return deferred


def total(*jobs):
    return sum(job.result for job in jobs)


class DispatcherTests(ReactorTestCase):
    """Jobs run by a real dispatcher's worker threads (test reactor)."""

    def test_deferred_result_and_composite_jobs(self):
        waiting = self.queue.put(deferred_from_the_reactor)
        composite = self.queue.put(zc.asynchronous.job.parallel(
            Job(operator.mul, 7, 1), Job(operator.mul, 7, 2),
            zc.asynchronous.job.serial(Job(operator.mul, 7, 3),
                                       postprocess=total),
            postprocess=total))
        transaction.commit()
        self.run_until_completed(waiting, composite)
        self.assertEqual(waiting.result, 42)
        self.assertEqual(composite.result, 42)
        self.assertEqual(len(self.queue), 0)


class LazyDescriptionTests(unittest.TestCase):
    """Retry-loop descriptions are formatted only when logged, and still
    name the job when its repr cannot be computed then."""

    def test_formats_on_demand(self):
        text = logs.Lazy('calling %r for %r', 'x', 2)
        self.assertEqual(str(text), "calling 'x' for 2")

    def test_falls_back_to_a_name_without_state(self):
        class Unloadable(persistent.Persistent):
            def __repr__(self):
                raise ZEO.Exceptions.ClientDisconnected()
        ob = Unloadable()
        text = logs.Lazy('preparing for call of %r', ob)
        self.assertEqual(
            str(text), 'preparing for call of '
            'zc.async.tests.test_job.Unloadable (oid ?, db ?)')
