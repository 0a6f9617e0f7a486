"""Tests of zc.async.monitor: the ``async`` command (reference 2.13).

The tools run against a real dispatcher on the virtual-time reactor, so
times, polls and answers are exact.
"""
import datetime
import json
import operator
import textwrap
import unittest

import transaction
import ZODB.utils

import zc.asynchronous._registry
import zc.asynchronous.dispatcher
import zc.asynchronous.job
import zc.asynchronous.monitor as monitor
import zc.asynchronous.testing as testing
from zc.asynchronous.dispatcher import Dispatcher, getId
from zc.asynchronous.tests.monitoring import (
    MonitorTestCase, OTHER_UUID, UUID, blocked, event, explode, run)

UTC = datetime.timezone.utc
T0 = datetime.datetime(2006, 8, 10, 15, 44, 22, 211, UTC)


def async_json(*words):
    return json.loads(run(monitor.async_, *words))


class EncoderTests(MonitorTestCase):

    def encode(self, obj):
        return json.loads(monitor.encoder.encode(obj))

    def test_timedeltas_keep_their_non_zero_parts(self):
        td = datetime.timedelta
        self.assertEqual(self.encode(td(0)), {'seconds': 0.0})
        self.assertEqual(self.encode(td(seconds=5)), {'seconds': 5.0})
        self.assertEqual(
            self.encode(td(days=1, hours=2, minutes=3, seconds=4.5)),
            {'days': 1, 'hours': 2, 'minutes': 3, 'seconds': 4.5})
        self.assertEqual(self.encode(td(hours=3)), {'hours': 3})
        self.assertIsInstance(self.encode(td(seconds=5))['seconds'], float)

    def test_datetimes_are_utc_iso_with_z(self):
        self.assertEqual(self.encode(T0), '2006-08-10T15:44:22.000211Z')
        self.assertEqual(self.encode(T0.replace(tzinfo=None)),
                         '2006-08-10T15:44:22.000211Z')
        east = datetime.timezone(datetime.timedelta(hours=2))
        self.assertEqual(self.encode(T0.astimezone(east)),
                         '2006-08-10T15:44:22.000211Z')

    def test_uuids_jobs_iterators_and_the_rest(self):
        job = self.world.put(operator.mul, 6, 7)
        oid = ZODB.utils.u64(job._p_oid)
        self.assertEqual(self.encode(UUID), str(UUID))
        self.assertEqual(self.encode(job), [oid, 'unnamed'])
        self.assertEqual(self.encode(iter([1, 2])), [1, 2])
        self.assertEqual(self.encode(x for x in 'ab'), ['a', 'b'])
        self.assertEqual(self.encode(explode),
                         explode.__module__ + '.explode')
        self.assertEqual(self.encode(self.queue),
                         'zc.async.queue.Queue (oid %d, db %r)' % (
                             ZODB.utils.u64(self.queue._p_oid), 'unnamed'))
        unsaved = zc.asynchronous.job.Job(operator.mul)
        self.assertEqual(self.encode(unsaved),
                         'zc.async.job.Job (oid ?, db ?)')
        self.assertEqual(self.encode({1, }), '{1}')

    def test_sorted_keys_and_indent_of_four(self):
        self.assertEqual(monitor.encoder.encode({'b': 1, 'a': [2]}),
                         '{\n    "a": [\n        2\n    ],\n    "b": 1\n}')


class ParsingTests(unittest.TestCase):

    def test_modifiers(self):
        parse = monitor.parse_modifiers
        self.assertEqual(parse([]), ([], {}))
        self.assertEqual(parse(['a', 'b', 'x:1', 'y:2:3', 'z:']),
                         (['a', 'b'], {'x': '1', 'y': '2:3', 'z': ''}))
        with self.assertRaises(ValueError) as raised:
            parse(['x:1', 'a'])
        self.assertEqual(str(raised.exception),
                         'placeful modifiers must come before named modifiers')
        with self.assertRaises(ValueError) as raised:
            parse(['x:1', 'x:2'])
        self.assertEqual(str(raised.exception), "modifier 'x' given twice")

    def test_intervals(self):
        td = datetime.timedelta
        parse = monitor.parse_interval
        self.assertEqual(parse('1D2H3M4S'),
                         td(days=1, hours=2, minutes=3, seconds=4))
        self.assertEqual(parse('5m'), td(minutes=5))
        self.assertEqual(parse('1.5S'), td(seconds=1.5))
        self.assertEqual(parse('2d12h'), td(days=2, hours=12))
        for bad in ('', 'S', '5', '1H2D', 'soon', '-1S'):
            with self.assertRaises(ValueError) as raised:
                parse(bad)
            self.assertIn('is not an interval like 1D2H3M4.5S',
                          str(raised.exception))

    def test_time_modifiers(self):
        testing.set_now(T0)
        self.addCleanup(testing.tearDownDatetime)
        self.assertIsNone(monitor._dt(None))
        self.assertEqual(monitor._dt('12345'), 12345)
        self.assertEqual(monitor._dt('1H'), T0 - datetime.timedelta(hours=1))
        self.assertEqual(monitor._dt(T0), T0)
        with self.assertRaises(ValueError) as raised:
            monitor._dt('yesterday')
        self.assertEqual(str(raised.exception),
                         "'yesterday' is neither a poll key (an integer) nor "
                         "an interval like 1D2H3M4.5S")

    def test_integers(self):
        self.assertEqual(monitor.parse_int('3', 'count'), 3)
        with self.assertRaises(ValueError) as raised:
            monitor.parse_int('x', 'count')
        self.assertEqual(str(raised.exception),
                         "count must be an integer, not 'x'")
        with self.assertRaises(ValueError) as raised:
            monitor.parse_int('-1', 'count')
        self.assertEqual(str(raised.exception),
                         'count must be at least 0, not -1')


