"""Tests of zc.async.schedule: ticks, validation, firing, catching up.

Time is the frozen library clock (``zc.asynchronous.testing.set_now``);
the dispatcher tests drive a dispatcher with the virtual-time test reactor.
The real-process test (three worker processes on ZEO) is in
``test_schedule_processes``.
"""
import datetime
import threading
import unittest
import zoneinfo

import transaction
import zope.interface.verify
import zope.testing.loggingsupport
import ZODB
import ZODB.POSException

import zc.asynchronous.clock
import zc.asynchronous.interfaces as interfaces
import zc.asynchronous.job
import zc.asynchronous.queue
import zc.asynchronous.testing as testing
from zc.asynchronous import schedule
from zc.asynchronous.schedule import Schedule
from zc.asynchronous.tests.live import DispatcherTestCase, wait_until
from zc.asynchronous.tests.test_dispatcher import VirtualTimeTestCase

UTC = datetime.timezone.utc
BERLIN = zoneinfo.ZoneInfo('Europe/Berlin')
MINUTE = datetime.timedelta(minutes=1)
SECOND = datetime.timedelta(seconds=1)
T0 = datetime.datetime(2024, 1, 1, 12, 0, tzinfo=UTC)


def report():
    return 'tick'


def fail():
    raise ValueError('boom')


_gate = threading.Event()


def gated():
    _gate.wait(10)
    return 'done'


def ticks_after(sched, after, count):
    found = []
    for _ in range(count):
        after = sched.nextTick(after)
        found.append(after)
    return found


class ClockTestCase(unittest.TestCase):
    """The library clock frozen at ``T0``."""

    def setUp(self):
        testing.set_now(T0)
        self.addCleanup(zc.asynchronous.clock._set_frozen_now, None)

    def later(self, **delta):
        """Move the frozen clock by ``delta`` (timedelta arguments)."""
        testing.set_now(zc.asynchronous.utils.now()
                        + datetime.timedelta(**delta))


class InterfaceTests(ClockTestCase):

    def test_schedule_provides_its_interface(self):
        sched = Schedule(report, every=MINUTE)
        zope.interface.verify.verifyObject(interfaces.ISchedule, sched)

    def test_schedules_provides_its_interface(self):
        zope.interface.verify.verifyObject(
            interfaces.ISchedules, schedule.Schedules())


class EveryTests(ClockTestCase):

    def test_first_tick_is_one_interval_after_it_is_made(self):
        sched = Schedule(report, every=MINUTE)
        self.assertEqual(sched.next_run, T0 + MINUTE)
        self.assertEqual(ticks_after(sched, T0, 3),
                         [T0 + MINUTE, T0 + 2 * MINUTE, T0 + 3 * MINUTE])

    def test_start_aligns_the_ticks(self):
        start = T0 - datetime.timedelta(hours=5, minutes=30)
        sched = Schedule(report, every=datetime.timedelta(hours=1),
                         start=start)
        # Past ticks are not due: the first is the next aligned one.
        self.assertEqual(sched.next_run, T0 + datetime.timedelta(minutes=30))
        self.assertEqual(sched.lastTick(T0), T0 - datetime.timedelta(
            minutes=30))
        self.assertIsNone(sched.lastTick(start - SECOND))
        self.assertEqual(sched.nextTick(start - SECOND), start)

    def test_a_future_start_is_the_first_tick(self):
        start = (T0 + datetime.timedelta(days=2)).astimezone(BERLIN)
        sched = Schedule(report, every=datetime.timedelta(days=1),
                         start=start)
        self.assertEqual(sched.next_run, start)
        self.assertEqual(sched.next_run.tzinfo, UTC)

    def test_intervals_are_exact_across_daylight_saving_changes(self):
        start = datetime.datetime(2024, 3, 30, 12, 0, tzinfo=BERLIN)
        testing.set_now(start)
        sched = Schedule(report, every=datetime.timedelta(days=1),
                         start=start)
        day_after = sched.nextTick(start)
        self.assertEqual(day_after - start, datetime.timedelta(hours=24))
        self.assertEqual(day_after.astimezone(BERLIN).hour, 13)

    def test_rule_in_words(self):
        self.assertEqual(Schedule(report, every=MINUTE).rule,
                         'every 0:01:00')


