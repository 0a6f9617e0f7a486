"""Tests for zc.async._jobparts: what a job stores of its arguments,
callbacks and annotations, and that the attributes behave as 1.5's.

Jobs are stored in real FileStorage databases; other connections (with
their own transaction managers) check what a commit really stored.
"""
import pickle
import unittest

import BTrees.OOBTree
import persistent
import persistent.list
import persistent.mapping
import transaction
import zc.queue
import zope.annotation.interfaces
import zope.component
import zope.testing.cleanup
import ZODB.ConflictResolution
import ZODB.POSException
import ZODB.utils

from zc.asynchronous import _jobparts
from zc.asynchronous import interfaces
from zc.asynchronous import monitordb
from zc.asynchronous import testing
from zc.asynchronous import z3
from zc.asynchronous.job import Job
from zc.asynchronous.queue import Queue

# The classes of the sub-objects 1.5 gave every job.
PART_CLASSES = {
    ('persistent.list', 'PersistentList'),
    ('persistent.mapping', 'PersistentMapping'),
    ('zc.queue._queue', 'BucketQueue'),
    ('BTrees.OOBTree', 'OOBTree'),
}

calls = []


def record(*args, **kwargs):
    calls.append((args, kwargs))
    return len(calls)


def old_state(job_callable, args=(), kwargs=None):
    """A job's state as 1.5 (and zc.async 2 before this module) stored
    it: the four parts under their public names."""
    return {
        '_callable_root': job_callable, '_callable_name': None,
        'args': persistent.list.PersistentList(args),
        'kwargs': persistent.mapping.PersistentMapping(kwargs or {}),
        'callbacks': zc.queue.PersistentQueue(),
        'annotations': BTrees.OOBTree.OOBTree(),
        '_status_id': 0, '_result': None,
    }


class DatabaseTestCase(unittest.TestCase):
    """A FileStorage database, a connection and a second one."""

    def setUp(self):
        del calls[:]
        self.db = testing.db()
        self.addCleanup(self.db.close)
        self.conn = self.db.open()
        self.addCleanup(self.conn.close)
        self.addCleanup(transaction.abort)
        self.root = self.conn.root()

    def tearDown(self):
        zope.testing.cleanup.cleanUp()

    def store(self, job, key='job'):
        self.root[key] = job
        transaction.commit()
        return job

    def other(self):
        """A second connection (own transaction manager) and its manager."""
        tm = transaction.TransactionManager()
        conn = self.db.open(transaction_manager=tm)
        self.addCleanup(conn.close)
        self.addCleanup(tm.abort)
        return conn, tm

    def in_other(self, job):
        """``job`` as loaded by a second connection, and its manager."""
        conn, tm = self.other()
        return conn.get(job._p_oid), tm

    def records_of_last_commit(self):
        """(module, class) of every record of the last transaction but
        the root's."""
        storage = self.db.storage
        tid = storage.lastTransaction()
        transactions = storage.iterator(tid, tid)
        try:
            return [ZODB.utils.get_pickle_metadata(r.data)
                    for txn in transactions for r in txn
                    if r.oid != ZODB.utils.z64]
        finally:
            transactions.close()

    def count_loads(self):
        """A list that gets the (module, class) of every record the
        storage loads from now on."""
        storage = self.db.storage
        real = storage.loadBefore
        loads = []

        def loadBefore(oid, tid):
            res = real(oid, tid)
            loads.append(ZODB.utils.get_pickle_metadata(res[0]))
            return res
        storage.loadBefore = loadBefore
        self.addCleanup(delattr, storage, 'loadBefore')
        return loads

    def store_old(self, *args, **kwargs):
        """A job stored with 1.5's state layout (as a 1.5 pickle is)."""
        job = Job.__new__(Job)
        persistent.Persistent.__setstate__(
            job, old_state(record, args, kwargs))
        self.assertIn('args', job.__getstate__())
        return self.store(job)


# ------------------------------------------------------------ storing

