"""Tests of zc.async.utils: clock, keys, retry loops and containers."""
import datetime
import itertools
import logging
import shutil
import tempfile
import unittest
import unittest.mock

import persistent
import transaction
import ZEO.Exceptions
import ZODB
import ZODB.FileStorage
import ZODB.MappingStorage
import ZODB.POSException
import zope.interface.verify
import zope.minmax

from zc.asynchronous import clock
from zc.asynchronous import txn
import zc.asynchronous.interfaces as interfaces
import zc.asynchronous.twist as twist
import zc.asynchronous.utils as utils

UTC = datetime.timezone.utc
T0 = datetime.datetime(2006, 8, 10, 15, 44, 22, 211, UTC)


class Item(persistent.Persistent):
    parent = name = key = None


def make_db(test):
    db = ZODB.DB(ZODB.MappingStorage.MappingStorage())
    test.addCleanup(db.close)
    return db


def open_conn(test, db):
    """A connection with its own transaction manager, closed at cleanup."""
    tm = transaction.TransactionManager()
    conn = db.open(transaction_manager=tm)

    def close():
        tm.abort()
        conn.close()
    test.addCleanup(close)
    return conn, tm


class FrozenClock:
    """Mixin: freeze utils.now at T0 for the test."""

    def setUp(self):
        clock._set_frozen_now(T0)
        self.addCleanup(clock._set_frozen_now, None)

    def advance(self, **kw):
        clock._set_frozen_now(utils.now() + datetime.timedelta(**kw))


class ClockTests(unittest.TestCase):

    def tearDown(self):
        clock._set_frozen_now(None)

    def test_now_is_aware_utc_and_moves(self):
        before = datetime.datetime.now(UTC)
        value = utils.now()
        self.assertIs(value.tzinfo, UTC)
        self.assertLessEqual(before, value)

    def test_frozen_now_stays_until_unfrozen(self):
        clock._set_frozen_now(T0)
        self.assertEqual(utils.now(), T0)
        self.assertEqual(utils.now(), T0)
        clock._set_frozen_now(None)
        self.assertGreater(utils.now(), T0)

    def test_frozen_now_takes_naive_as_utc_and_converts_zones(self):
        clock._set_frozen_now(T0.replace(tzinfo=None))
        self.assertEqual(utils.now(), T0)
        self.assertIs(utils.now().tzinfo, UTC)
        plus2 = datetime.timezone(datetime.timedelta(hours=2))
        clock._set_frozen_now(T0.astimezone(plus2))
        self.assertEqual(utils.now().hour, 15)
        self.assertIs(utils.now().tzinfo, UTC)

    def test_frozen_now_refuses_non_datetimes(self):
        with self.assertRaisesRegex(TypeError, "dt must be a datetime"):
            clock._set_frozen_now('2006-08-10')


class KeyTests(unittest.TestCase):

    def test_full_datetime_range_round_trips_as_64_bit_ints(self):
        for dt in (datetime.datetime.min, datetime.datetime.max, T0):
            key = utils.dt_to_long(dt)
            self.assertIs(type(key), int)
            self.assertTrue(0 <= key < 2 ** 63)
            self.assertEqual(utils.long_to_dt(key),
                             dt.replace(tzinfo=UTC))

    def test_newer_is_smaller_and_low_bits_are_free(self):
        older = utils.dt_to_long(T0)
        newer = utils.dt_to_long(T0 + datetime.timedelta(microseconds=1))
        self.assertLess(newer, older)
        self.assertEqual(older & 15, 0)
        self.assertEqual(older - newer, 16)
        self.assertEqual(utils.long_to_dt(older + 15), T0)

    def test_naive_aware_and_other_zones_agree(self):
        plus2 = datetime.timezone(datetime.timedelta(hours=2))
        key = utils.dt_to_long(T0)
        self.assertEqual(utils.dt_to_long(T0.replace(tzinfo=None)), key)
        self.assertEqual(utils.dt_to_long(T0.astimezone(plus2)), key)
        self.assertIs(utils.long_to_dt(key).tzinfo, UTC)

    def test_non_datetime_is_refused(self):
        with self.assertRaisesRegex(TypeError, 'dt must be a datetime'):
            utils.dt_to_long(12)


def sample_function():
    pass


