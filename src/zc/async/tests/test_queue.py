"""Tests of zc.async.queue: Queues, Queue, Quotas, Quota, Dispatchers and
DispatcherAgents (reference sections 1.2, 1.4, 1.5, 1.9, 2.3, 3.3, 3.5.3,
3.5.4 and 3.7)."""
import datetime
import logging
import os
import shutil
import tempfile
import threading
import time
import unittest
import unittest.mock
import uuid

import BTrees.Length
import persistent
import persistent.mapping
import transaction
import zope.component
import zope.event
import zope.interface.verify
import ZODB
import ZODB.ConflictResolution
import ZODB.FileStorage
import ZODB.MappingStorage
import ZODB.POSException
import ZODB.serialize

import zc.asynchronous.agent
import zc.asynchronous.clock
import zc.asynchronous.duefifo
import zc.asynchronous.interfaces as interfaces
import zc.asynchronous.job
import zc.asynchronous.queue
import zc.asynchronous.twist
import zc.asynchronous.utils
import zc.queue
import zc.queue._queue

UTC = datetime.timezone.utc
START = datetime.datetime(2006, 8, 10, 15, 44, 22, 211, UTC)
Job = zc.asynchronous.job.Job
Queue = zc.asynchronous.queue.Queue
DueBucket = zc.asynchronous.queue.DueBucket
DueSegment = zc.asynchronous.queue.DueSegment
DueFIFO = zc.asynchronous.queue.DueFIFO
_new_fifo = zc.asynchronous.duefifo.new_fifo


# Module-level callables: jobs must be picklable.

def work(*args):
    return args


def other_work():
    return 'other'


def wait_for_inner(inner):
    """Return a job, so the calling job stays ACTIVE until ``inner`` ends."""
    return inner


def explode(result):
    """A callback whose process "dies": its job stays in CALLBACKS."""
    raise SystemExit()


def set_now(dt):
    zc.asynchronous.clock._set_frozen_now(dt)


class Clocked(unittest.TestCase):
    """Base: frozen clock at START and captured zope.event notifications."""

    def setUp(self):
        set_now(START)
        self.addCleanup(set_now, None)
        self.events = []
        zope.event.subscribers.append(self.events.append)
        self.addCleanup(zope.event.subscribers.remove, self.events.append)

    def tick(self, **kwargs):
        """Move the frozen clock forward by ``timedelta(**kwargs)``."""
        set_now(zc.asynchronous.utils.now() + datetime.timedelta(**kwargs))

    def eventsOf(self, iface):
        return [e for e in self.events if iface.providedBy(e)]


class DBTestCase(Clocked):
    """Base: a MappingStorage database holding the default queue."""

    def setUp(self):
        super().setUp()
        self.db = ZODB.DB(ZODB.MappingStorage.MappingStorage())
        self.addCleanup(self.db.close)
        self.tm = transaction.TransactionManager()
        self.conn = self.db.open(self.tm)
        self.addCleanup(self.tm.abort)
        self.root = self.conn.root()
        self.queues = zc.asynchronous.queue.Queues()
        self.root[interfaces.KEY] = self.queues
        self.queue = self.queues[''] = Queue()
        self.tm.commit()

    def commit(self):
        self.tm.commit()


class UUIDUtilityMixin:
    """Register an instance UUID utility for the duration of a test."""

    def registerUUID(self):
        self.uuid = uuid.uuid1()
        registry = zope.component.getGlobalSiteManager()
        registry.registerUtility(self.uuid, interfaces.IUUID)
        self.addCleanup(registry.unregisterUtility, self.uuid,
                        interfaces.IUUID)
        return self.uuid


# -------------------------------------------------------------- interfaces

class InterfaceTests(DBTestCase):

    def test_queue_provides_IQueue(self):
        self.assertTrue(
            zope.interface.verify.verifyObject(interfaces.IQueue, self.queue))

    def test_quota_provides_IQuota(self):
        self.queue.quotas.create('q')
        self.assertTrue(zope.interface.verify.verifyObject(
            interfaces.IQuota, self.queue.quotas['q']))

    def test_dispatchers_provide_IDispatchers(self):
        self.assertTrue(zope.interface.verify.verifyObject(
            interfaces.IDispatchers, self.queue.dispatchers))

    def test_dispatcher_agents_provide_IDispatcherAgents(self):
        self.queue.dispatchers.register(uuid.uuid1())
        agents = list(self.queue.dispatchers.values())[0]
        self.assertTrue(zope.interface.verify.verifyObject(
            interfaces.IDispatcherAgents, agents))

    def test_classes_keep_1_5_dotted_names(self):
        for name in ('Queues', 'Queue', 'Quotas', 'Quota', 'Dispatchers',
                     'DispatcherAgents'):
            cls = getattr(zc.asynchronous.queue, name)
            self.assertEqual((cls.__module__, cls.__name__),
                             ('zc.async.queue', name))


# ---------------------------------------------------- getDefaultQueue, Queues

class GetDefaultQueueTests(DBTestCase):

    def test_adapts_a_stored_object(self):
        self.assertIs(zc.asynchronous.queue.getDefaultQueue(self.queues),
                      self.queue)

    def test_adapts_an_object_below_a_stored_one(self):
        child = zc.asynchronous.utils.Base()
        child.parent = self.queue
        self.assertIs(zc.asynchronous.queue.getDefaultQueue(child),
                      self.queue)

    def test_adapts_a_connection(self):
        self.assertIs(zc.asynchronous.queue.getDefaultQueue(self.conn),
                      self.queue)

    def test_missing_default_queue_is_a_clear_KeyError(self):
        del self.queues['']
        with self.assertRaisesRegex(KeyError, 'no default queue'):
            zc.asynchronous.queue.getDefaultQueue(self.conn)

    def test_missing_queues_is_a_clear_KeyError(self):
        del self.root[interfaces.KEY]
        with self.assertRaisesRegex(KeyError, 'no zc.async queues'):
            zc.asynchronous.queue.getDefaultQueue(self.conn)

    def test_unstored_object_is_a_ValueError(self):
        with self.assertRaisesRegex(ValueError, 'not stored in a database'):
            zc.asynchronous.queue.getDefaultQueue(Queue())


class QueuesTests(DBTestCase):

    def test_values_must_be_queues(self):
        with self.assertRaises(ValueError) as caught:
            self.queues['x'] = persistent.Persistent()
        self.assertEqual(caught.exception.args[0], 'value must be IQueue')
        self.assertNotIn('x', self.queues)

    def test_setting_names_and_parents_the_queue(self):
        self.assertEqual(self.queue.name, '')
        self.assertIs(self.queue.parent, self.queues)
        self.assertIs(self.queue.__parent__, self.queues)

    def test_removing_resets_name_and_parent(self):
        other = self.queues['other'] = Queue()
        self.assertIs(self.queues.pop('other'), other)
        self.assertIsNone(other.name)
        self.assertIsNone(other.parent)
        del self.queues['']
        self.assertIsNone(self.queue.name)
        self.assertEqual(len(self.queues), 0)

    def test_mapping_api(self):
        other = self.queues['other'] = Queue()
        self.assertEqual(list(self.queues), ['', 'other'])
        self.assertEqual(list(self.queues.keys()), ['', 'other'])
        self.assertEqual(list(self.queues.values()), [self.queue, other])
        self.assertEqual(list(self.queues.items()),
                         [('', self.queue), ('other', other)])
        self.assertIs(self.queues.get('nope'), None)
        self.assertIn('other', self.queues)
        self.assertEqual(len(self.queues), 2)

    def test_copy_is_disabled(self):
        with self.assertRaises(TypeError):
            self.queues.copy()


# ------------------------------------------------------------------- put