class CommandTests(MonitorTestCase):

    def test_the_command_is_named_async(self):
        self.assertIs(getattr(monitor, 'async'), monitor.async_)
        self.assertEqual(monitor.async_.__name__, 'async')

    def test_no_tool_gives_the_help_text(self):
        text = run(monitor.async_)
        self.assertTrue(text.startswith(
            'Monitor zc.async activity in this process.\n'))
        self.assertIn("To see a list of async tools, use 'async help'.", text)
        self.assertTrue(text.endswith('.\n'))

    def test_unknown_tool(self):
        self.assertEqual(run(monitor.async_, 'nonesuch', 'x'),
                         '[Unknown tool name for this command: nonesuch]\n')

    def test_strings_are_written_as_they_are(self):
        self.assertEqual(run(monitor.async_, 'UUID'), str(UUID) + '\n')

    def test_bad_modifiers_name_the_tool(self):
        with self.assertRaises(ValueError) as raised:
            run(monitor.async_, 'status', 'color:red')
        self.assertEqual(
            str(raised.exception), "wrong modifiers for tool 'status': got "
            "an unexpected keyword argument 'color'")
        with self.assertRaises(ValueError) as raised:
            run(monitor.async_, 'utcnow', 'extra')
        self.assertIn("wrong modifiers for tool 'utcnow'",
                      str(raised.exception))
        with self.assertRaises(ValueError) as raised:
            run(monitor.async_, 'status', 'uuid:THIS', 'x')
        self.assertEqual(str(raised.exception),
                         'placeful modifiers must come before named modifiers')

    def test_monitor_helper_with_other_tools(self):
        out = []

        class Connection:
            write = out.append
        tools = {'pair': lambda a, b='2': (a, b)}
        monitor.monitor(tools, 'HELP', Connection(), None, ())
        monitor.monitor(tools, 'HELP', Connection(), 'pair', ('1', 'b:3'))
        self.assertEqual(''.join(out), 'HELP\n[\n    "1",\n    "3"\n]\n')

    def test_help(self):
        text = run(monitor.async_, 'help')
        self.assertTrue(text.startswith('These are the tools available.'))
        for name, func in monitor.funcs.items():
            self.assertIn('\n%s: %s\n' % (name, func.__doc__.split('\n')[0]),
                          text)
        text = run(monitor.async_, 'help', 'polls')
        self.assertTrue(text.startswith(
            'Get information about recent polls, defaulting to most recent.'))
        self.assertIn('count:N', text)  # A16: the real modifier
        self.assertNotIn('\n    TIME is', text)  # dedented
        self.assertEqual(run(monitor.async_, 'help', 'nonesuch'),
                         'Unknown async tool\n')

    def test_every_tool_has_usage_help(self):
        for name, func in monitor.funcs.items():
            self.assertIn('async ' + name, func.__doc__)