class CustomReprTests(unittest.TestCase):

    def test_persistent_unsaved_then_stored(self):
        item = Item()
        self.assertEqual(utils.custom_repr(item),
                         '%s.Item (oid ?, db ?)' % __name__)
        db = make_db(self)
        conn, tm = open_conn(self, db)
        conn.root()['item'] = item
        tm.commit()
        self.assertEqual(utils.custom_repr(item),
                         "%s.Item (oid 1, db 'unnamed')" % __name__)

    def test_functions_builtins_and_others(self):
        self.assertEqual(utils.custom_repr(sample_function),
                         __name__ + '.sample_function')
        self.assertEqual(utils.custom_repr(len), 'builtins.len')
        self.assertEqual(utils.custom_repr([1, 'a']), "[1, 'a']")


class IterationTests(unittest.TestCase):

    def test_sortedmerge_merges_lazily(self):
        evens = itertools.count(0, 2)  # endless: only a lazy merge returns
        odds = iter([1, 3, 5])
        merged = utils.sortedmerge([evens, odds])
        self.assertEqual(list(itertools.islice(merged, 8)),
                         [0, 1, 2, 3, 4, 5, 6, 8])

    def test_sortedmerge_with_key(self):
        merged = utils.sortedmerge([['b', 'ccc'], ['aa', 'dddd']], key=len)
        self.assertEqual(list(merged), ['b', 'aa', 'ccc', 'dddd'])

    def test_takecount(self):
        self.assertEqual(list(utils.takecount(itertools.count(), 3)),
                         [0, 1, 2])
        self.assertEqual(list(utils.takecount([1, 2], 5)), [1, 2])
        self.assertEqual(list(utils.takecount([1, 2], 0)), [])
        with self.assertRaisesRegex(ValueError, 'count must be zero or more'):
            utils.takecount([1], -1)


class RetryTestBase(unittest.TestCase):
    """A real database; sleeps recorded instead of slept."""

    def setUp(self):
        self.db = make_db(self)
        self.conn, self.tm = open_conn(self, self.db)
        self.root = self.conn.root()
        self.root['count'] = 0
        self.tm.commit()
        sleeper = unittest.mock.patch.object(txn, '_sleep')
        self.sleep = sleeper.start()
        self.addCleanup(sleeper.stop)

    def failing(self, errors, result='done'):
        """A call that raises each of ``errors`` in turn, then succeeds.

        Every attempt increments root['count'] first, so an abort shows.
        """
        errors = list(errors)

        def call():
            self.root['count'] += 1
            if errors:
                raise errors.pop(0)
            return result
        return call

    def stored_count(self):
        conn, tm = open_conn(self, self.db)
        return conn.root()['count']

    def sleeps(self):
        return [c.args[0] for c in self.sleep.call_args_list]


class NeverFailTests(RetryTestBase):

    def test_success_commits_and_returns(self):
        res = utils.never_fail(self.failing([]), 'counting', self.tm)
        self.assertEqual(res, 'done')
        self.assertEqual(self.stored_count(), 1)

    def test_real_conflict_is_retried_against_fresh_state(self):
        db = self.db

        def call():
            # The first attempt races a commit of another connection.
            self.root['count'] += 1
            if self.root['count'] == 1:
                other, tm = open_conn(self, db)
                other.root()['count'] = 100
                tm.commit()
            return self.root['count']
        self.assertEqual(utils.never_fail(call, 'racing', self.tm), 101)
        self.assertEqual(self.stored_count(), 101)
        self.assertEqual(self.sleeps(), [])

    def test_conflicts_warn_every_fifth_time(self):
        conflicts = [ZODB.POSException.ConflictError()] * 11
        with self.assertLogs('zc.async.events', logging.WARNING) as logs:
            utils.never_fail(self.failing(conflicts), 'counting', self.tm)
        self.assertEqual([r.getMessage() for r in logs.records], [
            '5 consecutive transaction errors while counting',
            '10 consecutive transaction errors while counting'])
        self.assertEqual(self.stored_count(), 1)  # 11 aborts, one commit

    def test_other_errors_back_off_and_log_first_and_every_tenth(self):
        errors = [ValueError('bad')] * 13
        with self.assertLogs('zc.async.events', logging.WARNING) as logs:
            utils.never_fail(self.failing(errors), 'counting', self.tm)
        self.assertEqual(self.sleeps(),
                         [5, 10, 15, 20, 25, 30, 35, 40, 45, 50, 55, 60, 60])
        self.assertEqual([(r.levelname, r.getMessage()) for r in logs.records],
                         [('CRITICAL', 'first error while counting; will '
                           'continue in 5 seconds'),
                          ('CRITICAL', '10 consecutive errors while counting;'
                           ' will continue in 50 seconds')])
        self.assertEqual(self.stored_count(), 1)

    def test_system_errors_log_at_error(self):
        errors = [ZEO.Exceptions.ClientDisconnected(),
                  ZODB.POSException.POSKeyError(b'\0' * 8)]
        with self.assertLogs('zc.async.events', logging.WARNING) as logs:
            utils.never_fail(self.failing(errors), 'counting', self.tm)
        self.assertEqual(self.sleeps(), [5, 10])
        self.assertEqual([r.levelname for r in logs.records], ['ERROR'])

    def test_explosive_errors_abort_and_propagate(self):
        for error in (interfaces.ReassignedError('moved'), SystemExit(1),
                      KeyboardInterrupt()):
            with self.assertRaises(type(error)):
                utils.never_fail(self.failing([error]), 'counting', self.tm)
            self.assertEqual(self.root['count'], 0)  # aborted
        self.assertEqual(self.sleeps(), [])