class PutTests(UUIDUtilityMixin, DBTestCase):

    def test_put_adapts_a_callable_and_returns_the_pending_job(self):
        job = self.queue.put(work)
        self.assertTrue(interfaces.IJob.providedBy(job))
        self.assertIs(job.callable, work)
        self.assertEqual(job.status, interfaces.PENDING)
        self.assertIs(job.parent, self.queue)
        self.assertEqual(len(self.queue), 1)
        self.assertTrue(self.queue)
        self.assertIs(self.queue[0], job)

    def test_put_uses_a_registered_IJob_adapter(self):
        made = []

        def adapter(obj):
            made.append(Job(obj))
            return made[-1]
        registry = zope.component.getGlobalSiteManager()
        registry.registerAdapter(adapter, (type(work),), interfaces.IJob)
        self.addCleanup(registry.unregisterAdapter, adapter, (type(work),),
                        interfaces.IJob)
        self.assertIs(self.queue.put(work), made[0])

    def test_put_keeps_a_job(self):
        job = Job(work, 1)
        self.assertIs(self.queue.put(job), job)

    def test_non_callable_is_a_TypeError_naming_it(self):
        with self.assertRaisesRegex(TypeError, "'not callable'"):
            self.queue.put('not callable')
        self.assertEqual(len(self.queue), 0)

    def test_begin_after_defaults_to_now_and_begin_by_to_None(self):
        job = self.queue.put(work)
        self.assertEqual(job.begin_after, START)
        self.assertIsNone(job.begin_by)

    def test_begin_by_and_log_level_and_retry_policy_are_applied(self):
        job = self.queue.put(
            work, begin_by=datetime.timedelta(minutes=5),
            failure_log_level=logging.CRITICAL,
            retry_policy_factory=zc.asynchronous.job.NeverRetry)
        self.assertEqual(job.begin_by, datetime.timedelta(minutes=5))
        self.assertEqual(job.failure_log_level, logging.CRITICAL)
        self.assertIs(job.retry_policy_factory,
                      zc.asynchronous.job.NeverRetry)

    def test_job_begin_after_is_kept_when_none_is_given(self):
        job = Job(work)
        job.begin_after = START + datetime.timedelta(hours=1)
        self.queue.put(job)
        self.assertEqual(job.begin_after, START + datetime.timedelta(hours=1))

    def test_other_time_zones_are_normalized_to_UTC(self):
        est = datetime.timezone(datetime.timedelta(hours=-5), 'EST')
        job = self.queue.put(
            work, datetime.datetime(2006, 8, 10, 11, 30, tzinfo=est))
        self.assertEqual(job.begin_after,
                         datetime.datetime(2006, 8, 10, 16, 30, tzinfo=UTC))
        self.assertEqual(job.begin_after.utcoffset(), datetime.timedelta(0))

    def test_naive_begin_after_is_refused(self):
        with self.assertRaisesRegex(
                ValueError,
                r'^cannot use timezone-naive values \(begin_after='):
            self.queue.put(work, datetime.datetime(2006, 8, 10, 15, 44))
        self.assertEqual(len(self.queue), 0)

    def test_non_datetime_begin_after_is_a_TypeError(self):
        with self.assertRaisesRegex(TypeError, 'begin_after must be'):
            self.queue.put(work, '2006-08-10')

    def test_pending_job_cannot_be_put_again(self):
        job = self.queue.put(work)
        with self.assertRaises(ValueError) as caught:
            self.queue.put(job)
        self.assertEqual(caught.exception.args[0],
                         'cannot add already-assigned job')
        self.assertEqual(len(self.queue), 1)

    def test_job_in_another_queue_cannot_be_put(self):
        other = self.queues['other'] = Queue()
        job = other.put(work)
        with self.assertRaisesRegex(ValueError,
                                    'cannot add already-assigned job'):
            self.queue.put(job)
        self.assertIs(job.parent, other)

    def test_quota_names_must_exist(self):
        job = Job(work)
        job.quota_names = ('nope',)
        with self.assertRaises(ValueError) as caught:
            self.queue.put(job)
        self.assertEqual(caught.exception.args, ('unknown quota name', 'nope'))
        self.assertEqual(job.status, interfaces.NEW)
        self.queue.quotas.create('nope')
        self.assertIs(self.queue.put(job), job)

    def test_unpicklable_job_is_refused_and_nothing_changes(self):
        job = Job(work, threading.Lock())
        with self.assertRaises(TypeError):
            self.queue.put(job)
        self.assertEqual(len(self.queue), 0)
        self.assertIsNone(job.begin_after)
        self.assertEqual(job.status, interfaces.NEW)

    def test_put_adds_the_job_to_the_queue_connection(self):
        job = self.queue.put(work)
        self.assertIs(job._p_jar, self.conn)
        self.assertIsNotNone(job._p_oid)

    def test_queue_must_be_stored_to_put(self):
        with self.assertRaisesRegex(ValueError,
                                    'must be stored in a database'):
            Queue().put(work)

    def test_assignerUUID_is_None_without_an_instance_uuid(self):
        self.assertIsNone(self.queue.put(work).assignerUUID)

    def test_assignerUUID_is_the_instance_uuid(self):
        self.registerUUID()
        self.assertEqual(self.queue.put(work).assignerUUID, self.uuid)

    def test_existing_assignerUUID_is_kept(self):
        self.registerUUID()
        job = Job(work)
        original = uuid.uuid1()
        job.assignerUUID = original
        self.queue.put(job)
        self.assertEqual(job.assignerUUID, original)

    def test_every_change_touches_the_length_counter(self):
        self.assertIsInstance(self.queue._length, BTrees.Length.Length)
        job = self.queue.put(work)
        self.assertEqual(self.queue._length(), 1)
        self.queue.pull()
        self.queue.putBack(job)
        self.assertEqual(self.queue._length(), 1)
        self.queue.remove(job)
        self.queue.put(job)
        self.queue.claim()
        self.assertEqual(self.queue._length(), 0)

    def test_put_and_claim_write_little(self):
        # Cost must not grow with the queue: a put or claim writes one FIFO
        # bucket and the counter, not the queue, the FIFO or its segment
        # (except when a bucket fills up or empties).
        for i in range(20):
            self.queue.put(work)
        self.commit()
        self.queue.put(work)
        self.queue.claim()
        self.assertFalse(self.queue._p_changed)
        self.assertFalse(self.queue._queue._p_changed)
        segment, = self.queue._queue._data
        self.assertFalse(segment._p_changed)
        changed = [b for b in segment._data if b._p_changed]
        self.assertEqual(len(changed), 2)  # the first and the last bucket

    def test_put_is_persistent(self):
        job = self.queue.put(work, START + datetime.timedelta(days=1))
        self.queue.put(other_work)
        self.commit()
        tm = transaction.TransactionManager()
        conn = self.db.open(tm)
        self.addCleanup(conn.close)
        queue = conn.root()[interfaces.KEY]['']
        self.assertEqual([j.callable for j in queue], [other_work, work])
        self.assertEqual(queue[1]._p_oid, job._p_oid)


class OrderTests(DBTestCase):
    """Iteration, indexing and claim order (reference 3.3)."""

    def test_due_jobs_keep_fifo_order_even_with_past_begin_after(self):
        first = self.queue.put(work)
        past = self.queue.put(work, START - datetime.timedelta(hours=1))
        self.assertEqual(list(self.queue), [first, past])
        self.assertEqual(past.begin_after,
                         START - datetime.timedelta(hours=1))

    def test_scheduled_jobs_merge_by_begin_after(self):
        later = self.queue.put(work, START + datetime.timedelta(hours=2))
        soon = self.queue.put(work, START + datetime.timedelta(hours=1))
        now = self.queue.put(work)
        self.assertEqual(list(self.queue), [now, soon, later])

    def test_scheduled_job_comes_first_on_ties(self):
        scheduled = self.queue.put(work, START + datetime.timedelta(hours=1))
        self.tick(hours=1)
        due = self.queue.put(work)
        self.assertEqual(due.begin_after, scheduled.begin_after)
        self.assertEqual(list(self.queue), [scheduled, due])

    def test_put_back_jobs_come_first(self):
        due = self.queue.put(work)
        back = self.queue.put(other_work)
        self.queue.pull(1)
        self.queue.putBack(back)
        self.assertEqual(list(self.queue), [back, due])
        self.assertEqual(back.status, interfaces.PENDING)

    def test_getitem_and_slices(self):
        jobs = [self.queue.put(work, START + datetime.timedelta(minutes=i))
                for i in range(4)]
        self.assertIs(self.queue[0], jobs[0])
        self.assertIs(self.queue[-1], jobs[3])
        self.assertIs(self.queue[-4], jobs[0])
        self.assertEqual(self.queue[1:3], jobs[1:3])
        for bad in (4, -5):
            with self.assertRaises(IndexError):
                self.queue[bad]

    def test_empty_queue(self):
        self.assertEqual(len(self.queue), 0)
        self.assertFalse(self.queue)
        self.assertEqual(list(self.queue), [])
        with self.assertRaises(IndexError):
            self.queue[0]


class PutBackTests(DBTestCase):

    def test_put_back_requires_a_NEW_stored_job_that_was_queued(self):
        with self.assertRaises(TypeError):
            self.queue.putBack(work)
        pending = self.queue.put(work)
        with self.assertRaisesRegex(ValueError, 'NEW'):
            self.queue.putBack(pending)
        with self.assertRaisesRegex(ValueError, 'queued before'):
            self.queue.putBack(Job(work))

    def test_1_5_queue_without_put_back_store_creates_it(self):
        job = self.queue.put(work)
        self.queue.pull()
        del self.queue._putback_queue  # as a 1.5 queue that never had one
        self.assertEqual(list(self.queue), [])
        self.queue.putBack(job)
        self.assertEqual(list(self.queue), [job])


# ----------------------------------------------------------- pull, remove

class PullRemoveTests(UUIDUtilityMixin, DBTestCase):

    def setUp(self):
        super().setUp()
        self.registerUUID()
        self.scheduled = self.queue.put(work, START + datetime.timedelta(1))
        self.due = self.queue.put(work)
        self.back = self.queue.put(other_work)
        self.queue.remove(self.back)
        self.queue.putBack(self.back)

    def test_pull_takes_by_claim_position_and_clears_parent_and_uuid(self):
        self.assertEqual(list(self.queue),
                         [self.back, self.due, self.scheduled])
        job = self.queue.pull(1)
        self.assertIs(job, self.due)
        self.assertIsNone(job.parent)
        self.assertIsNone(job.assignerUUID)
        self.assertEqual(job.status, interfaces.NEW)
        self.assertEqual(len(self.queue), 2)

    def test_pull_defaults_to_the_front_and_accepts_negative_indexes(self):
        self.assertIs(self.queue.pull(), self.back)
        self.assertIs(self.queue.pull(-1), self.scheduled)
        self.assertEqual(list(self.queue), [self.due])

    def test_pull_ignores_time_so_scheduled_jobs_can_be_cancelled(self):
        self.assertIs(self.queue.pull(2), self.scheduled)

    def test_pull_out_of_range_is_an_IndexError(self):
        for bad in (3, -4):
            with self.assertRaises(IndexError):
                self.queue.pull(bad)
        self.assertEqual(len(self.queue), 3)

    def test_remove_from_each_store(self):
        for job in (self.scheduled, self.back, self.due):
            self.queue.remove(job)
            self.assertIsNone(job.parent)
            self.assertIsNone(job.assignerUUID)
        self.assertEqual(len(self.queue), 0)
        self.assertEqual(list(self.queue), [])

    def test_remove_of_an_absent_job_is_a_LookupError(self):
        stranger = Job(work)
        with self.assertRaises(LookupError) as caught:
            self.queue.remove(stranger)
        self.assertEqual(caught.exception.args,
                         ('item not in queue', stranger))
        self.queue.remove(self.due)
        with self.assertRaises(LookupError):
            self.queue.remove(self.due)


# ------------------------------------------------------------------ claim

def accept_work(job):
    return job.callable is work