class CronTests(ClockTestCase):

    def test_utc_by_default(self):
        sched = Schedule(report, cron='0 3 * * *')
        self.assertEqual(sched.next_run,
                         datetime.datetime(2024, 1, 2, 3, 0, tzinfo=UTC))
        self.assertEqual(sched.rule, "cron '0 3 * * *' in UTC")
        self.assertEqual(sched.lastTick(T0),
                         datetime.datetime(2024, 1, 1, 3, 0, tzinfo=UTC))

    def test_a_tick_at_the_moment_it_is_made_is_due(self):
        sched = Schedule(report, cron='0 12 * * *')
        self.assertEqual(sched.next_run, T0)

    def test_wall_clock_in_a_time_zone(self):
        sched = Schedule(report, cron='0 3 * * *', timezone='Europe/Berlin')
        self.assertEqual(sched.timezone, BERLIN)
        self.assertEqual(sched.rule, "cron '0 3 * * *' in Europe/Berlin")
        self.assertEqual(sched.next_run,
                         datetime.datetime(2024, 1, 2, 2, 0, tzinfo=UTC))
        summer = datetime.datetime(2024, 7, 1, tzinfo=UTC)
        self.assertEqual(sched.nextTick(summer),
                         datetime.datetime(2024, 7, 1, 1, 0, tzinfo=UTC))

    def test_a_tzinfo_and_a_fixed_offset(self):
        sched = Schedule(report, cron='0 3 * * *', timezone=BERLIN)
        self.assertEqual(sched.timezone, BERLIN)
        self.assertEqual(sched._zone, 'Europe/Berlin')  # ZODB stores names
        plus_two = datetime.timezone(datetime.timedelta(hours=2))
        sched = Schedule(report, cron='0 3 * * *', timezone=plus_two)
        self.assertEqual(sched.next_run,
                         datetime.datetime(2024, 1, 2, 1, 0, tzinfo=UTC))

    def test_seconds_field(self):
        sched = Schedule(report, cron='* * * * * */10')
        self.assertEqual(ticks_after(sched, T0, 2),
                         [T0 + 10 * SECOND, T0 + 20 * SECOND])

    def test_clocks_going_forward_fire_skipped_times_at_the_change(self):
        # Europe/Berlin, 2024-03-31: 02:00 CET became 03:00 CEST (01:00 UTC).
        daily = Schedule(report, cron='30 2 * * *', timezone=BERLIN)
        ticks = ticks_after(
            daily, datetime.datetime(2024, 3, 29, 12, 0, tzinfo=UTC), 3)
        self.assertEqual([t.astimezone(BERLIN).isoformat() for t in ticks], [
            '2024-03-30T02:30:00+01:00', '2024-03-31T03:00:00+02:00',
            '2024-04-01T02:30:00+02:00'])
        half_hourly = Schedule(report, cron='*/30 * * * *', timezone=BERLIN)
        ticks = ticks_after(
            half_hourly, datetime.datetime(2024, 3, 31, 0, 10, tzinfo=UTC), 4)
        self.assertEqual([t.astimezone(BERLIN).strftime('%H:%M%z')
                          for t in ticks],
                         ['01:30+0100', '03:00+0200', '03:30+0200',
                          '04:00+0200'])

    def test_clocks_going_back_fire_repeated_times_once(self):
        # 2024-10-27: 03:00 CEST became 02:00 CET (at 01:00 UTC).
        daily = Schedule(report, cron='30 2 * * *', timezone=BERLIN)
        ticks = ticks_after(
            daily, datetime.datetime(2024, 10, 26, 12, 0, tzinfo=UTC), 2)
        self.assertEqual([t.astimezone(BERLIN).isoformat() for t in ticks], [
            '2024-10-27T02:30:00+02:00', '2024-10-28T02:30:00+01:00'])
        hourly = Schedule(report, cron='0 * * * *', timezone=BERLIN)
        ticks = ticks_after(
            hourly, datetime.datetime(2024, 10, 26, 22, 30, tzinfo=UTC), 4)
        self.assertEqual([t.isoformat() for t in ticks], [
            '2024-10-26T23:00:00+00:00', '2024-10-27T00:00:00+00:00',
            '2024-10-27T02:00:00+00:00', '2024-10-27T03:00:00+00:00'])

    def test_last_and_next_tick_agree_around_changes(self):
        """For any instant t: lastTick(t) <= t < nextTick(t), and nothing
        ticks between them."""
        for cron in ('*/20 * * * *', '30 2 * * *', '0 * * * *'):
            sched = Schedule(report, cron=cron, timezone=BERLIN)
            for day in (datetime.datetime(2024, 3, 30, 22, 0, tzinfo=UTC),
                        datetime.datetime(2024, 10, 26, 22, 0, tzinfo=UTC)):
                for minutes in range(0, 6 * 60, 7):
                    t = day + datetime.timedelta(minutes=minutes)
                    last, following = sched.lastTick(t), sched.nextTick(t)
                    self.assertLessEqual(last, t, (cron, t))
                    self.assertGreater(following, t, (cron, t))
                    self.assertEqual(sched.nextTick(last), following,
                                     (cron, t))