class WaitForSystemRecoveryTests(RetryTestBase):

    def test_system_errors_are_waited_out(self):
        errors = [ZEO.Exceptions.ClientDisconnected()] * 2
        res = utils.wait_for_system_recovery(
            self.failing(errors), 'counting', self.tm)
        self.assertEqual(res, 'done')
        self.assertEqual(self.sleeps(), [5, 10])

    def test_system_errors_are_logged_first_and_every_fifth(self):
        errors = [ZEO.Exceptions.ClientDisconnected()] * 10
        with self.assertLogs('zc.async.events', logging.ERROR) as logs:
            utils.wait_for_system_recovery(
                self.failing(errors), 'counting', self.tm)
        self.assertEqual(  # as in 1.5
            [record.getMessage() for record in logs.records],
            ['first error while counting; will continue in 5 seconds',
             '5 consecutive errors while counting; will continue in 25 '
             'seconds',
             '10 consecutive errors while counting; will continue in 50 '
             'seconds'])

    def test_other_errors_are_returned_as_failures(self):
        with self.assertLogs('zc.async.events', logging.ERROR) as logs:
            res = utils.wait_for_system_recovery(
                self.failing([ValueError('bad')]), 'counting', self.tm)
        self.assertIsInstance(res, twist.Failure)
        self.assertTrue(res.check(ValueError))
        self.assertEqual(logs.records[0].getMessage(),
                         'Error while counting')
        self.assertEqual(self.root['count'], 0)  # aborted
        self.assertEqual(self.sleeps(), [])


class TryFiveTimesTests(RetryTestBase):

    def test_four_conflicts_then_success(self):
        conflicts = [ZODB.POSException.ConflictError()] * 4
        res = utils.try_five_times(
            self.failing(conflicts), 'counting', self.tm)
        self.assertEqual(res, 'done')
        self.assertEqual(self.stored_count(), 1)

    def test_fifth_conflict_is_a_critical_failure(self):
        conflicts = [ZODB.POSException.ConflictError()] * 5
        with self.assertLogs('zc.async.events', logging.CRITICAL) as logs:
            res = utils.try_five_times(
                self.failing(conflicts), 'counting', self.tm)
        self.assertTrue(res.check(ZODB.POSException.ConflictError))
        self.assertEqual(len(logs.records), 1)
        self.assertEqual(logs.records[0].getMessage(),  # 1.5's words
                         'Five consecutive transaction errors while counting')
        self.assertEqual(self.stored_count(), 0)

    def test_other_and_system_errors_fail_at_once(self):
        for error in (ValueError('bad'), ZEO.Exceptions.ClientDisconnected()):
            with self.assertLogs('zc.async.events', logging.CRITICAL):
                res = utils.try_five_times(
                    self.failing([error]), 'counting', self.tm)
            self.assertTrue(res.check(type(error)))
        self.assertEqual(self.sleeps(), [])

    def test_without_commit_changes_stay_pending(self):
        res = utils.try_five_times(self.failing([]), 'counting', self.tm,
                                   commit=False)
        self.assertEqual(res, 'done')
        self.assertEqual(self.root['count'], 1)
        self.assertEqual(self.stored_count(), 0)

    def test_explosive_errors_propagate(self):
        with self.assertRaises(interfaces.ReassignedError):
            utils.try_five_times(
                self.failing([interfaces.ReassignedError()]), 'x', self.tm)


class BaseTests(unittest.TestCase):

    def test_dunder_parent_follows_parent_unless_set(self):
        obj, parent, other = utils.Base(), object(), object()
        self.assertIsNone(obj.__parent__)
        obj.parent = parent
        self.assertIs(obj.__parent__, parent)
        obj.__parent__ = other
        self.assertIs(obj.__parent__, other)
        self.assertIs(obj.parent, parent)