class StoringTests(DatabaseTestCase):

    def test_a_job_without_arguments_stores_no_sub_object(self):
        job = Job(record)
        state = job.__getstate__()
        for name in ('_args', '_kwargs', '_callbacks', '_annotations',
                     'args', 'kwargs', 'callbacks', 'annotations'):
            self.assertNotIn(name, state)
        self.store(job)
        self.assertEqual(self.records_of_last_commit(),
                         [('zc.async.job', 'Job')])

    def test_small_arguments_are_stored_in_the_job(self):
        demo = self.root['demo'] = persistent.mapping.PersistentMapping()
        transaction.commit()
        job = self.store(Job(record, 1, 'two', demo, three=3))
        self.assertEqual(job.__getstate__()['_args'], (1, 'two', demo))
        self.assertEqual(job.__getstate__()['_kwargs'], {'three': 3})
        self.assertEqual(self.records_of_last_commit(),
                         [('zc.async.job', 'Job')])

    def test_a_put_stores_the_job_and_the_queues_records_only(self):
        queue = self.root['queue'] = Queue()
        transaction.commit()
        for job in (Job(record), Job(record, 1, k=2)):
            queue.put(job)
            transaction.commit()
            classes = self.records_of_last_commit()
            self.assertEqual(set(classes) & PART_CLASSES, set())
            self.assertEqual(classes.count(('zc.async.job', 'Job')), 1)

    def test_large_arguments_get_their_persistent_objects(self):
        big = 'x' * (_jobparts.INLINE_LIMIT + 1)
        job = self.store(Job(record, big, big=big))
        self.assertIsInstance(job.args, persistent.list.PersistentList)
        self.assertIsInstance(job.kwargs,
                              persistent.mapping.PersistentMapping)
        self.assertEqual(list(job.args), [big])
        self.assertEqual(dict(job.kwargs), {'big': big})
        self.assertIn(('persistent.list', 'PersistentList'),
                      self.records_of_last_commit())
        self.assertEqual(job(), 1)
        self.assertEqual(calls, [((big,), {'big': big})])

    def test_persistent_arguments_count_as_references(self):
        # Each would be far over the limit if pickled by value.
        mappings = [persistent.mapping.PersistentMapping(
            data='x' * _jobparts.INLINE_LIMIT) for _ in range(3)]
        job = Job(record, *mappings)
        self.assertIsInstance(job.__getstate__()['_args'], tuple)

    def test_running_a_loaded_job_loads_nothing_more(self):
        loads = self.count_loads()
        for job in (Job(record), Job(record, 1, k=2)):
            self.store(job)
            other, tm = self.in_other(job)
            other._p_activate()  # (Connection.get loads it once more)
            del loads[:]
            other()
            self.assertEqual(loads, [])
        self.assertEqual(calls, [((), {}), ((1,), {'k': 2})])

    def test_unpicklable_arguments_are_named_by_the_put(self):
        queue = self.root['queue'] = Queue()
        transaction.commit()
        with self.assertRaisesRegex(TypeError, 'its argument 1 cannot'):
            queue.put(Job(record, 1, lambda: 2))
        with self.assertRaisesRegex(TypeError,
                                    "its keyword argument 'k' cannot"):
            queue.put(Job(record, k=lambda: 2))


# ------------------------------------------------------ the attributes