class ValidationTests(ClockTestCase):

    def assertRefused(self, error, message, *args, **kwargs):
        with self.assertRaises(error) as raised:
            Schedule(*args, **kwargs)
        self.assertEqual(str(raised.exception), message)

    def test_exactly_one_rule(self):
        self.assertRefused(
            ValueError, 'give a schedule exactly one rule: cron=... or'
            ' every=... (got neither)', report)
        self.assertRefused(
            ValueError, 'give a schedule exactly one rule: cron=... or'
            ' every=... (got both)', report, cron='* * * * *', every=MINUTE)

    def test_bad_cron(self):
        self.assertRefused(
            ValueError, "invalid cron expression '61 * * * *': [61 * * * *]"
            " is not acceptable, out of range", report, cron='61 * * * *')
        self.assertRefused(
            ValueError, "cron expression '0 0 30 2 *' matches no date from"
            " now on", report, cron='0 0 30 2 *')
        self.assertRefused(TypeError, 'cron must be a cron expression'
                           ' string, not 5', report, cron=5)
        with self.assertRaises(ValueError) as raised:
            Schedule(report, cron='every day')
        self.assertIn("invalid cron expression 'every day'",
                      str(raised.exception))

    def test_bad_every(self):
        self.assertRefused(
            ValueError, 'every must be a positive interval, not'
            ' datetime.timedelta(0)', report, every=datetime.timedelta(0))
        self.assertRefused(
            ValueError, 'every must be a positive interval, not'
            ' datetime.timedelta(days=-1, seconds=86399)', report,
            every=-SECOND)
        self.assertRefused(TypeError, 'every must be a datetime.timedelta,'
                           ' not 60', report, every=60)
        self.assertRefused(
            ValueError, 'timezone applies to cron rules only:'
            ' every=datetime.timedelta(seconds=60) is an exact interval',
            report, every=MINUTE, timezone='UTC')

    def test_bad_timezone(self):
        self.assertRefused(
            ValueError, "unknown time zone 'Mars/Olympus' (give an IANA name"
            ' such as "Europe/Berlin", or a tzinfo)', report,
            cron='* * * * *', timezone='Mars/Olympus')
        self.assertRefused(
            TypeError, 'timezone must be a time zone name or a tzinfo, not 2',
            report, cron='* * * * *', timezone=2)

    def test_bad_catch_up_and_overlap(self):
        self.assertRefused(
            ValueError, "catch_up must be one of 'once', 'all', 'skip', not"
            " 'sometimes'", report, every=MINUTE, catch_up='sometimes')
        self.assertRefused(TypeError, 'overlap must be True or False, not'
                           " 'no'", report, every=MINUTE, overlap='no')

    def test_naive_datetimes(self):
        naive = datetime.datetime(2024, 1, 1)
        self.assertRefused(
            ValueError, 'cannot use timezone-naive values'
            ' (start=datetime.datetime(2024, 1, 1, 0, 0))', report,
            every=MINUTE, start=naive)
        sched = Schedule(report, every=MINUTE)
        for method in (sched.nextTick, sched.lastTick):
            with self.assertRaises(ValueError):
                method(naive)

    def test_unpicklable_or_uncallable(self):
        with self.assertRaises(TypeError) as raised:
            Schedule(lambda: None, every=MINUTE)
        self.assertIn('its callable cannot be pickled', str(raised.exception))
        with self.assertRaises(TypeError) as raised:
            Schedule(report, threading.Lock(), every=MINUTE)
        self.assertIn('its argument 0 cannot be pickled',
                      str(raised.exception))
        self.assertRefused(TypeError, 'a job needs a callable, not 42', 42,
                           every=MINUTE)

    def test_a_job_as_template(self):
        template = zc.asynchronous.job.Job(report)
        template.begin_by = MINUTE
        template.failure_log_level = 40
        sched = Schedule(template, every=MINUTE)
        self.assertIs(sched.job, template)
        job = sched.newJob()
        self.assertIsNot(job, template)
        self.assertEqual((job.callable, job.begin_by, job.failure_log_level),
                         (report, MINUTE, 40))
        with self.assertRaises(TypeError):
            Schedule(zc.asynchronous.job.Job(report), 1, every=MINUTE)
        with_callback = zc.asynchronous.job.Job(report)
        with_callback.addCallback(report)
        with self.assertRaises(ValueError) as raised:
            Schedule(with_callback, every=MINUTE)
        self.assertIn('not callbacks', str(raised.exception))