class DictTests(unittest.TestCase):

    def test_values_know_their_name_and_parent(self):
        d = utils.Dict()
        a = Item()
        d['a'] = a
        self.assertEqual((a.name, a.parent), ('a', d))
        self.assertEqual(len(d), 1)
        self.assertIs(d.pop('a'), a)
        self.assertEqual((a.name, a.parent), (None, None))
        self.assertEqual(len(d), 0)

    def test_mapping_api(self):
        a, b = Item(), Item()
        d = utils.Dict({'a': a}, b=b)
        self.assertEqual(list(d), ['a', 'b'])
        self.assertEqual(list(d.keys()), ['a', 'b'])
        self.assertEqual(list(d.values()), [a, b])
        self.assertEqual(list(d.items()), [('a', a), ('b', b)])
        self.assertIs(d['b'], b)
        self.assertIs(d.get('b'), b)
        self.assertIsNone(d.get('c'))
        self.assertIn('a', d)
        self.assertNotIn('c', d)
        d['a'] = a  # replacing does not change the length
        self.assertEqual(len(d), 2)
        del d['a']
        self.assertEqual(list(d), ['b'])
        self.assertIsNone(a.parent)
        self.assertEqual(d.pop('zzz', 'gone'), 'gone')
        with self.assertRaises(KeyError):
            d.pop('zzz')
        with self.assertRaises(KeyError):
            del d['zzz']

    def test_copy_is_refused(self):
        with self.assertRaisesRegex(TypeError, 'Dict cannot be copied'):
            utils.Dict().copy()

    def test_persists(self):
        db = make_db(self)
        conn, tm = open_conn(self, db)
        d = conn.root()['d'] = utils.Dict()
        d['a'] = Item()
        tm.commit()
        other, _ = open_conn(self, db)
        loaded = other.root()['d']
        self.assertEqual(len(loaded), 1)
        self.assertIs(loaded['a'].parent, loaded)
        self.assertEqual(loaded['a'].name, 'a')

    def test_simple_wrapper_forwards_to_data(self):
        class Wrapped:
            keys = utils.simpleWrapper('keys')

            def __init__(self):
                self._data = {'x': 1}
        self.assertEqual(list(Wrapped().keys()), ['x'])
        self.assertEqual(Wrapped.keys.__name__, 'keys')


class RollingSetTests(FrozenClock, unittest.TestCase):

    def test_keeps_size_newest_items_newest_first(self):
        s = utils.RollingSet()
        s.size = 3
        items = [Item() for _ in range(5)]
        for item in items:
            s.add(item)
            self.advance(seconds=1)
        self.assertEqual(list(s), items[:1:-1])
        self.assertEqual(len(s), 3)
        self.assertEqual(utils.long_to_dt(items[4].key),
                         T0 + datetime.timedelta(seconds=4))

    def test_add_sets_parent_from_argument_or_set(self):
        s = utils.RollingSet()
        owner = object()
        s.parent = owner
        first, second = Item(), Item()
        s.add(first)
        s.add(second, parent='explicit')
        self.assertIs(first.parent, owner)
        self.assertEqual(second.parent, 'explicit')