class ArgsTests(DatabaseTestCase):

    def test_args_is_a_list_like_view(self):
        job = Job(record, 1, 2)
        self.assertEqual(job.args, [1, 2])
        self.assertEqual([1, 2], job.args)
        self.assertEqual(job.args, persistent.list.PersistentList([1, 2]))
        self.assertNotEqual(job.args, (1, 2))
        self.assertEqual(repr(job.args), '[1, 2]')
        self.assertEqual(job.args[1:], [2])
        self.assertEqual(job.args + [3], [1, 2, 3])
        self.assertEqual([0] + job.args, [0, 1, 2])
        self.assertEqual(job.args * 2, [1, 2, 1, 2])
        self.assertEqual(len(job.args), 2)
        self.assertIn(2, job.args)
        self.assertEqual(job.args.index(2), 1)
        self.assertIs(job.args, job.args)
        self.assertEqual(pickle.loads(pickle.dumps(job.args)), [1, 2])

    def test_every_change_is_stored(self):
        job = self.store(Job(record, 3, 1, 2))
        other, tm = self.in_other(job)
        args = other.args
        args.append(4)
        args.sort()
        args.insert(0, 0)
        args.extend([5, 6])
        args += [7]
        args[1] = 'one'
        del args[2]
        self.assertEqual(args.pop(), 7)
        args.remove(6)
        args.reverse()
        tm.commit()
        transaction.begin()
        self.assertEqual(job.args, [5, 4, 3, 'one', 0])
        other.args[1:3] = ['a', 'b', 'c']
        tm.commit()
        transaction.begin()
        self.assertEqual(job.args, [5, 'a', 'b', 'c', 'one', 0])
        other.args.clear()
        tm.commit()
        transaction.begin()
        self.assertEqual(job.args, [])
        other.args.append(1)
        args = other.args
        args *= 2
        tm.commit()
        transaction.begin()
        self.assertEqual(job.args, [1, 1])

    def test_assignment_is_stored(self):
        job = self.store(Job(record))
        job.args = [1, 2]
        job.kwargs = {'a': 1}
        transaction.commit()
        other, tm = self.in_other(job)
        self.assertEqual(other.args, [1, 2])
        self.assertEqual(other.kwargs, {'a': 1})

    def test_a_view_follows_the_job_across_transactions(self):
        job = self.store(Job(record, 1))
        args = job.args
        other, tm = self.in_other(job)
        other.args.append(2)
        tm.commit()
        transaction.begin()
        self.assertEqual(args, [1, 2])
        args.append(3)
        transaction.commit()
        tm.begin()
        self.assertEqual(other.args, [1, 2, 3])

    def test_growing_past_the_limit_moves_to_a_persistent_list(self):
        job = self.store(Job(record, 1))
        view = job.args
        view.append('x' * _jobparts.INLINE_LIMIT)
        stored = job.args
        self.assertIsInstance(stored, persistent.list.PersistentList)
        view.append(3)  # the old view changes the list in place
        self.assertIs(job.args, stored)
        transaction.commit()
        other, tm = self.in_other(job)
        self.assertEqual(list(other.args),
                         [1, 'x' * _jobparts.INLINE_LIMIT, 3])

    def test_bind_passes_the_job_itself_after_reloading(self):
        job = self.store(Job.bind(record, 'x'))
        self.assertIs(job.args[0], job)
        other, tm = self.in_other(job)
        self.assertIs(other.args[0], other)
        self.assertEqual(other(), 1)
        self.assertIs(calls[0][0][0], other)
        self.assertEqual(calls[0][0][1:], ('x',))

    def test_failed_changes_change_nothing(self):
        job = self.store(Job(record, 1))
        with self.assertRaises(ValueError):
            job.args.remove(2)
        with self.assertRaises(IndexError):
            job.args.pop(5)
        self.assertFalse(job._p_changed)


class KwargsTests(DatabaseTestCase):

    def test_kwargs_is_a_dict_like_view(self):
        job = Job(record, a=1)
        self.assertEqual(job.kwargs, {'a': 1})
        self.assertEqual({'a': 1}, job.kwargs)
        self.assertEqual(repr(job.kwargs), "{'a': 1}")
        self.assertEqual(job.kwargs.get('b', 2), 2)
        self.assertIs(job.kwargs, job.kwargs)
        self.assertEqual(pickle.loads(pickle.dumps(job.kwargs)), {'a': 1})
        self.assertEqual(Job(record).kwargs, {})

    def test_every_change_is_stored(self):
        job = self.store(Job(record, a=1, b=2))
        other, tm = self.in_other(job)
        kwargs = other.kwargs
        kwargs['c'] = 3
        kwargs.update({'d': 4}, e=5)
        del kwargs['a']
        self.assertEqual(kwargs.pop('b'), 2)
        self.assertEqual(kwargs.pop('missing', 'x'), 'x')
        self.assertEqual(kwargs.setdefault('f', 6), 6)
        tm.commit()
        transaction.begin()
        self.assertEqual(job.kwargs, {'c': 3, 'd': 4, 'e': 5, 'f': 6})
        other.kwargs.clear()
        tm.commit()
        transaction.begin()
        self.assertEqual(dict(job.kwargs), {})

    def test_postprocess_of_a_composite_is_found(self):
        import zc.asynchronous.job
        composite = zc.asynchronous.job.serial(Job(record))
        self.store(composite)
        other, tm = self.in_other(composite)
        self.assertEqual(other.kwargs['postprocess'].callable,
                         zc.asynchronous.job._transparent)