class ClaimTests(UUIDUtilityMixin, DBTestCase):

    def test_empty_queue_gives_the_default(self):
        self.assertIsNone(self.queue.claim())
        marker = object()
        self.assertIs(self.queue.claim(default=marker), marker)

    def test_claim_takes_the_first_job_and_orphans_it(self):
        first = self.queue.put(work)
        second = self.queue.put(other_work)
        self.assertIs(self.queue.claim(), first)
        self.assertIsNone(first.parent)
        self.assertEqual(first.status, interfaces.NEW)
        self.assertEqual(list(self.queue), [second])
        self.assertEqual(len(self.queue), 1)

    def test_claim_ignores_jobs_not_yet_due(self):
        job = self.queue.put(work, START + datetime.timedelta(minutes=1))
        marker = object()
        self.assertIs(self.queue.claim(default=marker), marker)
        self.tick(minutes=1)
        self.assertIs(self.queue.claim(), job)

    def test_claim_stops_at_the_first_job_not_yet_due(self):
        self.queue.put(work, START + datetime.timedelta(minutes=1))
        later = self.queue.put(work, START + datetime.timedelta(minutes=2))
        seen = []

        def record(job):
            seen.append(job)
            return False
        self.tick(seconds=61)
        self.queue.claim(record)
        self.assertNotIn(later, seen)
        self.assertEqual(len(seen), 1)

    def test_claim_stops_at_a_put_back_job_not_yet_due(self):
        job = self.queue.put(work, START + datetime.timedelta(minutes=1))
        self.queue.pull()
        self.queue.putBack(job)
        self.queue.put(other_work)
        self.assertIsNone(self.queue.claim())
        self.tick(minutes=1)
        self.assertIs(self.queue.claim(), job)

    def test_filter_skips_jobs(self):
        self.queue.put(other_work)
        job = self.queue.put(work)
        self.assertIs(self.queue.claim(accept_work), job)
        self.assertEqual(len(self.queue), 1)
        self.assertIsNone(self.queue.claim(accept_work))

    def test_expired_job_is_replaced_by_a_timeout_job(self):
        self.registerUUID()
        job = self.queue.put(work, begin_by=datetime.timedelta(minutes=1))
        self.tick(minutes=1)
        self.assertIs(self.queue.claim(accept_work), job)  # not expired yet
        job = self.queue.put(work, begin_by=datetime.timedelta(minutes=1))
        self.tick(minutes=1, microseconds=1)
        timeout = self.queue.claim()
        self.assertIsNot(timeout, job)
        self.assertEqual(len(self.queue), 0)
        self.assertIsNone(job.parent)
        self.assertEqual(timeout.callable, job.fail)
        self.assertEqual(timeout.begin_after, zc.asynchronous.utils.now())
        self.assertEqual(timeout.assignerUUID, self.uuid)
        self.assertEqual(timeout.status, interfaces.NEW)
        self.assertEqual(job.quota_names, ())

    def test_timeout_job_fails_the_original_with_TimeoutError(self):
        job = self.queue.put(work, begin_by=datetime.timedelta(0))
        self.tick(seconds=1)
        timeout = self.queue.claim()
        self.commit()
        # The job runs with its connection's transaction manager.
        timeout()
        self.assertEqual(job.status, interfaces.COMPLETED)
        self.assertIsInstance(job.result, zc.asynchronous.twist.Failure)
        self.assertTrue(job.result.check(interfaces.TimeoutError))
        self.assertTrue(job.result.getTraceback().rstrip().endswith(
            'zc.async.interfaces.TimeoutError:'))

    def test_filter_applies_to_the_timeout_job(self):
        job = self.queue.put(work, begin_by=datetime.timedelta(0))
        self.tick(seconds=1)
        self.assertIsNone(self.queue.claim(accept_work))
        self.assertIs(job.parent, self.queue)
        self.assertEqual(self.queue.claim().callable, job.fail)

    def test_claim_does_not_apply_time_rules_to_pull(self):
        job = self.queue.put(work, begin_by=datetime.timedelta(0))
        self.tick(seconds=1)
        self.assertIs(self.queue.pull(), job)


class QuotaClaimTests(DBTestCase):
    """Quotas as claim sees them (reference 3.3 and 3.7)."""

    def setUp(self):
        super().setUp()
        self.queue.quotas.create('q')
        self.quota = self.queue.quotas['q']

    def put(self, *names, **kwargs):
        job = Job(work)
        job.quota_names = names
        return self.queue.put(job, **kwargs)

    def test_a_full_quota_blocks_its_jobs_but_not_others(self):
        first, second = self.put('q'), self.put('q')
        free = self.queue.put(other_work)
        self.assertIs(self.queue.claim(), first)
        self.assertEqual(list(self.quota), [first])
        self.assertIs(self.queue.claim(), free)
        self.assertIsNone(self.queue.claim())
        self.assertEqual(second.status, interfaces.PENDING)

    def test_slot_frees_when_the_job_reaches_callbacks_or_completes(self):
        first, second = self.put('q'), self.put('q')
        self.assertIs(self.queue.claim(), first)
        self.commit()
        first()
        self.assertEqual(first.status, interfaces.COMPLETED)
        self.assertIs(self.queue.claim(), second)
        self.assertEqual(list(self.quota), [second])

    def test_put_back_job_keeps_its_slot_and_is_claimable(self):
        first, second = self.put('q'), self.put('q')
        self.assertIs(self.queue.claim(), first)
        self.queue.putBack(first)
        self.assertTrue(self.quota.filled)
        self.assertIs(self.queue.claim(), first)
        self.assertEqual(list(self.quota), [first])
        self.assertIsNone(self.queue.claim())

    def test_larger_quota_admits_more(self):
        self.quota.size = 2
        first, second, third = self.put('q'), self.put('q'), self.put('q')
        self.assertEqual([self.queue.claim(), self.queue.claim()],
                         [first, second])
        self.assertIsNone(self.queue.claim())

    def test_lowering_the_size_waits_for_the_count_to_drop(self):
        self.quota.size = 2
        first, second, third = self.put('q'), self.put('q'), self.put('q')
        self.queue.claim(), self.queue.claim()
        self.quota.size = 1
        self.commit()
        first()
        self.assertIsNone(self.queue.claim())  # second still counts
        second()
        self.assertIs(self.queue.claim(), third)

    def test_removed_quota_names_are_ignored(self):
        first, second = self.put('q'), self.put('q')
        self.queue.claim()
        self.queue.quotas.remove('q')
        self.assertIs(self.queue.claim(), second)

    def test_each_quota_is_cleaned_once_per_claim(self):
        for i in range(3):
            self.put('q')
        self.queue.claim()
        cleanings = []
        original = type(self.quota).clean

        def counting_clean(quota):
            cleanings.append(quota.name)
            return original(quota)
        type(self.quota).clean = counting_clean
        self.addCleanup(setattr, type(self.quota), 'clean', original)
        self.assertIsNone(self.queue.claim())
        self.assertEqual(cleanings, ['q'])

    def test_expired_job_in_a_full_quota_still_times_out(self):
        self.put('q')
        late = self.put('q', begin_by=datetime.timedelta(0))
        self.queue.claim()
        self.tick(seconds=1)
        self.assertEqual(self.queue.claim().callable, late.fail)

    def test_job_with_several_quotas_needs_room_in_all(self):
        self.queue.quotas.create('r')
        self.assertIs(self.queue.claim(), None)
        only_r = self.put('r')
        both = self.put('q', 'r')
        self.assertIs(self.queue.claim(), only_r)
        self.assertIsNone(self.queue.claim())
        self.assertEqual(both.status, interfaces.PENDING)


def shape(fifo):
    """The job counts of a FIFO's buckets: ``[[2, 1], [1]]`` for a
    two-level FIFO, ``[2, 1]`` for a one-level one."""
    if zc.asynchronous.duefifo._segmented(fifo):
        return [[len(b) for b in s._data] for s in fifo._data]
    return [len(b) for b in fifo._data]


def put_labelled(queue, *labels):
    """Put a job per label (its only argument), in order."""
    for label in labels:
        queue.put(Job(work, label))


def claim_b(queue):
    assert queue.claim().args[0] == 'b'