class PeriodicTests(FrozenClock, unittest.TestCase):

    def fill(self, collection, count, step=datetime.timedelta(hours=1)):
        items = []
        for _ in range(count):
            items.append(Item())
            collection.add(items[-1])
            clock._set_frozen_now(utils.now() + step)
        return items

    def test_interface(self):
        zope.interface.verify.verifyObject(
            interfaces.ICompletedCollection, utils.Periodic())

    def test_add_keys_by_completion_time_and_sets_parent(self):
        p = utils.Periodic()
        agent = object()
        p.parent = agent
        item = Item()
        p.add(item)
        self.assertEqual(utils.long_to_dt(item.key), T0)
        self.assertIs(item.parent, agent)
        self.assertEqual(len(p), 1)
        self.assertTrue(p)

    def test_same_instant_additions_keep_order(self):
        p = utils.Periodic()
        items = [Item() for _ in range(20)]
        for item in items:
            p.add(item)
        self.assertEqual(list(p), items[::-1])
        self.assertEqual(len({item.key for item in items}), 20)

    def test_iter_first_and_last_by_datetime(self):
        p = utils.Periodic()
        items = self.fill(p, 5)  # at T0, T0+1h, ... T0+4h
        hour = datetime.timedelta(hours=1)
        self.assertEqual(list(p), items[::-1])
        self.assertEqual(list(p.iter(T0 + 3 * hour, T0 + hour)),
                         [items[3], items[2], items[1]])
        self.assertEqual(list(p.iter(stop=T0 + 3 * hour)),
                         [items[4], items[3]])
        self.assertIs(p.first(), items[4])
        self.assertIs(p.first(T0 + 2.5 * hour), items[2])
        self.assertIs(p.last(), items[0])
        self.assertIs(p.last(T0 + 2.5 * hour), items[3])
        with self.assertRaises(ValueError):
            p.first(T0 - hour)
        with self.assertRaises(ValueError):
            p.last(T0 + 5 * hour)

    def test_empty(self):
        p = utils.Periodic()
        self.assertFalse(p)
        self.assertEqual(len(p), 0)
        self.assertEqual(list(p), [])
        with self.assertRaises(ValueError):
            p.first()
        with self.assertRaises(ValueError):
            p.last()

    def test_rotation_keeps_at_least_the_period(self):
        # 7 days in 7 buckets: a rotation every 28 hours, so an item is
        # dropped between 7 days and 7 days + 28 hours after its addition.
        p = utils.Periodic()
        hour = datetime.timedelta(hours=1)
        items = self.fill(p, 7 * 24 + 1, step=hour)
        self.assertEqual(len(p), len(items))
        self.assertIs(p.last(), items[0])
        items += self.fill(p, 28, step=hour)
        self.assertNotIn(items[0], list(p))
        self.assertEqual(list(p)[:7 * 24 + 1], items[:-7 * 24 - 2:-1])
        self.assertEqual(len(p), len(list(p)))
        self.advance(days=30)
        self.fill(p, 1)
        self.assertEqual(len(p), 1)

    def test_clear(self):
        p = utils.Periodic()
        self.fill(p, 3)
        p.clear()
        self.assertEqual((len(p), list(p)), (0, []))

    def test_bad_arguments(self):
        with self.assertRaisesRegex(ValueError, 'buckets must be at least 2'):
            utils.Periodic(buckets=1)
        with self.assertRaisesRegex(ValueError, 'period must be positive'):
            utils.Periodic(period=datetime.timedelta(0))

    def test_concurrent_adds_do_not_conflict(self):
        # MappingStorage does not resolve conflicts; FileStorage does.
        tmp = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, tmp)
        db = ZODB.DB(ZODB.FileStorage.FileStorage(tmp + '/Data.fs'))
        self.addCleanup(db.close)
        conn1, tm1 = open_conn(self, db)
        p = conn1.root()['p'] = utils.Periodic()
        p.add(Item())
        tm1.commit()
        conn2, tm2 = open_conn(self, db)
        self.advance(seconds=1)
        p.add(Item())
        self.advance(seconds=1)
        conn2.root()['p'].add(Item())
        tm2.commit()
        tm1.commit()  # resolved by the BTree and the Length
        conn3, tm3 = open_conn(self, db)
        self.assertEqual(len(conn3.root()['p']), 3)
        self.assertEqual(len(list(conn3.root()['p'])), 3)


class RollingMappingTests(unittest.TestCase):

    def test_size_cap_drops_oldest_insertions(self):
        m = utils.RollingMapping()
        m.size = 3
        for key in 'dbeac':
            m[key] = key.upper()
        self.assertEqual(list(m.items()), [('e', 'E'), ('a', 'A'), ('c', 'C')])

    def test_min_and_max_keys(self):
        m = utils.RollingMapping()
        for key in (5, 1, 9):
            m[key] = None
        self.assertEqual((m.minKey(), m.maxKey()), (1, 9))
        self.assertEqual((m.minKey(2), m.maxKey(8)), (5, 5))
        with self.assertRaises(ValueError):
            m.minKey(10)
        with self.assertRaises(ValueError):
            utils.RollingMapping().maxKey()


class ConstantsTests(unittest.TestCase):

    def test_values(self):
        self.assertEqual((utils.INITIAL_BACKOFF, utils.BACKOFF_INCREMENT,
                          utils.MAX_BACKOFF), (5, 5, 60))
        self.assertIn(interfaces.ReassignedError, utils.EXPLOSIVE_ERRORS)
        self.assertIn(ZEO.Exceptions.ClientDisconnected, utils.SYSTEM_ERRORS)
        self.assertIs(utils.Atom, zope.minmax.Maximum)
        self.assertEqual(utils.log.name, 'zc.async.events')
        self.assertEqual(utils.tracelog.name, 'zc.async.trace')