class CallbacksTests(DatabaseTestCase):

    def test_no_callbacks_read_as_an_empty_queue(self):
        job = self.store(Job(record))
        self.assertEqual(len(job.callbacks), 0)
        self.assertEqual(list(job.callbacks), [])
        self.assertFalse(job.callbacks)
        self.assertIs(job.callbacks, job.callbacks)
        with self.assertRaises(IndexError):
            job.callbacks.pull()
        with self.assertRaises(IndexError):
            job.callbacks[0]

    def test_callbacks_added_later_are_stored_and_run(self):
        job = self.store(Job(record, 'job'))
        stand_in = job.callbacks
        other, tm = self.in_other(job)
        callback = other.addCallback(Job(record, 'callback'))
        tm.commit()
        transaction.begin()
        self.assertIsInstance(job.callbacks, zc.queue.PersistentQueue)
        self.assertEqual(len(stand_in), 1)
        self.assertEqual(list(job.callbacks), [job.callbacks[0]])
        self.assertEqual(job.callbacks[0]._p_oid, callback._p_oid)
        job()
        self.assertEqual(calls, [(('job',), {}), (('callback', 1), {})])
        self.assertEqual(job.status, interfaces.COMPLETED)

    def test_put_on_the_stand_in_is_stored(self):
        job = self.store(Job(record))
        callback = Job(record)
        job.callbacks.put(callback)
        transaction.commit()
        other, tm = self.in_other(job)
        self.assertEqual([cb._p_oid for cb in other.callbacks],
                         [callback._p_oid])


class AnnotationsTests(DatabaseTestCase):

    def test_no_annotations_read_as_an_empty_tree(self):
        job = self.store(Job(record))
        annotations = job.annotations
        self.assertIs(annotations, job.annotations)
        self.assertEqual(len(annotations), 0)
        self.assertNotIn('a', annotations)
        self.assertIsNone(annotations.get('a'))
        self.assertEqual(list(annotations.keys()), [])
        self.assertEqual(list(annotations.items()), [])
        self.assertEqual(annotations.pop('a', 1), 1)
        annotations.update()
        annotations.clear()
        with self.assertRaises(KeyError):
            annotations['a']
        with self.assertRaises(KeyError):
            del annotations['a']
        with self.assertRaises(ValueError):
            annotations.minKey()
        self.assertFalse(job._p_changed)

    def test_the_first_annotation_makes_the_tree(self):
        job = self.store(Job(record))
        stand_in = job.annotations
        other, tm = self.in_other(job)
        other.annotations['progress'] = 0.5
        tm.commit()
        transaction.begin()
        self.assertIsInstance(job.annotations, BTrees.OOBTree.OOBTree)
        self.assertEqual(stand_in['progress'], 0.5)
        stand_in['note'] = 'x'  # now changes the job's tree
        transaction.commit()
        tm.begin()
        self.assertEqual(dict(other.annotations),
                         {'progress': 0.5, 'note': 'x'})

    def test_annotations_are_the_jobs_IAnnotations(self):
        zope.component.provideAdapter(z3.annotations)
        job = self.store(Job(record))
        annotations = zope.annotation.interfaces.IAnnotations(job)
        self.assertIs(annotations, job.annotations)
        annotations['zc.async.test'] = 'hi'
        self.assertIs(zope.annotation.interfaces.IAnnotations(job),
                      job.annotations)
        transaction.commit()
        other, tm = self.in_other(job)
        self.assertEqual(other.annotations['zc.async.test'], 'hi')


# ------------------------------------------------------ old layouts

