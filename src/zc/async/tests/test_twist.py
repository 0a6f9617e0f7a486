"""Tests of zc.async.twist: storable failures, connections, reactor calls."""
import io
import pickle
import shutil
import tempfile
import threading
import unittest
import unittest.mock

import BTrees.OOBTree
import persistent
import persistent.mapping
import transaction
import twisted.internet.defer
import twisted.internet.task
import twisted.python.failure
import ZEO.Exceptions
import ZODB
import ZODB.FileStorage
import ZODB.MappingStorage
import ZODB.POSException

from zc.asynchronous import txn
import zc.asynchronous.interfaces as interfaces
import zc.asynchronous.twist as twist
import zc.asynchronous.utils as utils


class CustomError(Exception):
    """An exception whose constructor needs two arguments."""

    def __init__(self, code, detail):
        super().__init__('%s: %s' % (code, detail))


class Holder(persistent.Persistent):
    """A stored object with a method that a Partial can call."""

    def __init__(self):
        self.calls = []

    def record(self, value):
        self.calls.append(value)
        self._p_changed = True
        return len(self.calls)


def fail_deep(argument):
    long_local = 'x' * 100
    short_local = 42
    raise ZeroDivisionError('deep %s' % (argument,))


def caught(call, *args):
    """The zc.async Failure made in the ``except`` block of ``call(*args)``."""
    try:
        call(*args)
    except Exception:
        return twist.Failure()
    raise AssertionError('no error')


def open_conn(test, db):
    tm = transaction.TransactionManager()
    conn = db.open(transaction_manager=tm)

    def close():
        tm.abort()
        conn.close()
    test.addCleanup(close)
    return conn, tm


class FileStorageTest(unittest.TestCase):
    """A FileStorage database in a temporary directory, reopenable."""

    def setUp(self):
        self.dir = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.dir)
        self.db = self.open_db()
        self.addCleanup(lambda: self.db.close())  # the latest one

    def open_db(self):
        return ZODB.DB(ZODB.FileStorage.FileStorage(self.dir + '/Data.fs'))

    def round_trip(self, failure):
        """``failure`` as loaded from the FileStorage by a new database."""
        tm = transaction.TransactionManager()
        conn = self.db.open(transaction_manager=tm)
        conn.root()['failure'] = persistent.mapping.PersistentMapping(
            failure=failure)
        tm.commit()
        conn.close()
        self.db.close()
        self.db = self.open_db()
        conn, tm = open_conn(self, self.db)
        return conn.root()['failure']['failure']