class FifoStructureTests(DBTestCase):
    """The due FIFO's segments and buckets: which are kept, dropped, marked
    and written (2 jobs per bucket, 2 buckets per segment)."""

    def setUp(self):
        super().setUp()
        self.fifo = self.queue._queue
        self.fifo.compositeSize = 2
        self.fifo.segmentSize = 2
        self.commit()

    def test_new_fifos_are_segments_of_DueBuckets_starting_with_a_bucket(self):
        for cls in (DueBucket, DueSegment, DueFIFO):
            self.assertEqual(cls.__module__, 'zc.async.queue')
        for fifo in (self.queue._queue, self.queue._putback_queue):
            self.assertIs(type(fifo), DueFIFO)
            self.assertIs(fifo.subfactory, DueBucket)
            segment, = fifo._data
            self.assertIs(type(segment), DueSegment)
            self.assertEqual([type(b) for b in segment._data], [DueBucket])

    def test_put_writes_a_segment_per_bucket_and_the_fifo_per_segment(self):
        self.queue.put(work)
        self.queue.put(work)
        segment, = self.fifo._data
        self.assertFalse(segment._p_changed)  # the first bucket had room
        self.commit()
        self.queue.put(work)  # the bucket was full: a bucket is added
        self.assertTrue(segment._p_changed)
        self.assertFalse(self.fifo._p_changed)
        self.queue.put(work)
        self.commit()
        self.queue.put(work)  # the segment was full: a segment is added
        self.assertTrue(self.fifo._p_changed)
        self.assertFalse(segment._p_changed)
        self.assertEqual(shape(self.fifo), [[2, 2], [1]])
        self.assertEqual(len(self.fifo), 5)
        self.assertEqual(list(self.fifo), list(self.queue))

    def test_claim_keeps_the_emptied_last_bucket_of_the_last_segment(self):
        self.queue.put(work)
        self.commit()
        segment, = self.fifo._data
        bucket, = segment._data
        self.queue.claim()
        self.assertFalse(self.fifo._p_changed)
        self.assertFalse(segment._p_changed)
        self.assertEqual(shape(self.fifo), [[0]])
        self.assertFalse(bucket.closed or segment.closed)
        job = self.queue.put(other_work)  # into the kept bucket
        self.assertEqual(list(bucket), [job])

    def test_claim_drops_and_closes_an_emptied_bucket_that_is_not_last(self):
        first = self.queue.put(work)
        self.queue.put(work)
        third = self.queue.put(work)
        self.commit()
        segment, = self.fifo._data
        emptied, last = segment._data
        self.queue.claim()
        self.assertFalse(segment._p_changed)  # the bucket still has a job
        self.queue.claim()
        self.assertTrue(segment._p_changed)
        self.assertFalse(self.fifo._p_changed)
        self.assertEqual(segment._data, (last,))
        self.assertTrue(emptied.closed)
        self.assertIn('closed', emptied.__getstate__())
        self.assertIsNone(first.parent)
        self.assertEqual(list(self.queue), [third])

    def test_claim_drops_and_closes_an_emptied_segment_that_is_not_last(self):
        jobs = [self.queue.put(work) for i in range(5)]
        self.commit()
        emptied, last = self.fifo._data
        first_bucket, second_bucket = emptied._data
        for job in jobs[:3]:
            self.assertIs(self.queue.claim(), job)
        self.assertEqual(emptied._data, (second_bucket,))
        self.assertTrue(first_bucket.closed)
        self.assertFalse(self.fifo._p_changed)
        self.assertIs(self.queue.claim(), jobs[3])  # empties the segment
        self.assertEqual(self.fifo._data, (last,))
        self.assertTrue(emptied.closed)
        self.assertIn('closed', emptied.__getstate__())
        # A stale put may see the bucket it keeps as the FIFO's last one.
        self.assertEqual(emptied._data, (second_bucket,))
        self.assertTrue(second_bucket.closed)
        self.assertFalse(last.closed or last._data[0].closed)
        self.assertEqual(list(self.queue), [jobs[4]])

    def test_pull_and_remove_follow_the_same_rules(self):
        jobs = [self.queue.put(work) for i in range(5)]
        first, last = self.fifo._data
        self.queue.remove(jobs[4])  # empties the last bucket: kept
        self.assertEqual(shape(self.fifo), [[2, 2], [0]])
        self.queue.pull(1)
        self.queue.pull()  # empties a bucket that is not last: dropped
        self.assertEqual(shape(self.fifo), [[2], [0]])
        self.queue.remove(jobs[3])
        self.queue.pull(-1)  # empties a segment that is not last: dropped
        self.assertEqual(self.fifo._data, (last,))
        self.assertTrue(first.closed)
        self.assertEqual(len(self.queue), 0)

    def test_sequence_api_with_an_empty_last_bucket(self):
        scheduled = self.queue.put(work, START + datetime.timedelta(hours=1))
        # The due FIFO holds nothing but its (empty, last) bucket.
        self.assertEqual(shape(self.fifo), [[0]])
        self.assertEqual(len(self.queue), 1)
        self.assertEqual(list(self.queue), [scheduled])
        self.assertIs(self.queue[-1], scheduled)
        self.assertIsNone(self.queue.claim())  # scheduled is not due
        with self.assertRaises(IndexError):
            self.queue.pull(1)
        self.assertIs(self.queue.pull(), scheduled)
        self.assertEqual(list(self.queue), [])
        self.assertIsNone(self.queue.claim())

    def test_claim_drops_empty_parts_left_by_merges(self):
        # Two claims that empty a bucket (or segment) between them leave it
        # empty and in place (neither emptied it alone), and so does a
        # claim emptying the last bucket while a put starts a new bucket
        # or segment; the next claim walking past them drops them.
        left_bucket = DueBucket()
        left_segment = DueSegment([DueBucket(), DueBucket()])
        segment, = self.fifo._data
        segment._data = (left_bucket,) + segment._data
        self.fifo._data = (left_segment,) + self.fifo._data
        job = self.queue.put(work)
        self.assertEqual(list(self.queue), [job])
        self.assertIs(self.queue[0], job)
        self.assertIs(self.queue.claim(), job)
        self.assertEqual(self.fifo._data, (segment,))
        self.assertEqual(shape(self.fifo), [[0]])
        self.assertTrue(left_bucket.closed)
        self.assertTrue(left_segment.closed)
        self.assertTrue(all(b.closed for b in left_segment._data))
        self.assertFalse(segment.closed or segment._data[0].closed)

    def test_a_claim_that_takes_nothing_drops_nothing(self):
        self.fifo._data = (DueSegment([DueBucket()]),) + self.fifo._data
        self.commit()
        self.queue.put(work, START + datetime.timedelta(hours=1))
        self.assertIsNone(self.queue.claim())
        self.assertEqual(shape(self.fifo), [[0], [0]])

    def test_put_never_appends_to_a_closed_bucket(self):
        segment, = self.fifo._data
        bucket, = segment._data
        bucket.closed = True  # cannot happen in a consistent FIFO
        job = self.queue.put(work)
        self.assertEqual(list(bucket), [])
        self.assertEqual(shape(self.fifo), [[0, 1]])
        self.assertEqual(list(segment._data[-1]), [job])

    def test_put_never_adds_a_bucket_to_a_closed_segment(self):
        segment, = self.fifo._data
        segment.closed = True  # cannot happen in a consistent FIFO
        job = self.queue.put(work)
        self.assertEqual(shape(self.fifo), [[0], [1]])
        self.assertEqual(len(segment._data), 1)
        self.assertEqual(list(self.fifo._data[-1]), [job])

    def test_put_back_fifo_follows_the_same_rules(self):
        jobs = [self.queue.put(work) for i in range(5)]
        for job in jobs:
            self.queue.pull()
        fifo = self.queue._putback_queue
        fifo.compositeSize = 2
        fifo.segmentSize = 2
        for job in jobs:
            self.queue.putBack(job)
        self.assertEqual(shape(fifo), [[2, 2], [1]])
        emptied, last = fifo._data
        self.assertEqual([self.queue.claim() for job in jobs], jobs)
        self.assertEqual(fifo._data, (last,))
        self.assertTrue(emptied.closed)
        self.assertEqual(shape(fifo), [[0]])

    def test_DueFIFO_api_follows_the_same_rules(self):
        items = [persistent.mapping.PersistentMapping(n=i) for i in range(5)]
        for item in items:
            self.fifo.put(item)
        self.assertEqual(len(self.fifo), 5)
        self.assertEqual(list(self.fifo), items)
        self.assertIs(self.fifo[-2], items[3])
        self.assertEqual(self.fifo[1:3], items[1:3])
        self.assertIs(self.fifo.pull(-1), items[4])  # the last bucket: kept
        self.assertEqual(shape(self.fifo), [[2, 2], [0]])
        self.assertIs(self.fifo.pull(1), items[1])
        self.assertIs(self.fifo.pull(), items[0])
        self.assertEqual(shape(self.fifo), [[2], [0]])
        for index in (2, -3):
            with self.assertRaises(IndexError):
                self.fifo.pull(index)
        self.assertEqual([self.fifo.pull(), self.fifo.pull()], items[2:4])
        self.assertEqual(shape(self.fifo), [[0]])


class OneLevelFifoTests(DBTestCase):
    """Queues stored before segments existed: a DueFIFO of DueBuckets,
    kept as it is."""

    def setUp(self):
        super().setUp()
        self.fifo = self.queue._queue = _new_fifo(DueFIFO, DueBucket)
        self.fifo.compositeSize = 2
        self.commit()

    def test_put_claim_pull_and_put_back_keep_the_rules(self):
        jobs = [self.queue.put(work) for i in range(5)]
        self.assertEqual(shape(self.fifo), [2, 2, 1])
        self.assertEqual(list(self.queue), jobs)
        emptied = self.fifo._data[0]
        self.assertEqual([self.queue.claim(), self.queue.claim()], jobs[:2])
        self.assertEqual(shape(self.fifo), [2, 1])
        self.assertTrue(emptied.closed)
        self.assertIs(self.queue.pull(-1), jobs[4])  # the last: kept
        self.assertEqual(shape(self.fifo), [2, 0])
        self.queue.putBack(jobs[4])
        self.assertEqual(list(self.queue), [jobs[4]] + jobs[2:4])
        self.assertEqual([self.queue.claim() for i in range(3)],
                         [jobs[4]] + jobs[2:4])
        self.assertEqual(shape(self.fifo), [0])
        self.commit()

    def test_DueFIFO_api_keeps_the_rules(self):
        items = [persistent.mapping.PersistentMapping(n=i) for i in range(3)]
        for item in items:
            self.fifo.put(item)
        self.assertEqual(list(self.fifo), items)
        self.assertIs(self.fifo.pull(-1), items[2])
        self.assertEqual(shape(self.fifo), [2, 0])
        self.assertEqual([self.fifo.pull(), self.fifo.pull()], items[:2])
        self.assertEqual(shape(self.fifo), [0])


class ReferenceCountingStorage(ZODB.MappingStorage.MappingStorage):
    """Counts the persistent references in the records it stores."""

    references = 0

    def store(self, oid, serial, data, version, transaction):
        self.references += len(ZODB.serialize.referencesf(data))
        return super().store(oid, serial, data, version, transaction)