class OldLayoutTests(DatabaseTestCase):

    def test_old_state_gives_the_same_objects(self):
        state = old_state(record, [1, 2], {'a': 3})
        job = Job.__new__(Job)
        job.__setstate__(dict(state))
        self.assertIs(job.args, state['args'])
        self.assertIs(job.kwargs, state['kwargs'])
        self.assertIs(job.callbacks, state['callbacks'])
        self.assertIs(job.annotations, state['annotations'])
        self.assertEqual(
            repr(job), '<zc.async.job.Job (oid ?, db ?) '
            '``zc.async.tests.test_jobparts.record(1, 2, a=3)``>')

    def test_old_stored_job_runs_and_keeps_its_objects(self):
        job = self.store_old(1, a=2)
        other, tm = self.in_other(job)
        self.assertIsInstance(other.args, persistent.list.PersistentList)
        args_oid = other.args._p_oid
        other.args.append(3)
        other.kwargs['b'] = 4
        other.annotations['c'] = 5
        callback = other.addCallback(Job(record, 'callback'))
        tm.commit()
        transaction.begin()
        self.assertEqual(job.args._p_oid, args_oid)
        self.assertEqual(list(job.args), [1, 3])
        self.assertEqual(dict(job.kwargs), {'a': 2, 'b': 4})
        self.assertEqual(dict(job.annotations), {'c': 5})
        self.assertEqual([cb._p_oid for cb in job.callbacks],
                         [callback._p_oid])
        self.assertEqual(job(), 1)
        self.assertEqual(calls, [((1, 3), {'a': 2, 'b': 4}),
                                 (('callback', 1), {})])
        self.assertEqual(job.status, interfaces.COMPLETED)

    def test_old_job_is_stored_with_the_new_names_once_written(self):
        job = self.store_old(1)
        job.failure_log_level = 10
        transaction.commit()
        other, tm = self.in_other(job)
        state = other.__getstate__()
        self.assertNotIn('args', state)
        self.assertIsInstance(state['_args'], persistent.list.PersistentList)
        self.assertEqual(list(other.args), [1])


# ---------------------------------------------------- reading is free

class ReadingTests(DatabaseTestCase):

    def read_everything(self, job):
        repr(job)
        list(job.args), len(job.args), job.args == [], repr(job.args)
        dict(job.kwargs), list(job.kwargs.items()), job.kwargs.get('a')
        len(job.callbacks), list(job.callbacks), bool(job.callbacks)
        len(job.annotations), job.annotations.get('a'), 'a' in job.annotations
        list(job.annotations.items()), list(job.annotations.keys())
        monitordb.jobsummary(job)
        job._check_picklable()

    def jobs(self):
        with_parts = Job(record)
        with_parts.addCallback(Job(record))
        with_parts.annotations['a'] = 1
        return [Job(record), Job(record, 1, k=2),
                Job(record, 'x' * (_jobparts.INLINE_LIMIT + 1)),
                Job.bind(record), with_parts]

    def test_reading_a_stored_job_does_not_write_it(self):
        for index, job in enumerate(self.jobs()):
            self.store(job, 'job%d' % index)
            other, tm = self.in_other(job)
            self.read_everything(other)
            self.assertFalse(other._p_changed, repr(job))

    def test_reading_an_old_job_does_not_write_it(self):
        job = self.store_old(1, a=2)
        other, tm = self.in_other(job)
        self.read_everything(other)
        self.assertFalse(other._p_changed)

    def test_a_read_only_pass_over_many_jobs_commits_nothing(self):
        jobs = [Job(record, ix) for ix in range(20)] + self.jobs()
        for index, job in enumerate(jobs):
            self.root['job%d' % index] = job
        transaction.commit()
        last = self.db.lastTransaction()
        conn, tm = self.other()
        tm.begin()
        for index in range(len(jobs)):
            self.read_everything(conn.root()['job%d' % index])
        tm.commit()
        self.assertEqual(self.db.lastTransaction(), last)


# --------------------------------------------------- live annotations