class FailureTests(FileStorageTest):

    def test_captures_the_current_exception_sanitized(self):
        failure = caught(fail_deep, 'arg')
        self.assertIs(failure.type, ZeroDivisionError)
        self.assertEqual(failure.getErrorMessage(), 'deep arg')
        self.assertTrue(failure.sanitized)
        self.assertIsNone(failure.tb)
        self.assertIsNone(failure.value.__traceback__)
        self.assertEqual(failure.stack, [])
        name, filename, lineno, localz, globalz = failure.frames[-1]
        self.assertEqual((name, filename), ('fail_deep', __file__))
        self.assertEqual(dict(localz), {
            'argument': "'arg'", 'short_local': '42',
            'long_local': "'xxxxxxxxxxxxxxxxxxxx[...]"})
        self.assertEqual(globalz, [])
        self.assertEqual(failure.frames[0][0], 'caught')

    def test_check_and_trap(self):
        failure = caught(fail_deep, 1)
        self.assertIs(failure.check(KeyError, ArithmeticError),
                      ArithmeticError)
        self.assertIsNone(failure.check(KeyError))
        self.assertIs(failure.trap(ZeroDivisionError), ZeroDivisionError)
        with self.assertRaises(ZeroDivisionError):
            failure.trap(KeyError)

    def test_explicit_exception_value(self):
        failure = twist.Failure(ValueError('given'))
        self.assertTrue(failure.check(ValueError))
        self.assertEqual(failure.frames, [])
        self.assertTrue(failure.getTraceback().startswith(
            'Traceback (most recent call last):'))

    def test_repr_names_the_class(self):
        self.assertEqual(repr(twist.Failure(ValueError('v'))),
                         '<zc.async.twist.Failure builtins.ValueError: v>')

    def test_round_trip_through_filestorage(self):
        original = caught(fail_deep, 'stored')
        loaded = self.round_trip(original)
        self.assertIsInstance(loaded, twist.Failure)
        self.assertIs(loaded.type, ZeroDivisionError)
        self.assertIsInstance(loaded.value, ZeroDivisionError)
        self.assertEqual(loaded.getErrorMessage(), 'deep stored')
        self.assertTrue(loaded.check(ArithmeticError))
        with self.assertRaises(ZeroDivisionError):
            loaded.trap(KeyError)
        self.assertEqual(loaded.frames, original.frames)
        self.assertEqual(loaded.getTraceback(), original.getTraceback())

    def test_tracebacks_after_loading(self):
        loaded = self.round_trip(caught(fail_deep, 'shown'))
        text = loaded.getTraceback()
        self.assertTrue(text.startswith('Traceback (most recent call last):'))
        self.assertIn("raise ZeroDivisionError('deep %s' % (argument,))",
                      text)
        self.assertTrue(text.endswith(
            'builtins.ZeroDivisionError: deep shown\n'))
        verbose = loaded.getTraceback(detail='verbose')
        self.assertTrue(verbose.startswith(
            '*--- Failure #%d (pickled) ---\n' % loaded.count))
        self.assertIn(' [ Locals ]\n  argument : \'shown\'\n', verbose)
        self.assertIn(' ( Globals )\n', verbose)
        self.assertTrue(verbose.endswith(
            '*--- End of Failure #%d ---\n' % loaded.count))
        brief = loaded.getBriefTraceback()
        self.assertTrue(brief.startswith('Traceback: '))
        self.assertIn('%s:' % __file__, brief)
        out = io.StringIO()
        loaded.printTraceback(out)
        self.assertEqual(out.getvalue(), text)

    def test_pickles_with_plain_pickle_as_its_own_class(self):
        failure = caught(fail_deep, 1)
        loaded = pickle.loads(pickle.dumps(failure))
        self.assertIs(type(loaded), twist.Failure)
        self.assertEqual(loaded.getErrorMessage(), 'deep 1')

    def test_value_that_cannot_be_unpickled_is_replaced(self):
        failure = twist.Failure(CustomError(404, 'missing'))
        self.assertIsInstance(failure.value, twist.UnpicklableError)
        self.assertIs(failure.type, CustomError)  # importable: kept
        self.assertEqual(failure.getErrorMessage(),
                         '%s.CustomError: 404: missing' % __name__)
        loaded = self.round_trip(failure)
        self.assertTrue(loaded.check(CustomError))
        self.assertTrue(loaded.check(Exception))

    def test_unimportable_type_and_live_objects_are_replaced(self):
        class LocalError(Exception):
            pass
        failure = twist.Failure(LocalError(threading.Lock()))
        self.assertIs(failure.type, twist.UnpicklableError)
        self.assertTrue(failure.check(LocalError))  # by its names
        self.assertIsInstance(self.round_trip(failure).value,
                              twist.UnpicklableError)

    def test_persistent_objects_in_the_value_are_replaced(self):
        failure = twist.Failure(ValueError(Holder()))
        self.assertIsInstance(failure.value, twist.UnpicklableError)
        self.assertTrue(failure.check(ValueError))

    def test_chained_tracebacks_are_forgotten(self):
        try:
            try:
                fail_deep(1)
            except ZeroDivisionError as e:
                raise KeyError('outer') from e
        except KeyError:
            failure = twist.Failure()
        self.assertIsNone(failure.value.__cause__.__traceback__)

    def test_deferred_errback_keeps_the_failure(self):
        failure = caught(fail_deep, 1)
        d = twisted.internet.defer.Deferred()
        d.errback(failure)  # Twisted calls cleanFailure on it
        results = []
        d.addErrback(results.append)
        self.assertIs(results[0], failure)
        self.assertEqual(results[0].frames, failure.frames)