class PutCostTests(Clocked):
    """A put's cost must not grow with the jobs already pending: counted in
    objects loaded and stored and in references compared, never timed."""

    PENDING = 2000

    def open(self, db):
        tm = transaction.TransactionManager()
        conn = db.open(tm)
        self.addCleanup(conn.close)
        self.addCleanup(tm.abort)
        return conn, tm

    def queue_with(self, pending):
        """A new database's queue holding ``pending`` jobs, in a fresh
        connection (nothing loaded yet)."""
        db = ZODB.DB(ReferenceCountingStorage())
        self.addCleanup(db.close)
        conn, tm = self.open(db)
        root = conn.root()
        root[interfaces.KEY] = zc.asynchronous.queue.Queues()
        queue = root[interfaces.KEY][''] = Queue()
        tm.commit()
        for i in range(pending):
            queue.put(work)
        tm.commit()
        conn.close()
        return self.open(db)

    def put_counts(self, pending, puts=45):
        """``(loaded, stored)`` objects of ``puts`` puts, one commit each
        (45 puts fill three 15-job buckets, so the composite is written)."""
        conn, tm = self.queue_with(pending)
        conn.root()[interfaces.KEY][''].put(work)  # loads the path once
        tm.commit()
        conn.getTransferCounts(clear=True)
        for i in range(puts):
            conn.root()[interfaces.KEY][''].put(work)
            tm.commit()
        return conn.getTransferCounts(clear=True)

    def test_a_put_loads_and_stores_as_much_with_2000_pending_jobs(self):
        self.assertEqual(self.put_counts(self.PENDING), self.put_counts(0))

    def put_references(self, pending, puts):
        """The persistent references in the records that ``puts`` puts
        (one commit each) store."""
        conn, tm = self.queue_with(pending)
        storage = conn.db().storage
        storage.references = 0
        for i in range(puts):
            conn.root()[interfaces.KEY][''].put(work)
            tm.commit()
        return storage.references

    def test_a_put_writes_as_many_references_with_4800_pending_jobs(self):
        # What a put writes must not grow with the pending jobs either.
        # Over one segment's worth of puts (960), the FIFO (one reference
        # per 960 pending jobs) is written once more with 4800 pending
        # jobs; a one-level FIFO (one reference per 15 pending jobs,
        # written once per 15 puts) would write 20,000 more references.
        puts = DueFIFO.segmentSize * 15
        extra = (self.put_references(4800, puts)
                 - self.put_references(0, puts))
        self.assertLessEqual(extra, 10)

    def test_conflict_resolution_compares_no_references(self):
        # zc.queue's resolver compares persistent references pairwise
        # (O(n**2) for n buckets); the due FIFO's keys them by oid.
        PR = ZODB.ConflictResolution.PersistentReference
        refs = [PR((b'%08d' % i, DueBucket)) for i in range(self.PENDING)]
        old = {'_data': tuple(refs[:-2]), 'compositeSize': 15}
        committed = {'_data': tuple(refs[1:-1]), 'compositeSize': 15}
        new = {'_data': tuple(refs[:-2] + refs[-1:]), 'compositeSize': 15}
        with unittest.mock.patch.object(
                PR, '__cmp__', side_effect=AssertionError('compared')):
            merged = DueFIFO()._p_resolveConflict(old, committed, new)
        self.assertEqual(merged['_data'], tuple(refs[1:]))

    def test_resolver_refuses_what_zc_queue_refuses(self):
        PR = ZODB.ConflictResolution.PersistentReference
        a, b, c = [PR((b'%08d' % i, DueBucket)) for i in range(3)]
        resolve = DueFIFO()._p_resolveConflict
        for old, committed, new in [
                ((a, b), (b,), (b,)),  # both removed a
                ((a,), (a, c), (a, PR((b'%08d' % 2, DueBucket)))),  # added c
                ]:
            with self.assertRaises(ZODB.POSException.ConflictError):
                resolve({'_data': old}, {'_data': committed},
                        {'_data': new})
        with self.assertRaises(ZODB.POSException.ConflictError):
            resolve({'_data': (a,)}, {'_data': (a,), 'closed': True},
                    {'_data': (a, b)})  # a put into a dropped bucket
        self.assertEqual(
            resolve({'_data': (a,)}, {'_data': ()}, {'_data': (a, b)}),
            {'_data': (b,)})  # a claim emptying it, a put adding to it


class LegacyFifoTests(DBTestCase):
    """Queues from 1.5 databases: plain zc.queue buckets, left as they are
    (1.5 processes sharing the database pull with CompositeQueue.pull)."""

    def setUp(self):
        super().setUp()
        self.queue._queue = zc.queue.CompositeQueue(compositeSize=2)
        del self.queue._putback_queue
        self.commit()

    def test_put_claim_pull_and_put_back_work(self):
        BucketQueue = zc.queue._queue.BucketQueue
        jobs = [self.queue.put(work) for i in range(5)]
        self.assertEqual(list(self.queue), jobs)
        self.assertEqual([type(b) for b in self.queue._queue._data],
                         [BucketQueue] * 3)
        self.assertIs(self.queue.claim(), jobs[0])
        self.assertIs(self.queue.pull(-1), jobs[4])
        self.queue.putBack(jobs[4])
        self.assertIs(self.queue._putback_queue.subfactory, BucketQueue)
        self.assertEqual(list(self.queue), [jobs[4]] + jobs[1:4])
        self.assertEqual([self.queue.claim() for i in range(4)],
                         [jobs[4]] + jobs[1:4])
        self.assertEqual(len(self.queue), 0)
        self.assertEqual(len(self.queue._queue._data), 1)  # the last one
        self.commit()


# ------------------------------------------------------------- concurrency