class StatusTests(MonitorTestCase):

    def test_stopped(self):
        self.assertEqual(run(monitor.async_, 'status'), textwrap.dedent('''\
            {
                "poll interval": {
                    "seconds": 5.0
                },
                "status": "STOPPED",
                "time since last poll": null,
                "uptime": null,
                "uuid": "%s"
            }
            ''') % (UUID,))

    def test_starting_running_and_stuck(self):
        self.dispatcher.activate()
        self.assertEqual(async_json('status')['status'], 'STARTING')
        self.reactor.time_flies(1)
        status = async_json('status')
        self.assertEqual(status['status'], 'RUNNING')
        self.assertEqual(status['uptime'], {'seconds': 1.0})
        self.assertEqual(status['time since last poll'], {'seconds': 1.0})
        testing.set_now(T0 + datetime.timedelta(minutes=2))
        self.assertEqual(async_json('status')['status'], 'STUCK')

    def test_uuid_chooses_another_dispatcher(self):
        other = Dispatcher(self.world.db, self.reactor, uuid=OTHER_UUID,
                           poll_interval=2)
        status = async_json('status', 'uuid:%s' % (OTHER_UUID,))
        self.assertEqual(status['uuid'], str(OTHER_UUID))
        self.assertEqual(status['poll interval'], {'seconds': 2.0})
        self.assertEqual(async_json('status', 'uuid:THIS')['uuid'], str(UUID))
        with monitor.using_dispatcher(other):
            self.assertEqual(async_json('status')['uuid'], str(OTHER_UUID))
            self.assertEqual(run(monitor.async_, 'UUID'),
                             str(OTHER_UUID) + '\n')
        self.assertEqual(async_json('status')['uuid'], str(UUID))

    def test_bad_and_unknown_uuids(self):
        with self.assertRaises(ValueError) as raised:
            run(monitor.async_, 'status', 'uuid:nope')
        self.assertEqual(str(raised.exception),
                         "'nope' is not a UUID (nor THIS)")
        with self.assertRaises(ValueError) as raised:
            run(monitor.async_, 'status', 'uuid:%s' % (OTHER_UUID,))
        self.assertEqual(str(raised.exception),
                         'no dispatcher with UUID %s in this process'
                         % (OTHER_UUID,))

    def test_no_dispatcher(self):
        zc.asynchronous.dispatcher.pop()
        self.addCleanup(zc.asynchronous._registry.dispatchers.__setitem__,
                        UUID, self.dispatcher)
        with self.assertRaises(ValueError) as raised:
            run(monitor.async_, 'status')
        self.assertEqual(str(raised.exception),
                         'no dispatcher is registered in this process')
        # Tools that need no dispatcher still work.
        self.assertEqual(run(monitor.async_, 'UUID'), str(UUID) + '\n')

    def test_utcnow(self):
        # Bare, as 1.5 printed it (not a JSON string).
        self.assertEqual(run(monitor.async_, 'utcnow'),
                         '2006-08-10T15:44:22.000211Z\n')
        self.reactor.time_flies(90)
        self.assertEqual(run(monitor.async_, 'utcnow'),
                         '2006-08-10T15:45:52.000211Z\n')


class PollTests(MonitorTestCase):

    def setUp(self):
        super().setUp()
        self.dispatcher.activate()
        self.reactor.time_flies(16)  # polls at 0, 5, 10 and 15 seconds
        self.polls = list(self.dispatcher.iterPolls())

    def expected(self, info):
        return {'key': info.key,
                'time': info.utc_timestamp.isoformat() + 'Z',
                'results': {'': {'main': {
                    'active jobs': [], 'error': None, 'len': 0,
                    'new jobs': [], 'size': 3}}}}

    def test_latest_poll(self):
        self.assertEqual(async_json('poll'), self.expected(self.polls[0]))
        self.assertEqual(async_json('poll')['time'],
                         '2006-08-10T15:44:37.000211Z')

    def test_poll_at_and_before(self):
        newest, second, third, oldest = self.polls
        self.assertEqual(async_json('poll', str(second.key)),
                         self.expected(second))
        self.assertEqual(async_json('poll', 'at:%d' % (second.key,)),
                         self.expected(second))
        self.assertEqual(async_json('poll', 'before:%d' % (second.key,)),
                         self.expected(third))
        # Intervals (now is second 16): the poll made 6 seconds ago is the
        # one of second 10, and so is the last one strictly before 5
        # seconds ago; 7 seconds ago, the last poll was the one of second 5.
        self.assertEqual(async_json('poll', 'at:6S')['key'], second.key)
        self.assertEqual(async_json('poll', 'before:5S')['key'], second.key)
        self.assertEqual(async_json('poll', 'at:7S')['key'], third.key)
        self.assertIsNone(async_json('poll', 'before:%d' % (oldest.key,)))

    def test_poll_errors(self):
        with self.assertRaises(ValueError) as raised:
            run(monitor.async_, 'poll', 'at:1', 'before:2')
        self.assertEqual(str(raised.exception),
                         'may only provide one of `at` and `before`')
        with self.assertRaises(ValueError):
            run(monitor.async_, 'poll', 'at:soon')

    def test_polls(self):
        keys = [info.key for info in self.polls]
        self.assertEqual([p['key'] for p in async_json('polls')], keys[:3])
        self.assertEqual(async_json('polls')[0], self.expected(self.polls[0]))
        self.assertEqual([p['key'] for p in async_json('polls', 'count:1')],
                         keys[:1])
        self.assertEqual(
            [p['key'] for p in async_json('polls', 'since:%d' % keys[2])],
            keys[:3])
        self.assertEqual([p['key'] for p in async_json('polls', 'since:11S')],
                         keys[:3])
        self.assertEqual(
            [p['key'] for p in async_json('polls', 'before:%d' % keys[0],
                                          'count:5')], keys[1:])
        with self.assertRaises(ValueError) as raised:
            run(monitor.async_, 'polls', 'count:many')
        self.assertEqual(str(raised.exception),
                         "count must be an integer, not 'many'")