class QueueSchedulesTests(ClockTestCase):
    """``queue.schedules`` in a database."""

    def setUp(self):
        super().setUp()
        self.db = testing.db()  # resolves conflicts, as FileStorage does
        self.addCleanup(self.db.close)
        self.tm = transaction.TransactionManager()
        self.conn = self.db.open(self.tm)
        self.root = self.conn.root()
        self.root[interfaces.KEY] = zc.asynchronous.queue.Queues()
        self.queue = self.root[interfaces.KEY][''] = \
            zc.asynchronous.queue.Queue()
        self.tm.commit()
        self.log = zope.testing.loggingsupport.InstalledHandler(
            'zc.async.events')
        self.addCleanup(self.log.uninstall)

    def messages(self):
        return [record.getMessage() for record in self.log.records]

    def other_connection(self):
        tm = transaction.TransactionManager()
        conn = self.db.open(tm)
        self.addCleanup(conn.close)
        return tm, conn.root()[interfaces.KEY]['']

    def add(self, name, *args, **kwargs):
        sched = self.queue.schedules[name] = Schedule(*args, **kwargs)
        self.tm.commit()
        return sched

    def pending(self, queue=None):
        return list(queue if queue is not None else self.queue)

    def test_a_queue_has_no_schedules_until_they_are_used(self):
        self.assertIsNone(schedule.schedules_of(self.queue))
        self.assertIsNone(schedule.next_due(self.queue))
        self.assertIsNone(schedule.fire_due(self.queue))
        self.assertNotIn('_schedules', self.queue.__getstate__())
        self.assertEqual(len(self.queue.schedules), 0)
        self.assertIs(self.queue.schedules.__parent__, self.queue)

    def test_add_list_and_remove(self):
        sched = self.add('report', report, every=MINUTE)
        self.assertEqual((sched.name, list(self.queue.schedules)),
                         ('report', ['report']))
        self.assertEqual(self.queue.schedules.earliest, T0 + MINUTE)
        del self.queue.schedules['report']
        self.tm.commit()
        self.assertEqual((sched.name, sched.parent), (None, None))
        self.assertEqual(len(self.queue.schedules), 0)

    def test_stored_and_loaded_with_its_time_zone(self):
        self.add('nightly', report, 40, cron='0 3 * * *',
                 timezone='Europe/Berlin')
        tm2, queue2 = self.other_connection()
        loaded = queue2.schedules['nightly']
        self.assertEqual((loaded.timezone, loaded.rule, list(loaded.job.args)),
                         (BERLIN, "cron '0 3 * * *' in Europe/Berlin", [40]))
        self.assertEqual(loaded.next_run,
                         datetime.datetime(2024, 1, 2, 2, 0, tzinfo=UTC))

    def test_replacing_a_schedule(self):
        old = self.add('report', report, every=MINUTE)
        new = self.add('report', report, every=SECOND)
        self.assertIs(self.queue.schedules['report'], new)
        self.assertEqual(self.queue.schedules.earliest, T0 + SECOND)
        self.assertIsNone(old.parent)
        with self.assertRaises(ValueError):
            self.queue.schedules['again'] = new
        with self.assertRaises(TypeError):
            self.queue.schedules['x'] = report

    def test_nothing_due_changes_nothing(self):
        self.add('report', report, every=MINUTE)
        self.later(seconds=59)
        self.assertEqual(schedule.fire_due(self.queue), T0 + MINUTE)
        self.assertFalse(self.conn._registered_objects)
        self.assertEqual(self.pending(), [])

    def test_a_due_tick_puts_one_annotated_job(self):
        sched = self.add('report', report, every=MINUTE)
        self.later(minutes=1, seconds=2)
        self.assertEqual(schedule.fire_due(self.queue), T0 + 2 * MINUTE)
        self.tm.commit()
        [job] = self.pending()
        self.assertEqual(job.callable, report)
        self.assertEqual(dict(job.annotations), {
            schedule.SCHEDULE_KEY: 'report',
            schedule.TICK_KEY: T0 + MINUTE})
        self.assertEqual((sched.next_run, sched.last_run, sched.last_job),
                         (T0 + 2 * MINUTE, T0 + MINUTE, job))
        self.assertEqual(self.queue.schedules.earliest, T0 + 2 * MINUTE)
        # Fired: due again only at the next tick.
        self.assertEqual(schedule.fire_due(self.queue), T0 + 2 * MINUTE)
        self.assertEqual(len(self.pending()), 1)

    def down_for_ten_minutes(self, catch_up):
        sched = self.add('report', report, every=MINUTE, catch_up=catch_up)
        sched.grace = datetime.timedelta(seconds=10)  # for 'skip'
        self.later(minutes=10, seconds=30)  # ticks 1 to 10 are due
        self.log.clear()
        schedule.fire_due(self.queue)
        self.tm.commit()
        self.assertEqual(sched.next_run, T0 + 11 * MINUTE)
        return sched, self.messages()

    def ticks(self):
        return [job.annotations[schedule.TICK_KEY] for job in self.pending()]

    def test_catch_up_once(self):
        sched, messages = self.down_for_ten_minutes('once')
        [job] = self.pending()
        self.assertEqual(job.annotations[schedule.TICK_KEY], T0 + 10 * MINUTE)
        self.assertEqual(job.annotations[schedule.SINCE_KEY], T0 + MINUTE)
        self.assertEqual(messages, [
            "schedule 'report' of queue '' missed its ticks from"
            " 2024-01-01 12:01:00+00:00 to 2024-01-01 12:10:00+00:00"
            " (catch_up='once', 1 job(s) put)"])

    def test_catch_up_all(self):
        self.down_for_ten_minutes('all')
        self.assertEqual(self.ticks(),
                         [T0 + n * MINUTE for n in range(1, 11)])
        self.assertNotIn(schedule.SINCE_KEY, self.pending()[0].annotations)

    def test_catch_up_all_is_bounded(self):
        sched = self.add('report', report, every=SECOND, catch_up='all')
        sched.max_catch_up = 5
        self.later(minutes=1)
        self.log.clear()
        schedule.fire_due(self.queue)
        self.assertEqual(self.ticks(),
                         [T0 + n * SECOND for n in range(56, 61)])
        self.assertEqual(self.messages(), [
            "schedule 'report' of queue '' missed its ticks from"
            " 2024-01-01 12:00:01+00:00 to 2024-01-01 12:00:55+00:00"
            " (catch_up='all', 5 job(s) put)"])

    def test_catch_up_skip(self):
        sched, messages = self.down_for_ten_minutes('skip')
        self.assertEqual(self.pending(), [])
        self.assertIsNone(sched.last_run)
        self.assertEqual(messages, [
            "schedule 'report' of queue '' missed its ticks from"
            " 2024-01-01 12:01:00+00:00 to 2024-01-01 12:10:00+00:00"
            " (catch_up='skip', 0 job(s) put)"])

    def test_skip_still_fires_a_tick_within_its_grace(self):
        self.add('report', report, every=MINUTE, catch_up='skip')
        self.later(minutes=1, seconds=50)
        schedule.fire_due(self.queue)
        self.assertEqual(self.ticks(), [T0 + MINUTE])
        self.later(minutes=3)  # ticks 2 to 4 due, 4 only 50 s late
        schedule.fire_due(self.queue)
        self.assertEqual(self.ticks(), [T0 + MINUTE, T0 + 4 * MINUTE])

    def test_no_overlap_skips_ticks_while_the_last_job_runs(self):
        sched = self.add('report', report, every=MINUTE, overlap=False)
        self.later(minutes=1)
        schedule.fire_due(self.queue)
        self.tm.commit()
        self.later(minutes=1)
        schedule.fire_due(self.queue)  # the first job is still pending
        self.assertEqual(self.ticks(), [T0 + MINUTE])
        self.assertEqual(sched.next_run, T0 + 3 * MINUTE)
        job = self.queue.claim()
        job()  # runs and completes
        self.tm.commit()
        self.later(minutes=1)
        schedule.fire_due(self.queue)
        self.assertEqual(self.ticks(), [T0 + 3 * MINUTE])

    def test_no_overlap_ignores_a_job_removed_from_the_queue(self):
        self.add('report', report, every=MINUTE, overlap=False)
        self.later(minutes=1)
        schedule.fire_due(self.queue)
        self.queue.remove(self.pending()[0])
        self.later(minutes=1)
        schedule.fire_due(self.queue)
        self.assertEqual(self.ticks(), [T0 + 2 * MINUTE])

    def test_a_schedule_that_cannot_fire_does_not_stop_the_others(self):
        self.queue.quotas.create('q', size=1)
        template = zc.asynchronous.job.Job(report)
        template.quota_names = ('q',)
        self.queue.schedules['broken'] = Schedule(template, every=MINUTE)
        self.add('report', report, every=MINUTE, catch_up='all')
        self.queue.quotas.remove('q')
        self.tm.commit()
        self.later(minutes=2)
        self.log.clear()
        earliest = schedule.fire_due(self.queue)
        self.tm.commit()
        self.assertEqual(self.ticks(), [T0 + MINUTE, T0 + 2 * MINUTE])
        self.assertEqual(earliest, T0 + MINUTE)  # broken is still due
        self.assertNotIn(self.queue.schedules._earliest,
                         self.conn._registered_objects)
        self.assertEqual(self.queue.schedules['broken'].next_run, T0 + MINUTE)
        self.assertEqual(self.messages(),
                         ["cannot fire schedule 'broken' of queue ''"])
        self.assertIn('unknown quota name',
                      str(self.log.records[0].exc_info[1]))

    def test_two_connections_firing_a_tick_put_one_job(self):
        self.add('report', report, every=MINUTE)
        tm2, queue2 = self.other_connection()
        self.later(minutes=1)
        schedule.fire_due(self.queue)
        schedule.fire_due(queue2)
        self.tm.commit()
        with self.assertRaises(ZODB.POSException.ConflictError):
            tm2.commit()
        tm2.abort()
        # The retry sees the schedule advanced.
        self.assertEqual(schedule.fire_due(queue2), T0 + 2 * MINUTE)
        tm2.commit()
        self.assertEqual(len(self.pending(queue2)), 1)

    def test_adding_while_another_connection_fires_keeps_the_earliest(self):
        self.add('slow', report, every=datetime.timedelta(hours=1))
        self.add('report', report, every=MINUTE)
        tm2, queue2 = self.other_connection()
        self.later(minutes=1)
        schedule.fire_due(self.queue)  # earliest: the next minute
        queue2.schedules['soon'] = Schedule(report, every=SECOND)
        self.tm.commit()
        tm2.commit()  # merges with the earlier value
        self.tm.begin()
        self.assertEqual(self.queue.schedules.earliest, T0 + MINUTE)
        self.assertEqual(schedule.fire_due(self.queue), T0 + MINUTE + SECOND)