class SanitizeTests(unittest.TestCase):

    def test_plain_twisted_failure_is_copied(self):
        try:
            fail_deep('plain')
        except ZeroDivisionError:
            plain = twisted.python.failure.Failure()
        failure = twist.sanitize(plain)
        self.assertIsInstance(failure, twist.Failure)
        self.assertIsNone(failure.tb)
        self.assertEqual(dict(failure.frames[-1][3])['argument'], "'plain'")
        self.assertEqual(failure.getErrorMessage(), 'deep plain')

    def test_pickled_twisted_failure_keeps_its_reprs(self):
        try:
            fail_deep('p')
        except ZeroDivisionError:
            plain = twisted.python.failure.Failure(captureVars=True)
        plain = pickle.loads(pickle.dumps(plain))
        localz = dict(twist.sanitize(plain).frames[-1][3])
        self.assertEqual(localz['argument'], "'p'")
        self.assertEqual(localz['long_local'], "'xxxxxxxxxxxxxxxxxxxx[...]")

    def test_sanitized_failure_is_returned_as_is(self):
        failure = twist.Failure(ValueError())
        self.assertIs(twist.sanitize(failure), failure)

    def test_refuses_non_failures(self):
        with self.assertRaisesRegex(TypeError, 'needs a Twisted Failure'):
            twist.sanitize(ValueError())


class ConnectionTests(unittest.TestCase):

    def setUp(self):
        self.db = ZODB.DB(ZODB.MappingStorage.MappingStorage())
        self.addCleanup(self.db.close)
        self.conn, self.tm = open_conn(self, self.db)

    def test_stored_object_and_its_children(self):
        stored = self.conn.root()['h'] = Holder()
        self.tm.commit()
        child = utils.Base()
        child.parent = stored
        self.assertIs(twist.connection(stored), self.conn)
        self.assertIs(twist.connection(child), self.conn)
        self.assertIs(twist.transactionManager(child), self.tm)

    def test_unattached_objects_use_the_thread_manager(self):
        self.assertIsNone(twist.connection(Holder()))
        self.assertIs(twist.transactionManager(Holder()), transaction.manager)

    def test_get_self(self):
        tree = BTrees.OOBTree.OOBTree()
        holder, d = Holder(), {}
        self.assertIs(txn.get_self(tree.__setitem__), tree)
        self.assertIs(txn.get_self(holder.record), holder)
        self.assertIs(txn.get_self(d.__setitem__), d)
        self.assertIsInstance(d.__setitem__, txn.METHOD_WRAPPER_TYPE)
        self.assertIsNone(txn.get_self(fail_deep))