class AnnotationConflictTests(DatabaseTestCase):
    """A live annotation creates the tree of a job that had none, in
    another connection, while the job's own connection changes it."""

    def setUp(self):
        super().setUp()
        self.job = self.store(Job(record))
        self.other_job, self.tm = self.in_other(self.job)
        self.other_job._p_activate()

    def annotate_in_other(self):
        self.other_job.annotations['progress'] = 0.5
        self.tm.commit()

    def test_annotation_first_then_the_jobs_change(self):
        self.job._p_activate()
        self.annotate_in_other()
        self.job.failure_log_level = 10
        transaction.commit()  # no ConflictError
        self.tm.begin()
        self.assertEqual(self.other_job.failure_log_level, 10)
        self.assertEqual(dict(self.other_job.annotations),
                         {'progress': 0.5})

    def test_the_jobs_change_first_then_the_annotation(self):
        self.job.failure_log_level = 10
        transaction.commit()
        self.annotate_in_other()  # no ConflictError
        transaction.begin()
        self.assertEqual(self.job.failure_log_level, 10)
        self.assertEqual(dict(self.job.annotations), {'progress': 0.5})

    def test_a_job_running_while_annotated_completes(self):
        self.job._p_activate()
        self.annotate_in_other()
        self.assertEqual(self.job(), 1)
        self.tm.begin()
        self.assertEqual(self.other_job.status, interfaces.COMPLETED)
        self.assertEqual(self.other_job.annotations['progress'], 0.5)

    def test_other_changes_with_the_annotation_still_conflict(self):
        self.job._p_activate()
        self.other_job.annotations['progress'] = 0.5
        self.other_job.failure_log_level = 20
        self.tm.commit()
        self.job.failure_log_level = 10
        with self.assertRaises(ZODB.POSException.ConflictError):
            transaction.commit()

    def test_two_new_trees_conflict(self):
        self.job._p_activate()
        self.annotate_in_other()
        self.job.annotations['other'] = 1
        with self.assertRaises(ZODB.POSException.ConflictError):
            transaction.commit()

    def test_conflicts_without_annotations_still_conflict(self):
        # The conflict a callback added meanwhile relies on.
        self.job._p_activate()
        self.other_job.addCallback(Job(record))
        self.tm.commit()
        self.job.failure_log_level = 10
        with self.assertRaises(ZODB.POSException.ConflictError):
            transaction.commit()


class MergeTests(unittest.TestCase):
    """The merge rule on plain states."""

    def merge(self, old, committed, new):
        return _jobparts._merge_created_annotations(old, committed, new)

    def test_merges(self):
        old = {'a': 1}
        self.assertEqual(self.merge(old, {'a': 1, '_annotations': 't'},
                                    {'a': 2}),
                         {'a': 2, '_annotations': 't'})
        self.assertEqual(self.merge(old, {'a': 2},
                                    {'a': 1, '_annotations': 't'}),
                         {'a': 2, '_annotations': 't'})

    def test_refuses(self):
        for old, committed, new in [
                ({'a': 1}, {'a': 2, '_annotations': 't'}, {'a': 3}),
                ({'a': 1, '_annotations': 't'}, {'a': 1}, {'a': 2}),
                ({'a': 1, 'annotations': 't'},
                 {'a': 1, 'annotations': 't', '_annotations': 'u'},
                 {'a': 2, 'annotations': 't'}),
                ({'a': 1}, {'a': 1, '_annotations': 't'},
                 {'a': 1, '_annotations': 'u'}),
                (({'a': 1}, None), {'a': 1, '_annotations': 't'}, {'a': 2}),
        ]:
            self.assertIsNone(self.merge(old, committed, new),
                              (old, committed, new))

    def test_globals_the_resolver_cannot_import_compare_by_name(self):
        # A ZEO server without the application reads its functions so.
        def state(**extra):
            return dict(f=ZODB.ConflictResolution.BadClass('app', 'f'),
                        **extra)
        new = state(a=1)
        self.assertEqual(
            self.merge(state(), state(_annotations='t'), new),
            dict(new, _annotations='t'))
        other = dict(f=ZODB.ConflictResolution.BadClass('app', 'g'),
                     _annotations='t')
        self.assertIsNone(self.merge(state(), other, state(a=1)))

    def test_unpicklable_values_are_not_taken_as_equal(self):
        self.assertIsNone(self.merge(
            {'a': lambda: 1}, {'a': lambda: 1, '_annotations': 't'},
            {'a': 2}))