class DispatcherTests(VirtualTimeTestCase):
    """A dispatcher on the virtual-time test reactor fires the ticks."""

    def tearDown(self):
        _gate.set()
        super().tearDown()

    def jobs(self):
        """Every job of the schedule, pending, held or completed."""
        transaction.begin()
        found = list(self.queue)
        for agents in self.queue.dispatchers.values():
            for agent in agents.values():
                found.extend(agent)
                found.extend(agent.completed)
        return sorted(found, key=lambda job: job.annotations[
            schedule.TICK_KEY])

    def test_one_job_per_tick_at_the_tick(self):
        start = zc.asynchronous.utils.now()
        self.queue.schedules['report'] = Schedule(
            report, every=datetime.timedelta(seconds=7))
        transaction.commit()
        self.dispatcher.activate()
        for _ in range(10):
            self.reactor.time_flies(7)
        self.reactor.wait_for(*self.jobs())
        jobs = self.jobs()
        ticks = [start + datetime.timedelta(seconds=7 * n)
                 for n in range(1, 11)]
        self.assertEqual([job.annotations[schedule.TICK_KEY]
                          for job in jobs], ticks)
        # Woken at the tick, not at the 5-second heartbeat.
        self.assertEqual([job.begin_after for job in jobs], ticks)
        self.assertEqual({job.result for job in jobs}, {'tick'})

    def test_downtime_then_catch_up(self):
        start = zc.asynchronous.utils.now()
        self.queue.schedules['once'] = Schedule(report, every=MINUTE)
        self.queue.schedules['all'] = Schedule(report, every=MINUTE,
                                               catch_up='all')
        skip = self.queue.schedules['skip'] = Schedule(
            report, every=MINUTE, catch_up='skip')
        skip.grace = datetime.timedelta(seconds=10)
        transaction.commit()
        self.dispatcher.activate()
        self.reactor.time_flies(60)  # every schedule's first tick
        self.reactor.wait_for(*self.jobs())
        self.dispatcher.deactivate()
        # Down for five minutes: ticks 2 to 6 are missed.
        testing.set_now(start + datetime.timedelta(minutes=6, seconds=20))
        self.dispatcher.activate()
        self.reactor.time_flies(1)
        self.reactor.wait_for(*self.jobs())
        by_schedule = {}
        for job in self.jobs():
            by_schedule.setdefault(job.annotations[schedule.SCHEDULE_KEY],
                                   []).append(
                (job.annotations[schedule.TICK_KEY] - start) // MINUTE)
        self.assertEqual(by_schedule, {
            'once': [1, 6], 'all': [1, 2, 3, 4, 5, 6], 'skip': [1]})
        transaction.begin()
        for sched in self.queue.schedules.values():
            self.assertEqual(sched.next_run, start + 7 * MINUTE)

    def test_ticks_fire_at_the_tick_while_every_thread_is_busy(self):
        _gate.clear()
        self.reactor.wait_for_threads = 0.01  # the threads wait for _gate
        start = zc.asynchronous.utils.now()
        every = datetime.timedelta(seconds=62)  # between heartbeats
        self.queue.schedules['gated'] = Schedule(gated, every=every)
        transaction.commit()
        self.dispatcher.activate()
        for _ in range(4):  # 'main' has three threads
            self.reactor.time_flies(62)
        jobs = self.jobs()
        self.assertEqual([job.begin_after for job in jobs],
                         [start + n * every for n in range(1, 5)])
        self.assertEqual(len(self.queue), 1)  # no thread for the fourth
        _gate.set()


class LiveDispatcherTests(DispatcherTestCase):
    """A dispatcher on a real reactor sees a new schedule at once (it
    watches the queue) and wakes up for each tick, long before its
    heartbeat."""

    def test_a_new_schedule_fires_without_waiting_for_the_heartbeat(self):
        live = self.start(poll_interval=600)
        testing.get_poll(live.dispatcher, 0)  # its first poll is done
        every = datetime.timedelta(seconds=0.2)
        sched = self.queue.schedules['often'] = Schedule(report, every=every)
        transaction.commit()
        third = sched.next_run + 2 * every

        def fired_three_ticks():
            transaction.begin()  # sees the dispatcher's commits
            return sched.last_run is not None and sched.last_run >= third
        wait_until(fired_three_ticks, 30, 'three ticks of the schedule')