class PartialTests(FileStorageTest):

    def setUp(self):
        super().setUp()
        self.conn, self.tm = open_conn(self, self.db)
        root = self.conn.root()
        self.holder = root['holder'] = Holder()
        self.tree = root['tree'] = BTrees.OOBTree.OOBTree()
        self.tm.commit()
        sleeper = unittest.mock.patch.object(txn, '_sleep')
        self.sleep = sleeper.start()
        self.addCleanup(sleeper.stop)

    def result_of(self, d):
        results = []
        d.addBoth(results.append)
        self.assertEqual(len(results), 1, 'the Deferred has not fired')
        return results[0]

    def fresh(self, name):
        """The committed state of root[name], in the test's connection."""
        self.tm.begin()
        return self.conn.root()[name]

    def test_bound_method_runs_in_its_own_connection_and_commits(self):
        partial = txn.Partial(self.holder.record)
        self.assertEqual(self.result_of(partial('first')), 1)
        self.assertEqual(self.holder.calls, [])  # not this connection's copy
        self.assertEqual(self.fresh('holder').calls, ['first'])
        self.assertEqual(partial.attempt_count, 1)

    def test_method_wrapper_and_persistent_arguments(self):
        seen = []

        def store(tree, key, value):
            seen.append(tree._p_jar)
            tree[key] = value
        self.result_of(txn.Partial(store, self.tree, 'k')('v'))
        self.assertIsNot(seen[0], self.conn)
        self.result_of(txn.Partial(self.tree.__setitem__, 'w', 'x')())
        self.assertEqual(dict(self.fresh('tree')), {'k': 'v', 'w': 'x'})

    def test_real_conflict_is_retried(self):
        db = self.db

        def record(holder, value):
            if partial.attempt_count == 1:
                # Another connection commits to the same object meanwhile.
                other, tm = open_conn(self, db)
                other.root()['holder'].record('other')
                tm.commit()
            return holder.record(value)
        partial = txn.Partial(record, self.holder)
        self.assertEqual(self.result_of(partial('mine')), 2)
        self.assertEqual(partial.attempt_count, 2)
        self.assertEqual(self.fresh('holder').calls, ['other', 'mine'])

    def test_too_many_conflicts_fail(self):
        def conflict(holder):
            raise ZODB.POSException.ConflictError()
        partial = txn.Partial(conflict, self.holder)
        partial.max_transaction_errors = 3
        result = self.result_of(partial())
        self.assertIsInstance(result, twist.Failure)
        self.assertTrue(result.check(ZODB.POSException.ConflictError))
        self.assertEqual(partial.attempt_count, 3)

    def test_other_errors_fail_and_abort(self):
        def bad(holder):
            holder.record('lost')
            raise ValueError('bad')
        result = self.result_of(txn.Partial(bad, self.holder)())
        self.assertTrue(result.check(ValueError))
        self.assertEqual(self.fresh('holder').calls, [])

    def test_disconnects_are_rescheduled_on_the_reactor(self):
        clock = twisted.internet.task.Clock()
        errors = [ZEO.Exceptions.ClientDisconnected()] * 2

        def flaky(holder):
            if errors:
                raise errors.pop()
            return holder.record('finally')
        partial = txn.Partial(flaky, self.holder)
        partial.setReactor(clock)
        results = []
        with self.assertLogs('zc.async.events') as logs:
            partial().addBoth(results.append)
        self.assertEqual(results, [])
        clock.advance(5)
        self.assertEqual(results, [])
        clock.advance(10)
        self.assertEqual(results, [1])
        self.assertEqual(partial.attempt_count, 3)
        self.assertEqual(logs.records[0].levelname, 'ERROR')
        self.assertEqual(self.sleep.call_count, 0)

    def test_disconnects_without_a_reactor_sleep(self):
        errors = [ZEO.Exceptions.ClientDisconnected()]

        def flaky(holder):
            if errors:
                raise errors.pop()
            return 'ok'
        with self.assertLogs('zc.async.events'):
            d = txn.Partial(flaky, self.holder)()
        self.assertEqual(self.result_of(d), 'ok')
        self.sleep.assert_called_once_with(5)

    def test_without_persistent_objects_just_calls(self):
        partial = txn.Partial(lambda *args, **kw: (args, kw), 1, a=2)
        self.assertEqual(self.result_of(partial(3, b=4)),
                         ((1, 3), {'a': 2, 'b': 4}))

    def test_deferred_results_are_chained(self):
        inner = twisted.internet.defer.Deferred()
        d = txn.Partial(lambda holder: inner, self.holder)()
        results = []
        d.addBoth(results.append)
        self.assertEqual(results, [])
        inner.callback('later')
        self.assertEqual(results, ['later'])

    def test_explosive_errors_propagate(self):
        def explode(holder):
            raise interfaces.ReassignedError()
        with self.assertRaises(interfaces.ReassignedError):
            txn.Partial(explode, self.holder)()

    def test_needs_a_callable(self):
        with self.assertRaisesRegex(TypeError, 'Partial needs a callable'):
            txn.Partial(42)