class ConcurrencyTests(Clocked):
    """Two connections change the queue at once on a FileStorage."""

    def setUp(self):
        super().setUp()
        self.dir = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.dir)
        storage = ZODB.FileStorage.FileStorage(
            os.path.join(self.dir, 'Data.fs'))
        self.db = ZODB.DB(storage)
        self.addCleanup(self.db.close)
        conn, tm = self.open()
        conn.root()[interfaces.KEY] = zc.asynchronous.queue.Queues()
        conn.root()[interfaces.KEY][''] = Queue()
        tm.commit()

    def open(self):
        tm = transaction.TransactionManager()
        conn = self.db.open(tm)
        self.addCleanup(conn.close)
        self.addCleanup(tm.abort)
        return conn, tm

    def queue(self, conn):
        return conn.root()[interfaces.KEY]['']

    def concurrently(self, first, second):
        """Run ``first(queue)`` and ``second(queue)`` in two connections
        from the same snapshot, then commit both in turn."""
        (c1, tm1), (c2, tm2) = self.open(), self.open()
        first(self.queue(c1))
        second(self.queue(c2))
        tm1.commit()
        tm2.commit()  # a ConflictError here fails the test
        conn, tm = self.open()
        return self.queue(conn)

    def test_concurrent_due_puts_do_not_conflict(self):
        queue = self.concurrently(lambda q: q.put(work),
                                  lambda q: q.put(other_work))
        self.assertEqual(len(queue), 2)
        self.assertEqual([j.callable for j in queue], [work, other_work])

    def test_concurrent_puts_into_a_busy_queue_do_not_conflict(self):
        conn, tm = self.open()
        for i in range(20):  # more than one FIFO bucket
            self.queue(conn).put(work)
        tm.commit()
        queue = self.concurrently(lambda q: q.put(other_work),
                                  lambda q: q.put(other_work))
        self.assertEqual(len(queue), 22)
        self.assertEqual(len(list(queue)), 22)

    def test_concurrent_scheduled_puts_do_not_conflict(self):
        later = START + datetime.timedelta(hours=1)
        queue = self.concurrently(lambda q: q.put(work, later),
                                  lambda q: q.put(other_work, later))
        self.assertEqual(len(queue), 2)
        self.assertEqual(len(list(queue)), 2)

    def test_producer_threads_never_conflict(self):
        # Scheduled puts may conflict when they split a BTree bucket (as in
        # 1.5); puts of due jobs never do.
        self.produce_without_conflicts()

    def test_producers_adding_buckets_and_segments_never_conflict(self):
        # With 2 jobs per bucket and 2 buckets per segment, concurrent puts
        # add buckets and segments all the time: they merge too.
        self.fifo_size(2, segment_size=2)
        self.produce_without_conflicts()
        conn, tm = self.open()
        self.assertGreaterEqual(len(self.queue(conn)._queue._data), 10)

    def produce_without_conflicts(self):
        """Three producer threads put 40 jobs each, one commit each; no
        commit may fail."""
        barrier = threading.Barrier(3)
        errors = []

        def produce(count):
            conn, tm = self.open()
            barrier.wait()
            for i in range(count):
                try:
                    self.queue(conn).put(work)
                    tm.commit()
                except Exception as e:  # report any error to the test
                    errors.append(e)
                    tm.abort()
        threads = [threading.Thread(target=produce, args=(40,))
                   for i in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        self.assertEqual(errors, [])
        conn, tm = self.open()
        self.assertEqual(len(self.queue(conn)), 120)
        self.assertEqual(len(list(self.queue(conn))), 120)

    def test_put_does_not_conflict_with_a_claim(self):
        conn, tm = self.open()
        for i in range(20):
            self.queue(conn).put(work)
        tm.commit()
        queue = self.concurrently(lambda q: q.put(other_work),
                                  lambda q: q.claim())
        self.assertEqual(len(queue), 20)
        self.assertEqual(len(list(queue)), 20)
        self.assertEqual(queue[-1].callable, other_work)

    # A claim that empties a FIFO bucket, and puts into it (the "instant
    # dispatch" pattern: each job is claimed right after its put commits).

    def fifo_size(self, size, segment_size=None):
        conn, tm = self.open()
        fifo = self.queue(conn)._queue
        fifo.compositeSize = size
        if segment_size is not None:
            fifo.segmentSize = segment_size
        tm.commit()

    def test_put_merges_with_a_claim_emptying_the_last_bucket(self):
        (c1, tm1), (c2, tm2) = self.open(), self.open()
        first = self.queue(c1).put(work)
        tm1.commit()
        tm1.begin()  # the producer's next transaction starts
        tm2.begin()
        self.assertEqual(self.queue(c2).claim()._p_oid, first._p_oid)
        tm2.commit()
        second = self.queue(c1).put(other_work)
        tm1.commit()  # a ConflictError here fails the test
        conn, tm = self.open()
        queue = self.queue(conn)
        self.assertEqual([j._p_oid for j in queue], [second._p_oid])
        self.assertEqual(len(queue), 1)
        self.assertIsNone(conn.get(first._p_oid).parent)  # claimed
        self.assertIs(queue.claim().callable, other_work)

    def test_put_and_claim_of_the_only_job_from_one_snapshot(self):
        conn, tm = self.open()
        self.queue(conn).put(work)
        tm.commit()
        queue = self.concurrently(lambda q: q.put(other_work),
                                  lambda q: q.claim())
        self.assertEqual([j.callable for j in queue], [other_work])
        self.assertEqual(len(queue), 1)

    def test_stale_put_into_a_dropped_bucket_conflicts_then_succeeds(self):
        self.fifo_size(2)
        (c0, tm0), (c1, tm1), (c2, tm2) = (
            self.open(), self.open(), self.open())
        self.queue(c0).put(work)
        tm0.commit()
        tm1.begin()  # the putter's snapshot: one bucket, with room
        self.queue(c0).put(work)
        self.queue(c0).put(work)  # starts a second bucket
        tm0.commit()
        tm2.begin()
        self.queue(c2).claim()
        self.queue(c2).claim()  # empties the first bucket, which is dropped
        tm2.commit()
        putter = self.queue(c1)
        self.assertEqual(shape(putter._queue), [[1]])  # stale: still last
        putter.put(other_work)
        with self.assertRaises(ZODB.POSException.ConflictError) as caught:
            tm1.commit()
        self.assertEqual(caught.exception.class_name,
                         'zc.async.queue.DueBucket')
        tm1.abort()
        self.queue(c1).put(other_work)  # the retry sees the real last one
        tm1.commit()
        conn, tm = self.open()
        queue = self.queue(conn)
        self.assertEqual([j.callable for j in queue], [work, other_work])
        self.assertEqual(len(queue), 2)
        self.assertEqual(shape(queue._queue), [[2]])

    def test_two_claims_of_the_same_job_conflict(self):
        conn, tm = self.open()
        self.queue(conn).put(work)
        tm.commit()
        with self.assertRaises(ZODB.POSException.ConflictError):
            self.concurrently(lambda q: q.claim(), lambda q: q.claim())

    def test_claims_of_different_jobs_of_one_bucket_merge(self):
        conn, tm = self.open()
        self.queue(conn).put(work)
        self.queue(conn).put(other_work)
        tm.commit()
        queue = self.concurrently(
            lambda q: q.claim(),
            lambda q: q.claim(lambda job: job.callable is other_work))
        self.assertEqual(list(queue), [])
        self.assertEqual(len(queue), 0)
        self.assertEqual(shape(queue._queue), [[0]])

    # Growing and shrinking the FIFO's levels: a put adds a bucket to the
    # last segment, or a segment to the FIFO; a claim drops an emptied
    # bucket from its segment, or an emptied segment from the FIFO.  Each
    # case runs with both commit orders.

    def in_both_orders(self, sizes, prepare, first, second, expected):
        """For each commit order, on a new queue whose FIFO has ``sizes``
        (jobs per bucket, buckets per segment): ``prepare(queue)`` and
        commit; then ``first(queue)`` and ``second(queue)`` in two
        connections from that snapshot, committed in that order.  Then
        check the queue against ``expected(first_committed)``:
        ``(labels of the pending jobs, FIFO shape)``, claim it empty and
        return the queues."""
        queues = []
        for order in ('first', 'second'):
            with self.subTest(committed_first=order):
                conn, tm = self.open()
                name = 'queue-%d-%s' % (len(self.id()), order)
                queue = conn.root()[interfaces.KEY][name] = Queue()
                queue._queue.compositeSize, queue._queue.segmentSize = sizes
                prepare(queue)
                tm.commit()
                (c1, tm1), (c2, tm2) = self.open(), self.open()
                first(c1.root()[interfaces.KEY][name])
                second(c2.root()[interfaces.KEY][name])
                for t in ((tm1, tm2) if order == 'first' else (tm2, tm1)):
                    t.commit()  # a ConflictError here fails the test
                conn, tm = self.open()
                queue = conn.root()[interfaces.KEY][name]
                labels, fifo_shape = expected(order)
                self.assertEqual([j.args[0] for j in queue], labels)
                self.assertEqual(len(queue), len(labels))
                self.assertEqual(shape(queue._queue), fifo_shape)
                self.assertEqual(
                    [queue.claim().args[0] for label in labels], labels)
                self.assertIsNone(queue.claim())
                tm.commit()
                queues.append(queue)
        return queues

    def test_puts_adding_a_bucket_each_to_a_segment_merge(self):
        self.in_both_orders(
            (2, 3), lambda q: put_labelled(q, 'a', 'b'),
            lambda q: put_labelled(q, 'c'), lambda q: put_labelled(q, 'd'),
            lambda order: (['a', 'b'] + (['c', 'd'] if order == 'first'
                                         else ['d', 'c']), [[2, 1, 1]]))

    def test_puts_adding_a_segment_each_merge(self):
        self.in_both_orders(
            (2, 1), lambda q: put_labelled(q, 'a', 'b'),
            lambda q: put_labelled(q, 'c'), lambda q: put_labelled(q, 'd'),
            lambda order: (['a', 'b'] + (['c', 'd'] if order == 'first'
                                         else ['d', 'c']), [[2], [1], [1]]))

    def test_put_adding_a_bucket_merges_with_a_claim_dropping_one(self):
        def prepare(queue):
            put_labelled(queue, 'a', 'b', 'c', 'd')
            queue.pull()  # [[1, 2]]: the next claim empties the first bucket
        self.in_both_orders(
            (2, 3), prepare, lambda q: put_labelled(q, 'e'), claim_b,
            lambda order: (['c', 'd', 'e'], [[2, 1]]))

    def test_put_adding_a_segment_merges_with_a_claim_dropping_one(self):
        def prepare(queue):
            put_labelled(queue, *'abcdefgh')
            for label in 'abc':
                queue.pull()  # [[1], [2, 2]]: the next claim empties a segment
        self.in_both_orders(
            (2, 2), prepare, lambda q: put_labelled(q, 'i'),
            lambda q: self.assertEqual(q.claim().args[0], 'd'),
            lambda order: (list('efghi'), [[2, 2], [1]]))

    def test_put_merges_with_a_claim_emptying_the_last_bucket_either_way(self):
        self.in_both_orders(
            (2, 2), lambda q: put_labelled(q, 'a'),
            lambda q: put_labelled(q, 'b'),
            lambda q: self.assertEqual(q.claim().args[0], 'a'),
            lambda order: (['b'], [[1]]))

    def test_put_adding_a_bucket_merges_with_a_claim_emptying_the_last(self):
        # The claim keeps the bucket it empties (the last in its snapshot):
        # the put's new bucket comes after it, and the next claim drops it.
        queues = self.in_both_orders(
            (1, 2), lambda q: put_labelled(q, 'a'),
            lambda q: put_labelled(q, 'b'),
            lambda q: self.assertEqual(q.claim().args[0], 'a'),
            lambda order: (['b'], [[0, 1]]))
        for queue in queues:
            self.assertEqual(shape(queue._queue), [[0]])

    def test_put_adding_a_segment_merges_with_a_claim_emptying_the_last(self):
        queues = self.in_both_orders(
            (1, 1), lambda q: put_labelled(q, 'a'),
            lambda q: put_labelled(q, 'b'),
            lambda q: self.assertEqual(q.claim().args[0], 'a'),
            lambda order: (['b'], [[0], [1]]))
        for queue in queues:
            self.assertEqual(shape(queue._queue), [[0]])

    def test_two_claims_dropping_the_same_segment_conflict(self):
        conn, tm = self.open()
        queue = self.queue(conn)
        queue._queue.compositeSize, queue._queue.segmentSize = 2, 1
        put_labelled(queue, 'a', 'b', 'c')
        queue.pull()  # [[1], [1]]
        tm.commit()
        with self.assertRaises(ZODB.POSException.ConflictError):
            self.concurrently(claim_b, claim_b)

    def stale_put_conflicts_then_succeeds(self, sizes, class_name):
        """A putter whose snapshot predates the fill and the claims that
        dropped the FIFO's first segment still sees it as the last one:
        its put must conflict (``class_name`` refuses it), and its retry
        must put after the real last job."""
        conn, tm = self.open()
        queue = self.queue(conn)
        queue._queue.compositeSize, queue._queue.segmentSize = sizes
        put_labelled(queue, 'a')
        tm.commit()
        (c0, tm0), (c1, tm1), (c2, tm2) = (
            self.open(), self.open(), self.open())
        tm1.begin()  # the putter's snapshot: [[1]]
        put_labelled(self.queue(c0), 'b', 'c')  # fills the first segment
        tm0.commit()
        tm2.begin()
        self.assertEqual([self.queue(c2).claim().args[0] for i in 'ab'],
                         ['a', 'b'])  # empties the first segment
        tm2.commit()
        putter = self.queue(c1)
        self.assertEqual(shape(putter._queue), [[1]])  # stale
        dropped = putter._queue._data[0]._p_oid
        put_labelled(putter, 'x')
        with self.assertRaises(ZODB.POSException.ConflictError) as caught:
            tm1.commit()
        self.assertEqual(caught.exception.class_name, class_name)
        tm1.abort()
        put_labelled(self.queue(c1), 'x')  # the retry sees the real last one
        tm1.commit()
        conn, tm = self.open()
        queue = self.queue(conn)
        self.assertEqual([j.args[0] for j in queue], ['c', 'x'])
        self.assertEqual(len(queue), 2)
        self.assertEqual(len(queue._queue._data), 1)
        dropped = conn.get(dropped)
        self.assertNotIn(dropped, queue._queue._data)
        self.assertTrue(dropped.closed)
        self.assertTrue(all(b.closed for b in dropped._data))

    def test_stale_put_into_a_dropped_segment_conflicts_then_succeeds(self):
        # The stale put appends to the dropped segment's last bucket.
        self.stale_put_conflicts_then_succeeds(
            (2, 1), 'zc.async.queue.DueBucket')

    def test_stale_bucket_for_a_dropped_segment_conflicts_then_succeeds(self):
        # The stale put adds a bucket to the dropped segment.
        self.stale_put_conflicts_then_succeeds(
            (1, 2), 'zc.async.queue.DueSegment')

    def produce_and_consume(self, producers=2, consumers=3, count=40):
        """Run producer and consumer threads, each with its connection;
        conflicts are retried.  Return the oids put, the oids claimed and
        the number of conflicts the puts met."""
        lock = threading.Lock()
        put, claimed, put_conflicts, errors = [], [], [], []
        deadline = time.monotonic() + 60
        barrier = threading.Barrier(producers + consumers)

        def produce():
            conn, tm = self.open()
            barrier.wait()
            for i in range(count):
                while True:
                    try:
                        job = self.queue(conn).put(work)
                        tm.commit()
                        break
                    except ZODB.POSException.ConflictError:
                        tm.abort()
                        put_conflicts.append(1)
                with lock:
                    put.append(job._p_oid)

        def consume():
            conn, tm = self.open()
            barrier.wait()
            while (len(claimed) < producers * count
                   and time.monotonic() < deadline):
                try:
                    job = self.queue(conn).claim()
                    tm.commit()
                except ZODB.POSException.ConflictError:
                    tm.abort()
                    continue
                if job is not None:
                    with lock:
                        claimed.append(job._p_oid)

        def guarded(target):
            try:
                target()
            except Exception as e:  # report any other error to the test
                errors.append(e)
        threads = [threading.Thread(target=guarded, args=(produce,))
                   for i in range(producers)]
        threads += [threading.Thread(target=guarded, args=(consume,))
                    for i in range(consumers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(90)
        self.assertEqual(errors, [])
        self.assertEqual(len(put), producers * count)
        conn, tm = self.open()
        self.assertEqual(len(self.queue(conn)), 0)
        self.assertEqual(list(self.queue(conn)), [])
        return put, claimed, len(put_conflicts)

    def test_puts_and_claims_from_threads_lose_nothing(self):
        self.fifo_size(1000)  # one bucket, never dropped
        put, claimed, put_conflicts = self.produce_and_consume()
        self.assertEqual(sorted(claimed), sorted(put))  # each exactly once
        self.assertEqual(put_conflicts, 0)

    def test_small_buckets_under_threads_lose_nothing(self):
        # Buckets and segments fill, empty and are dropped all the time: a
        # put may meet a dropped one (and retry), but no job is lost or
        # doubled.
        self.fifo_size(2, segment_size=2)
        put, claimed, put_conflicts = self.produce_and_consume()
        self.assertEqual(sorted(claimed), sorted(put))

    def test_legacy_buckets_stay_conservative(self):
        conn, tm = self.open()
        self.queue(conn)._queue = zc.queue.CompositeQueue()
        self.queue(conn).put(work)
        tm.commit()
        with self.assertRaises(ZODB.POSException.ConflictError):
            self.concurrently(lambda q: q.put(other_work),
                              lambda q: q.claim())


# ---------------------------------------------------------- Quotas, Quota

class QuotasTests(DBTestCase):

    def test_create_with_default_size_1(self):
        self.assertIsNone(self.queue.quotas.create('a'))
        quota = self.queue.quotas['a']
        self.assertEqual((quota.name, quota.size), ('a', 1))
        self.assertIs(quota.parent, self.queue.quotas)
        self.queue.quotas.create('b', size=3)
        self.assertEqual(self.queue.quotas['b'].size, 3)
        self.assertEqual(list(self.queue.quotas), ['a', 'b'])
        self.assertEqual(len(self.queue.quotas), 2)

    def test_creating_an_existing_quota_is_refused(self):
        self.queue.quotas.create('a')
        with self.assertRaisesRegex(ValueError, 'already exists'):
            self.queue.quotas.create('a')

    def test_remove(self):
        self.queue.quotas.create('a')
        quota = self.queue.quotas['a']
        self.queue.quotas.remove('a')
        self.assertNotIn('a', self.queue.quotas)
        self.assertIsNone(quota.parent)
        with self.assertRaises(KeyError):
            self.queue.quotas.remove('a')

    def test_direct_changes_are_disabled(self):
        quotas = self.queue.quotas
        quotas.create('a')
        for attempt in (lambda: quotas.__setitem__('b', None),
                        lambda: quotas.update({}),
                        lambda: quotas.pop('a'),
                        lambda: quotas.__delitem__('a'),
                        lambda: quotas.copy()):
            with self.assertRaises(TypeError):
                attempt()
        self.assertEqual(list(quotas), ['a'])

    def test_parent_is_the_queue(self):
        self.assertIs(self.queue.quotas.__parent__, self.queue)


class QuotaTests(DBTestCase):

    def setUp(self):
        super().setUp()
        self.queue.quotas.create('q', size=2)
        self.quota = self.queue.quotas['q']

    def job(self, *names):
        job = Job(work)
        job.quota_names = names
        return job

    def test_add_requires_a_job_naming_the_quota(self):
        with self.assertRaises(ValueError) as caught:
            self.quota.add(work)
        self.assertEqual(caught.exception.args[0], 'must be IJob')
        with self.assertRaises(ValueError) as caught:
            self.quota.add(self.job('other'))
        self.assertEqual(caught.exception.args[0],
                         'quota name must be in quota_names')

    def test_add_fills_the_quota_then_refuses(self):
        first, second = self.job('q'), self.job('q')
        self.quota.add(first)
        self.assertFalse(self.quota.filled)
        self.quota.add(second)
        self.assertTrue(self.quota.filled)
        with self.assertRaises(ValueError) as caught:
            self.quota.add(self.job('q'))
        self.assertEqual(caught.exception.args[0], 'Quota is filled')

    def test_adding_a_present_job_is_a_no_op_even_when_filled(self):
        job = self.job('q')
        self.quota.size = 1
        self.quota.add(job)
        self.quota.add(job)
        self.assertEqual(list(self.quota), [job])

    def test_sequence_api(self):
        self.assertFalse(self.quota)
        self.assertIsNone(self.quota.get(0))
        first, second = self.job('q'), self.job('q')
        self.quota.add(first)
        self.quota.add(second)
        self.assertTrue(self.quota)
        self.assertEqual(len(self.quota), 2)
        self.assertEqual(list(self.quota), [first, second])
        self.assertIs(self.quota[1], second)
        self.assertIs(self.quota.get(-1), second)
        self.assertIs(self.quota.get(5, 'x'), 'x')

    def test_contains_is_by_identity(self):
        job = self.job('q')
        self.quota.add(job)
        self.assertIn(job, self.quota)
        self.assertNotIn(self.job('q'), self.quota)

    def test_clean_drops_finished_and_rescheduled_jobs(self):
        self.quota.size = 3
        done, rescheduled, assigned = (
            self.job('q'), self.job('q'), self.job('q'))
        for job in (done, rescheduled, assigned):
            self.quota.add(job)
        self.queue.put(rescheduled, START + datetime.timedelta(minutes=1))
        self.queue.put(done)
        self.queue.put(assigned)
        self.assertIs(self.queue.claim(), done)
        self.assertIs(self.queue.claim(), assigned)
        self.commit()
        done()
        self.quota.clean()
        self.assertEqual(list(self.quota), [assigned])

    def test_clean_does_not_write_when_nothing_changes(self):
        self.quota.add(self.job('q'))
        self.commit()
        self.quota.clean()
        self.assertFalse(self.quota._p_changed)

    def test_quota_is_strict_under_concurrency(self):
        # Two transactions adding to the same quota conflict: a quota is a
        # maximum, never merged past its size.
        self.commit()
        tm = transaction.TransactionManager()
        conn = self.db.open(tm)
        self.addCleanup(conn.close)
        other = conn.root()[interfaces.KEY][''].quotas['q']
        self.quota.add(self.job('q'))
        other.add(self.job('q'))
        self.commit()
        with self.assertRaises(ZODB.POSException.ConflictError):
            tm.commit()
        tm.abort()


# -------------------------------------------------- Dispatchers and agents

class DispatchersTests(DBTestCase):

    def setUp(self):
        super().setUp()
        self.uuid = uuid.uuid1()

    def test_register_creates_a_record_whose_parent_is_the_queue(self):
        self.assertIsNone(self.queue.dispatchers.register(self.uuid))
        agents = self.queue.dispatchers[self.uuid]
        self.assertIsInstance(agents,
                              zc.asynchronous.queue.DispatcherAgents)
        self.assertEqual(agents.UUID, self.uuid)
        self.assertIs(agents.parent, self.queue)
        self.assertEqual(list(self.queue.dispatchers), [self.uuid])
        registered = self.eventsOf(interfaces.IDispatcherRegistered)
        self.assertEqual([e.object for e in registered], [agents])

    def test_register_twice_is_refused(self):
        self.queue.dispatchers.register(self.uuid)
        with self.assertRaises(ValueError) as caught:
            self.queue.dispatchers.register(self.uuid)
        self.assertEqual(caught.exception.args[0], 'UUID already registered')

    def test_unregister_refuses_an_activated_record(self):
        self.queue.dispatchers.register(self.uuid)
        self.queue.dispatchers[self.uuid].activate()
        with self.assertRaises(ValueError) as caught:
            self.queue.dispatchers.unregister(self.uuid)
        self.assertEqual(caught.exception.args[0], 'UUID is activated.')
        self.assertIn(self.uuid, self.queue.dispatchers)

    def test_unregister_removes_and_fires_the_event(self):
        self.queue.dispatchers.register(self.uuid)
        agents = self.queue.dispatchers[self.uuid]
        self.queue.dispatchers.unregister(self.uuid)
        self.assertNotIn(self.uuid, self.queue.dispatchers)
        self.assertEqual(len(self.queue.dispatchers), 0)
        unregistered = self.eventsOf(interfaces.IDispatcherUnregistered)
        self.assertEqual([e.object for e in unregistered], [agents])
        with self.assertRaises(KeyError):
            self.queue.dispatchers.unregister(self.uuid)

    def test_mapping_is_read_only(self):
        dispatchers = self.queue.dispatchers
        dispatchers.register(self.uuid)
        for attempt in (lambda: dispatchers.__setitem__(self.uuid, None),
                        lambda: dispatchers.update({}),
                        lambda: dispatchers.pop(self.uuid),
                        lambda: dispatchers.__delitem__(self.uuid),
                        lambda: dispatchers.copy()):
            with self.assertRaises(TypeError):
                attempt()
        self.assertIn(self.uuid, dispatchers)
        self.assertIs(dispatchers.__parent__, self.queue)

    def test_records_survive_a_commit(self):
        self.queue.dispatchers.register(self.uuid)
        self.commit()
        tm = transaction.TransactionManager()
        conn = self.db.open(tm)
        self.addCleanup(conn.close)
        queue = conn.root()[interfaces.KEY]['']
        self.assertEqual(queue.dispatchers[self.uuid].UUID, self.uuid)


class PingTests(DBTestCase):

    def setUp(self):
        super().setUp()
        self.uuids = sorted(uuid.uuid4() for i in range(3))
        for u in self.uuids:
            self.queue.dispatchers.register(u)
            self.queue.dispatchers[u].activate()
        self.records = [self.queue.dispatchers[u] for u in self.uuids]

    def test_first_ping_is_recorded(self):
        self.queue.dispatchers.ping(self.uuids[0])
        self.assertEqual(self.records[0].last_ping.value, START)

    def test_pings_are_written_at_most_once_per_ping_interval(self):
        ping = self.queue.dispatchers.ping
        ping(self.uuids[0])
        self.tick(seconds=29)
        ping(self.uuids[0])
        self.assertEqual(self.records[0].last_ping.value, START)
        self.tick(seconds=1)
        ping(self.uuids[0])
        self.assertEqual(self.records[0].last_ping.value,
                         START + datetime.timedelta(seconds=30))

    def test_ping_deactivates_the_next_dead_sibling(self):
        self.tick(seconds=61)
        self.queue.dispatchers.ping(self.uuids[0])
        self.assertIsNone(self.records[1].activated)
        self.assertIsNotNone(self.records[2].activated)
        deactivated = self.eventsOf(interfaces.IDispatcherDeactivated)
        self.assertEqual([e.object for e in deactivated], [self.records[1]])

    def test_sibling_search_wraps_around(self):
        self.tick(seconds=61)
        self.queue.dispatchers.ping(self.uuids[2])
        self.assertIsNone(self.records[0].activated)
        self.assertIsNotNone(self.records[1].activated)

    def test_deactivated_siblings_are_skipped(self):
        self.records[1].deactivate()
        self.tick(seconds=61)
        self.queue.dispatchers.ping(self.uuids[0])
        self.assertIsNone(self.records[2].activated)

    def test_live_sibling_is_left_alone(self):
        self.tick(seconds=50)
        self.queue.dispatchers.ping(self.uuids[1])
        self.tick(seconds=50)
        self.queue.dispatchers.ping(self.uuids[0])
        self.assertIsNotNone(self.records[1].activated)

    def test_deactivated_dispatcher_that_pings_is_reactivated(self):
        record = self.records[0]
        record.deactivate()
        self.tick(seconds=5)
        with self.assertLogs('zc.async.events', logging.CRITICAL) as logs:
            self.queue.dispatchers.ping(self.uuids[0])
        self.assertIn('ping_death_interval', logs.output[0])
        self.assertEqual(record.activated, START + datetime.timedelta(0, 5))
        reactivated = self.eventsOf(interfaces.IDispatcherReactivated)
        self.assertEqual([e.object for e in reactivated], [record])

    def test_unknown_uuid_is_a_KeyError(self):
        with self.assertRaises(KeyError):
            self.queue.dispatchers.ping(uuid.uuid4())


class DispatcherAgentsTests(DBTestCase):

    def setUp(self):
        super().setUp()
        self.uuid = uuid.uuid1()
        self.queue.dispatchers.register(self.uuid)
        self.record = self.queue.dispatchers[self.uuid]

    def test_defaults(self):
        self.assertIsNone(self.record.activated)
        self.assertIsNone(self.record.last_ping.value)
        self.assertEqual(self.record.ping_interval,
                         datetime.timedelta(seconds=30))
        self.assertEqual(self.record.ping_death_interval,
                         datetime.timedelta(seconds=60))
        self.assertFalse(self.record.dead)

    def test_dead_counts_from_the_later_of_ping_and_activation(self):
        self.record.activate()
        self.assertEqual(self.record.activated, START)
        self.tick(seconds=60)
        self.assertFalse(self.record.dead)
        self.tick(microseconds=1)
        self.assertTrue(self.record.dead)
        self.record.last_ping.value = zc.asynchronous.utils.now()
        self.assertFalse(self.record.dead)
        self.record.ping_death_interval = datetime.timedelta(seconds=1)
        self.tick(seconds=2)
        self.assertTrue(self.record.dead)

    def test_deactivated_record_with_a_stale_ping_is_dead(self):
        self.record.last_ping.value = START
        self.tick(minutes=2)
        self.assertTrue(self.record.dead)

    def test_activate_and_deactivate(self):
        self.record.activate()
        with self.assertRaises(ValueError) as caught:
            self.record.activate()
        self.assertEqual(caught.exception.args[0], 'Already activated')
        self.record.deactivate()
        self.assertIsNone(self.record.activated)
        with self.assertRaises(ValueError) as caught:
            self.record.deactivate()
        self.assertEqual(caught.exception.args[0], 'Not activated')
        self.assertEqual(
            [type(e).__name__ for e in self.events],
            ['DispatcherRegistered', 'DispatcherActivated',
             'DispatcherDeactivated'])

    def test_agents_must_be_IAgent(self):
        with self.assertRaises(ValueError) as caught:
            self.record['main'] = persistent.Persistent()
        self.assertEqual(caught.exception.args[0], 'value must be IAgent')

    def test_setting_an_agent_names_and_parents_it(self):
        agent = self.record['main'] = zc.asynchronous.agent.Agent()
        self.assertEqual(agent.name, 'main')
        self.assertIs(agent.parent, self.record)
        self.assertIs(agent.queue, self.queue)

    def test_agents_with_jobs_cannot_be_added_or_removed(self):
        busy = zc.asynchronous.agent.Agent()
        self.record['busy'] = busy
        self.record.activate()
        self.queue.put(work)
        busy.claimJob()
        with self.assertRaises(ValueError) as caught:
            self.record['other'] = busy
        self.assertEqual(caught.exception.args[0],
                         'cannot add an agent with active jobs')
        for attempt in (
                lambda: self.record.__setitem__(
                    'busy', zc.asynchronous.agent.Agent()),
                lambda: self.record.pop('busy'),
                lambda: self.record.__delitem__('busy')):
            with self.assertRaises(ValueError) as caught:
                attempt()
            self.assertEqual(caught.exception.args[0],
                             'cannot remove an agent with active jobs')
        self.assertIs(self.record['busy'], busy)

    def test_idle_agents_can_be_replaced_and_removed(self):
        self.record['main'] = zc.asynchronous.agent.Agent()
        replacement = self.record['main'] = zc.asynchronous.agent.Agent()
        self.assertIs(self.record.pop('main'), replacement)
        self.assertIsNone(replacement.parent)
        self.record['main'] = zc.asynchronous.agent.Agent()
        del self.record['main']
        self.assertEqual(len(self.record), 0)


class CleaningTests(DBTestCase):
    """Deactivation and activation hand held jobs back (reference 3.5.4)."""

    def setUp(self):
        super().setUp()
        self.uuid = uuid.uuid1()
        self.queue.dispatchers.register(self.uuid)
        self.record = self.queue.dispatchers[self.uuid]
        self.agent = self.record['main'] = zc.asynchronous.agent.Agent(
            size=10)
        self.record.activate()

    def claim(self, *args, **kwargs):
        self.queue.put(*args, **kwargs)
        return self.agent.claimJob()

    def test_not_started_job_is_put_again_unchanged(self):
        uuid_ = uuid.uuid1()
        job = Job(work)
        job.assignerUUID = uuid_
        job = self.claim(job, START - datetime.timedelta(minutes=5))
        waiting = self.queue.put(other_work)
        self.record.deactivate()
        self.assertEqual(len(self.agent), 0)
        self.assertEqual(list(self.queue), [waiting, job])
        self.assertEqual(job.status, interfaces.PENDING)
        self.assertEqual(job.begin_after,
                         START - datetime.timedelta(minutes=5))
        self.assertEqual(job.assignerUUID, uuid_)

    def test_not_started_job_naming_a_removed_quota_is_put_again(self):
        self.queue.quotas.create('q')
        job = Job(work)
        job.quota_names = ('q',)
        job = self.claim(job)
        self.queue.quotas.remove('q')
        self.record.deactivate()
        self.assertEqual(list(self.queue), [job])

    def test_active_job_gets_a_handleInterrupt_job(self):
        inner = Job(other_work)
        job = self.claim(Job(wait_for_inner, inner))
        self.commit()
        job()
        self.assertEqual(job.status, interfaces.ACTIVE)
        self.record.deactivate()
        self.assertEqual(len(self.queue), 1)
        wrapper = self.queue[0]
        self.assertEqual(wrapper.callable, job.handleInterrupt)
        self.assertIs(wrapper.retry_policy_factory,
                      zc.asynchronous.job.RetryCommonForever)
        self.assertEqual(wrapper.failure_log_level, logging.CRITICAL)
        self.assertIs(job.parent, wrapper)
        self.assertIs(job.queue, self.queue)

    def test_job_in_callbacks_gets_a_resumeCallbacks_job(self):
        job = self.claim(work)
        job.addCallback(explode)
        self.commit()
        with self.assertRaises(SystemExit):
            job()
        self.assertEqual(job.status, interfaces.CALLBACKS)
        self.record.deactivate()
        wrapper = self.queue[0]
        self.assertEqual(wrapper.callable, job.resumeCallbacks)
        self.assertIs(wrapper.retry_policy_factory,
                      zc.asynchronous.job.RetryCommonForever)
        self.assertEqual(wrapper.failure_log_level, logging.CRITICAL)
        self.assertIs(job.parent, wrapper)
        self.assertEqual(len(self.agent), 0)

    def test_cleaning_empties_every_agent(self):
        second = self.record['second'] = zc.asynchronous.agent.Agent()
        jobs = [self.claim(work), self.claim(work)]
        self.queue.put(work)
        jobs.append(second.claimJob())
        self.record.deactivate()
        self.assertEqual((len(self.agent), len(second)), (0, 0))
        self.assertEqual(len(self.queue), 3)
        self.assertEqual(set(map(id, self.queue)), set(map(id, jobs)))

    def test_completed_job_goes_to_completed_with_a_warning(self):
        job = self.claim(work)
        self.commit()
        job.parent = None  # the job completes without telling its agent
        job()
        job.parent = self.agent
        self.assertEqual(job.status, interfaces.COMPLETED)
        with self.assertLogs('zc.async.events', logging.WARNING) as logs:
            self.record.deactivate()
        self.assertIn('unexpectedly had to inform agent', logs.output[0])
        self.assertEqual(list(self.agent.completed), [job])
        self.assertIs(job.parent, self.agent)
        self.assertEqual(len(self.queue), 0)

    def test_activate_cleans_too(self):
        job = self.claim(work)
        self.record.activated = None  # deactivated without cleaning
        self.record.activate()
        self.assertEqual(list(self.queue), [job])
        self.assertEqual(len(self.agent), 0)
        self.assertEqual(
            [type(e).__name__ for e in self.events][-1],
            'DispatcherActivated')

    def test_reactivate_does_not_clean(self):
        job = self.claim(work)
        self.record.activated = None
        self.record.reactivate()
        self.assertEqual(list(self.agent), [job])
        self.assertEqual(self.record.activated, START)

    def test_jobs_of_a_dead_sibling_are_requeued_by_a_ping(self):
        job = self.claim(work)
        other = uuid.uuid1()
        self.queue.dispatchers.register(other)
        self.queue.dispatchers[other].activate()
        self.tick(seconds=45)
        self.queue.dispatchers.ping(other)
        self.tick(seconds=30)
        self.queue.dispatchers.ping(other)
        self.assertIsNone(self.record.activated)
        self.assertEqual(list(self.queue), [job])


def test_suite():
    return unittest.defaultTestLoader.loadTestsFromName(__name__)