class JobTests(MonitorTestCase):

    def setUp(self):
        super().setUp()
        self.dispatcher.activate()
        self.reactor.time_flies(0)  # the first poll

    def run_job(self, call, *args):
        job = self.world.put(call, *args)
        # The clock stops at the next poll, which claims the job, so the
        # job runs at the time of that poll.
        self.reactor.time_flies(5)
        testing.wait_for_result(job)
        return job

    def test_active_jobs(self):
        job = self.world.put(blocked, 'a')
        self.reactor.time_flies(5)
        testing.wait_for_start(job)
        jobid = list(getId(job))
        self.assertEqual(async_json('jobs'), [jobid])
        self.assertEqual(async_json('jobs', 'queue:'), [jobid])
        self.assertEqual(async_json('jobs', 'queue:', 'agent:main'), [jobid])
        self.assertEqual(async_json('jobs', 'agent:main'), [jobid])
        self.assertEqual(async_json('jobs', 'agent:other'), [])
        self.assertEqual(async_json('jobs', 'queue:other'), [])
        event('a').set()
        testing.wait_for_result(job)
        self.assertEqual(async_json('jobs'), [])

    def test_job_info(self):
        job = self.run_job(operator.mul, 6, 7)
        oid, dbname = getId(job)
        info = async_json('job', str(oid))
        self.assertEqual(info, json.loads(monitor.encoder.encode(
            self.dispatcher.getJobInfo(oid, dbname))))
        self.assertEqual(info['result'], '42')
        self.assertEqual(info['call'], repr(job))
        self.assertEqual(info['started'], '2006-08-10T15:44:27.000211Z')
        self.assertEqual((info['queue'], info['agent'], info['failed'],
                          info['reassigned']), ('', 'main', False, False))
        self.assertEqual(async_json('job', str(oid), 'database:unnamed'),
                         info)

    def test_failed_job_info(self):
        job = self.run_job(explode)
        info = async_json('job', str(getId(job)[0]))
        self.assertTrue(info['failed'])
        self.assertIn('ValueError: boom', info['result'])

    def test_bad_job_requests(self):
        self.run_job(operator.mul, 6, 7)
        with self.assertRaises(ValueError) as raised:
            run(monitor.async_, 'job', '999999')
        self.assertEqual(str(raised.exception), 'unknown job oid 999999')
        with self.assertRaises(ValueError) as raised:
            run(monitor.async_, 'job', '999999', 'database:unnamed')
        self.assertEqual(str(raised.exception),
                         "this dispatcher has no record of job oid 999999 in "
                         "database 'unnamed'")
        with self.assertRaises(ValueError) as raised:
            run(monitor.async_, 'job', 'seven')
        self.assertEqual(str(raised.exception),
                         "OID must be an integer, not 'seven'")
        with self.assertRaises(ValueError):
            run(monitor.async_, 'job')  # OID is required

    def test_jobstats(self):
        good = self.run_job(operator.mul, 6, 7)
        bad = self.run_job(explode)
        stats = async_json('jobstats')
        self.assertEqual(
            {key: stats[key] for key in (
                'started', 'successful', 'failed', 'unknown')},
            {'started': 2, 'successful': 1, 'failed': 1, 'unknown': 0})
        self.assertEqual(stats['longest successful'], list(getId(good)))
        self.assertEqual(stats['shortest failed'], list(getId(bad)))
        self.assertIsNone(stats['longest active'])
        # A13: chronological.
        self.assertEqual(stats['statistics start'],
                         '2006-08-10T15:44:22.000211Z')
        self.assertEqual(stats['statistics end'],
                         '2006-08-10T15:44:32.000211Z')
        # Only the last poll, the one that claimed ``bad``.
        recent = async_json('jobstats', 'since:2S')
        self.assertEqual((recent['started'], recent['failed']), (1, 1))
        early = async_json('jobstats', 'before:4S', 'queue:')
        self.assertEqual((early['started'], early['successful']), (1, 1))
        self.assertEqual(async_json('jobstats', 'agent:x')['started'], 0)
        transaction.abort()


def test_suite():
    suite = unittest.TestSuite()
    for case in (EncoderTests, ParsingTests, CommandTests, StatusTests,
                 PollTests, JobTests):
        suite.addTest(unittest.defaultTestLoader.loadTestsFromTestCase(case))
    return suite
