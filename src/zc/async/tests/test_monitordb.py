"""Tests of zc.async.monitordb and monitorquery: the ``asyncdb`` command
(reference 2.14, Appendix A14, A15, A21).

One scene is built for the whole module (the tools only read): a
dispatcher on the virtual-time reactor ran jobs in queue '' and queue
'second', and another dispatcher's record holds an assigned job.  The clock
is frozen at ``NOW``:

========== ============== ============ ====================================
job        begin after    start / end  state
========== ============== ============ ====================================
good       T0             T0+5s        succeeded (42), completed at T0+5s
bad        T0+7s          T0+10s       failed (ValueError), at T0+10s
active     T0+10s         T0+15s / -   active (blocked)
calling    T0+10s         T0+15s       callbacks (its callback blocks)
assigned   T0+15s         -            assigned to agent 'picky' of OTHER
p1         T0+15s         -            pending in ''
p3         T0+15s         -            pending in '' (an ``add_up`` job)
p_second   T0+30min       -            pending in 'second'
p2         T0+1h          -            pending in ''
========== ============== ============ ====================================
"""
import datetime
import json
import unittest
import uuid

import transaction
import ZODB.utils

import zc.asynchronous.agent
import zc.asynchronous.interfaces as interfaces
import zc.asynchronous.legacy
import zc.asynchronous.monitor as monitor
import zc.asynchronous.monitordb as monitordb
import zc.asynchronous.ops.monitorquery as monitorquery
import zc.asynchronous.queue
import zc.asynchronous.testing as testing
import zc.asynchronous.utils
from zc.asynchronous.dispatcher import getId
from zc.asynchronous.tests.live import wait_until
from zc.asynchronous.tests.monitoring import (
    OTHER_UUID, UUID, World, blocked, blocked_callback, explode, run,
    succeed)

UTC = datetime.timezone.utc
T0 = datetime.datetime(2006, 8, 10, 15, 44, 22, 211, UTC)
NOW = T0 + datetime.timedelta(seconds=15)


def add_up(*values):
    return sum(values)


def is_add_up(job):
    """The filter of agent 'picky'."""
    return getattr(job.callable, '__name__', None) == 'add_up'


def iso(seconds):
    return (T0 + datetime.timedelta(seconds=seconds)).replace(
        tzinfo=None).isoformat() + 'Z'


def build_scene(world):
    """Make the jobs of the module docstring; return them by name."""
    jobs = {}
    second = world.root[interfaces.KEY]['second'] = \
        zc.asynchronous.queue.Queue()
    world.queue.dispatchers.register(OTHER_UUID)
    other = world.queue.dispatchers[OTHER_UUID]
    other.ping_death_interval = datetime.timedelta(days=1)
    other.activate()
    other.pop('main', None)
    other['picky'] = zc.asynchronous.agent.Agent(filter=is_add_up, size=1)
    transaction.commit()
    world.dispatcher.activate()
    world.reactor.time_flies(0)  # first poll, at T0
    jobs['good'] = world.put(succeed, 40, 2)
    world.reactor.time_flies(5)
    testing.wait_for_result(jobs['good'])
    world.reactor.time_flies(2)
    jobs['bad'] = world.put(explode)
    world.reactor.time_flies(3)
    testing.wait_for_result(jobs['bad'])
    jobs['active'] = world.put(blocked, 'a')
    calling = jobs['calling'] = world.put(succeed, 1, 2)
    calling.addCallback(blocked_callback)
    transaction.commit()
    world.reactor.time_flies(5)
    testing.wait_for_start(jobs['active'])
    wait_until(lambda: transaction.begin() or
               calling.status == interfaces.CALLBACKS)
    jobs['assigned'] = world.put(add_up, 1, 2)
    assert other['picky'].claimJob() is jobs['assigned']
    transaction.commit()
    jobs['p1'] = world.put(succeed, 1)
    jobs['p3'] = world.put(add_up, 5, 5)
    jobs['p_second'] = world.put(
        succeed, 2, queue=second,
        begin_after=NOW + datetime.timedelta(minutes=29, seconds=45))
    jobs['p2'] = world.put(
        succeed, 3, begin_after=T0 + datetime.timedelta(hours=1))
    return jobs


class SceneLayer:
    """The scene of the module docstring, built once (the tools only read).
    """

    @classmethod
    def setUp(cls):
        cls.world = World()
        try:
            cls.jobs = build_scene(cls.world)
        except BaseException:
            cls.world.close()
            raise

    @classmethod
    def tearDown(cls):
        cls.world.close()


class SceneTestCase(unittest.TestCase):

    layer = SceneLayer

    def setUp(self):
        self.world = SceneLayer.world
        self.jobs = SceneLayer.jobs
        self.assertEqual(zc.asynchronous.utils.now(), NOW)

    def asyncdb(self, *words):
        return json.loads(run(monitordb.asyncdb, *words))

    def error(self, *words):
        with self.assertRaises(ValueError) as raised:
            run(monitordb.asyncdb, *words)
        return str(raised.exception)

    def ids(self, *names):
        return [list(getId(self.jobs[name])) for name in names]


class StateTests(SceneTestCase):

    def test_each_state(self):
        expected = {
            'pending': ['p1', 'p3', 'p_second', 'p2'],
            'assigned': ['assigned'], 'active': ['active'],
            'callbacks': ['calling'], 'completed': ['bad', 'good'],
            'succeeded': ['good'], 'failed': ['bad']}
        for state, names in expected.items():
            self.assertEqual(self.asyncdb('jobs', state), self.ids(*names),
                             state)

    def test_states_are_concatenated_in_order(self):
        self.assertEqual(
            self.asyncdb('jobs', 'completed', 'pending'),
            self.ids('p1', 'p3', 'p_second', 'p2', 'bad', 'good'))
        held = self.asyncdb('jobs', 'failed', 'callbacks', 'assigned',
                            'active')
        # Held jobs (started at NOW, or not started) come before completed.
        self.assertEqual(sorted(held[:3]),
                         sorted(self.ids('assigned', 'active', 'calling')))
        self.assertEqual(held[3:], self.ids('bad'))

    def test_state_errors(self):
        self.assertEqual(
            self.error('jobs', 'pending', 'sleeping', 'done'),
            'Available states are pending, assigned, active, callbacks, '
            'completed, succeeded, failed (unknown: done, sleeping)')
        self.assertEqual(
            self.error('count', 'succeeded', 'failed'),
            'can only include zero or one of "completed", "succeeded," or '
            '"failed" states.')
        self.assertIn('give at least one', self.error('jobs'))
        self.assertIn('give at least one', self.error('count'))

    def test_count(self):
        self.assertEqual(self.asyncdb('count', 'pending'), 4)
        self.assertEqual(self.asyncdb('count', 'pending', 'completed'), 6)
        self.assertEqual(self.asyncdb('count', 'completed', 'uuid:THIS'), 2)
        self.assertEqual(
            run(monitordb.asyncdb, 'count', 'failed'), '1\n')


class DisplayTests(SceneTestCase):

    def test_repr_and_details(self):
        self.assertEqual(self.asyncdb('jobs', 'failed', 'display:repr'),
                         [repr(self.jobs['bad'])])
        details = self.asyncdb('jobs', 'failed', 'display:details')
        self.assertEqual(details, [self.asyncdb(
            'job', str(self.ids('bad')[0][0]))])
        # A15: both spellings.
        self.assertEqual(self.asyncdb('jobs', 'failed', 'display:detail'),
                         details)
        self.assertEqual(self.asyncdb('jobs', 'failed', 'display:default'),
                         self.ids('bad'))

    def test_bad_display(self):
        self.assertEqual(self.error('jobs', 'failed', 'display:pretty'),
                         "display must be one of default, repr, details, "
                         "not 'pretty'")
        self.assertIn('display must be one of',
                      self.error('jobstats', 'display:x'))

    def test_count_modifier(self):
        self.assertEqual(self.asyncdb('jobs', 'pending', 'count:2'),
                         self.ids('p1', 'p3'))
        self.assertEqual(len(self.asyncdb('jobs', 'pending', 'count:0')), 4)
        self.assertEqual(self.error('jobs', 'pending', 'count:few'),
                         "count must be an integer, not 'few'")


class FilterTests(SceneTestCase):

    def test_callable_globs(self):
        self.assertEqual(self.asyncdb('jobs', 'pending', 'callable:add_*'),
                         self.ids('p3'))
        self.assertEqual(
            self.asyncdb('jobs', 'completed', 'callable:expl?de'),
            self.ids('bad'))
        # With a dot: the dotted name.
        module = explode.__module__
        self.assertEqual(
            self.asyncdb('jobs', 'completed', 'callable:%s.*' % module),
            self.ids('bad', 'good'))
        self.assertEqual(
            self.asyncdb('jobs', 'completed', 'callable:*.monitoring.explode'),
            self.ids('bad'))
        self.assertEqual(
            self.asyncdb('jobs', 'completed', 'callable:explode.*'), [])

    def test_callable_names(self):
        name = monitorquery.callable_name
        self.assertEqual(name(explode, False), 'explode')
        self.assertEqual(name(explode, True), explode.__module__ + '.explode')
        job = self.jobs['good']
        self.assertEqual(name(job.fail, True), 'zc.async.job.Job.fail')
        self.assertEqual(name(len, True), 'builtins.len')
        self.assertEqual(name(ZODB.utils.p64, False), 'p64')
        self.assertEqual(name(monitor.Encoder(), True),
                         'zc.async.monitor.Encoder')

    def test_queue_globs(self):
        self.assertEqual(self.asyncdb('jobs', 'pending', 'queue:sec*'),
                         self.ids('p_second'))
        self.assertEqual(self.asyncdb('jobs', 'pending', 'queue:'),
                         self.ids('p1', 'p3', 'p2'))
        self.assertEqual(self.asyncdb('jobs', 'completed', 'queue:sec*'), [])
        self.assertEqual(self.asyncdb('jobs', 'pending', 'queue:x'), [])

    def test_agent_globs(self):
        self.assertEqual(self.asyncdb('jobs', 'assigned', 'active',
                                      'agent:pick?'), self.ids('assigned'))
        self.assertEqual(self.asyncdb('count', 'completed', 'agent:main'), 2)
        self.assertEqual(self.asyncdb('count', 'completed', 'agent:p*'), 0)
        # Pending jobs: those the agent's filter accepts.
        self.assertEqual(self.asyncdb('jobs', 'pending', 'agent:picky'),
                         self.ids('p3'))
        self.assertEqual(self.asyncdb('jobs', 'pending', 'agent:main'),
                         self.ids('p1', 'p3', 'p_second', 'p2'))
        self.assertEqual(self.asyncdb('jobs', 'pending', 'agent:main',
                                      'queue:'), self.ids('p1', 'p3', 'p2'))
        self.assertEqual(self.asyncdb('jobs', 'pending', 'agent:none'), [])

    def test_uuids(self):
        self.assertEqual(
            self.asyncdb('jobs', 'pending', 'assigned',
                         'uuid:%s' % (OTHER_UUID,)),
            self.ids('p3', 'assigned'))
        self.assertEqual(
            self.asyncdb('jobs', 'assigned', 'active', 'uuid:THIS'),
            self.ids('active'))
        self.assertEqual(self.asyncdb('count', 'completed', 'uuid:this'), 2)
        self.assertEqual(self.error('count', 'pending', 'uuid:me'),
                         "'me' is not a UUID (nor THIS)")

    def test_chooser_agents_cannot_filter_pending_jobs(self):
        other = self.world.queue.dispatchers[OTHER_UUID]
        other['chooser'] = zc.asynchronous.agent.Agent(
            chooser=zc.asynchronous.legacy.chooseFirst)
        transaction.commit()
        try:
            self.assertEqual(
                self.error('jobs', 'pending', 'agent:ch*'),
                "cannot tell which pending jobs agent 'chooser' (dispatcher "
                "%s, queue '') would take: it has a chooser, not a filter"
                % (OTHER_UUID,))
            self.assertIn('has a chooser',
                          self.error('count', 'pending',
                                     'uuid:%s' % (OTHER_UUID,)))
            # Held and completed jobs are fine.
            self.assertEqual(self.asyncdb('count', 'completed',
                                          'agent:ch*'), 0)
        finally:
            del other['chooser']
            transaction.commit()

    def test_requested_start(self):
        # NOW is T0+15s.
        self.assertEqual(
            self.asyncdb('jobs', 'completed', 'active', 'callbacks',
                         'requested_start:before10S'), self.ids('good'))
        self.assertEqual(
            self.asyncdb('jobs', 'completed', 'requested_start:since10S'),
            self.ids('bad'))
        self.assertEqual(
            self.asyncdb('jobs', 'pending', 'requested_start:since1S'),
            self.ids('p1', 'p3', 'p_second', 'p2'))
        self.assertEqual(
            self.asyncdb('jobs', 'pending', 'requested_start:before0S'), [])

    def test_start_end_and_callbacks_completed(self):
        self.assertEqual(
            self.asyncdb('jobs', 'completed', 'start:since8S'),
            self.ids('bad'))
        self.assertEqual(
            self.asyncdb('jobs', 'completed', 'start:before8S'),
            self.ids('good'))
        self.assertEqual(self.asyncdb('jobs', 'completed', 'end:since6S'),
                         self.ids('bad'))
        self.assertEqual(
            self.asyncdb('count', 'active', 'callbacks', 'pending',
                         'start:since1D'), 2)
        self.assertEqual(
            self.asyncdb('jobs', 'completed', 'callbacks_completed:since8S'),
            self.ids('bad'))
        # Both bounds, in either order (A21: properly parsed).
        for value in ('since11S,before8S', 'before8S,since11S',
                      'Since11s,BEFORE8s'):
            self.assertEqual(
                self.asyncdb('jobs', 'completed',
                             'callbacks_completed:' + value),
                self.ids('good'), value)
        self.assertEqual(
            self.asyncdb('jobs', 'completed', 'end:since1M,before1S'),
            self.ids('bad', 'good'))

    def test_bad_filters(self):
        for value in ('yesterday', 'since', 'since1H,since2H', 'before1X',
                      'since1H;before1M'):
            self.assertEqual(
                self.error('jobs', 'completed', 'start:' + value),
                'bad value for filter "start": %r (use sinceINTERVAL, '
                'beforeINTERVAL or both, comma-separated, where INTERVAL is '
                'like 1D2H3M4S)' % (value,))
        self.assertEqual(
            self.error('jobs', 'completed', 'color:red'),
            "unknown filter 'color' (filters: callable, queue, agent, uuid, "
            "requested_start, start, end, callbacks_completed)")


class JobStatsTests(SceneTestCase):

    def test_all_states_by_default(self):
        stats = self.asyncdb('jobstats')
        self.assertEqual(
            {key: stats[key] for key in monitordb._STATS_KEYS},
            {'pending': 4, 'assigned': 1, 'active': 1, 'callbacks': 1,
             'succeeded': 1, 'failed': 1})
        # Waits run to now for jobs not started: p2 begins in 45 minutes.
        self.assertEqual(stats['shortest wait'],
                         [{'days': -1, 'hours': 23, 'seconds': 15.0},
                          self.ids('p2')[0]])

    def test_extremes_are_a_true_maximum_and_minimum(self):
        stats = self.asyncdb('jobstats', 'completed')
        self.assertEqual(stats['longest wait'],
                         [{'seconds': 5.0}, self.ids('good')[0]])
        self.assertEqual(stats['shortest wait'],  # A14
                         [{'seconds': 3.0}, self.ids('bad')[0]])
        self.assertEqual(stats['longest active'][0], {'seconds': 0.0})

    def test_running_jobs_are_active_until_now(self):
        testing.set_now(NOW + datetime.timedelta(seconds=4))
        try:
            stats = self.asyncdb('jobstats', 'active', 'callbacks',
                                 'display:repr')
        finally:
            testing.set_now(NOW)
        self.assertEqual(stats['longest active'],
                         [{'seconds': 4.0}, repr(self.jobs['active'])])
        self.assertEqual(stats['shortest active'],
                         [{'seconds': 0.0}, repr(self.jobs['calling'])])
        self.assertEqual((stats['active'], stats['callbacks'],
                          stats['pending']), (1, 1, 0))

    def test_no_jobs(self):
        stats = self.asyncdb('jobstats', 'pending', 'queue:x')
        self.assertEqual(stats, {
            'pending': 0, 'assigned': 0, 'active': 0, 'callbacks': 0,
            'succeeded': 0, 'failed': 0, 'longest wait': None,
            'shortest wait': None, 'longest active': None,
            'shortest active': None})


class JobTests(SceneTestCase):

    def oid(self, name):
        return str(self.ids(name)[0][0])

    def test_summary_of_a_completed_job(self):
        self.assertEqual(self.asyncdb('job', self.oid('good')), {
            'repr': repr(self.jobs['good']), 'args': ['40', '2'],
            'kwargs': {}, 'begin after': iso(0), 'active start': iso(5),
            'active end': iso(5), 'initial callbacks end': iso(5),
            'wait': {'seconds': 5.0}, 'active': {'seconds': 0.0},
            'status': 'completed', 'failed': False, 'result': '42',
            'quota names': [], 'agent': 'main', 'dispatcher': str(UUID),
            'queue': '', 'callbacks': []})

    def test_summary_of_a_failed_job(self):
        summary = self.asyncdb('job', self.oid('bad'), 'database:unnamed')
        self.assertTrue(summary['failed'])
        self.assertEqual(summary['status'], 'completed')
        self.assertTrue(summary['result'].startswith(
            "Traceback: <class 'ValueError'>: boom\n"), summary['result'])
        self.assertIn(':explode\n', summary['result'])

    def test_summaries_of_other_states(self):
        pending = self.asyncdb('job', self.oid('p2'))
        self.assertEqual(
            (pending['status'], pending['agent'], pending['dispatcher'],
             pending['queue'], pending['active'], pending['result']),
            ('pending', None, None, '', None, 'None'))
        assigned = self.asyncdb('job', self.oid('assigned'))
        self.assertEqual(
            (assigned['status'], assigned['agent'], assigned['dispatcher'],
             assigned['wait']),
            ('assigned', 'picky', str(OTHER_UUID), {'seconds': 0.0}))
        calling = self.asyncdb('job', self.oid('calling'))
        self.assertEqual(calling['status'], 'callbacks')
        self.assertEqual(calling['result'], '3')
        callback = list(self.jobs['calling'].callbacks)[0]
        self.assertEqual(calling['callbacks'], [list(getId(callback))])
        self.assertEqual(self.asyncdb('job', self.oid('active'))['active'],
                         {'seconds': 0.0})

    def test_jobsummary_from_python(self):
        summary = monitordb.jobsummary(self.jobs['good'])
        self.assertEqual(summary['begin after'], T0)
        self.assertEqual(summary['wait'], datetime.timedelta(seconds=5))

    def test_bad_job_requests(self):
        self.assertEqual(self.error('job', '99999'),
                         "no object with oid 99999 in database 'unnamed'")
        queue_oid = ZODB.utils.u64(self.world.queue._p_oid)
        self.assertEqual(
            self.error('job', str(queue_oid)),
            "oid %d is not a job: zc.async.queue.Queue (oid %d, db "
            "'unnamed')" % (queue_oid, queue_oid))
        self.assertEqual(self.error('job', 'x'),
                         "oid must be an integer, not 'x'")
        self.assertEqual(self.error('job', '-1'),
                         'oid must be at least 0, not -1')
        self.assertEqual(self.error('job', self.oid('good'), 'database:x'),
                         "unknown database 'x'")
        self.assertIn("wrong modifiers for tool 'job'", self.error('job'))

    def test_traceback(self):
        # Text is written as it is, not as JSON.
        text = run(monitordb.asyncdb, 'traceback', self.oid('bad'))
        self.assertTrue(text.startswith('Traceback (most recent call last):'))
        self.assertTrue(text.endswith('builtins.ValueError: boom\n\n'), text)
        brief = run(monitordb.asyncdb, 'traceback', self.oid('bad'),
                    'detail:brief')
        self.assertTrue(brief.startswith(
            "Traceback: <class 'ValueError'>: boom\n"), brief)
        verbose = run(monitordb.asyncdb, 'traceback', self.oid('bad'),
                      'detail:verbose')
        self.assertIn('[ Locals ]', verbose)
        self.assertIsNone(self.asyncdb('traceback', self.oid('good')))
        self.assertIsNone(self.asyncdb('traceback', self.oid('p1')))
        self.assertEqual(
            self.error('traceback', self.oid('bad'), 'detail:long'),
            "detail must be one of default, brief, verbose, not 'long'")

    def test_nextpending(self):
        self.assertEqual(self.asyncdb('nextpending'),
                         self.asyncdb('job', self.oid('p1')))
        self.assertEqual(self.asyncdb('nextpending', 'queue:second')['repr'],
                         repr(self.jobs['p_second']))
        self.assertEqual(self.asyncdb('nextpending', 'agent:picky')['repr'],
                         repr(self.jobs['p3']))
        self.assertIsNone(self.asyncdb('nextpending', 'queue:x'))
        for name in ('start', 'end', 'callbacks_completed'):
            self.assertEqual(
                self.error('nextpending', name + ':since1H'),
                "nextpending does not take the %r filter: pending jobs have "
                "not started" % (name,))

    def test_lastcompleted(self):
        self.assertEqual(self.asyncdb('lastcompleted'),
                         self.asyncdb('job', self.oid('bad')))
        self.assertEqual(
            self.asyncdb('lastcompleted', 'callable:succeed')['repr'],
            repr(self.jobs['good']))
        self.assertEqual(
            self.asyncdb('lastcompleted', 'uuid:THIS')['repr'],
            repr(self.jobs['bad']))
        self.assertIsNone(self.asyncdb('lastcompleted', 'agent:picky'))


class DispatcherToolTests(SceneTestCase):

    def test_UUIDs(self):
        self.assertEqual(sorted(self.asyncdb('UUIDs')),
                         sorted([str(UUID), str(OTHER_UUID)]))

    def test_status(self):
        status = self.asyncdb('status')
        self.assertEqual(sorted(status), ['', 'second'])
        self.assertEqual(status['second']['len'], 1)
        self.assertEqual(list(status['second']['dispatchers']), [str(UUID)])
        self.assertEqual(status['']['len'], 3)
        self.assertEqual(status['']['dispatchers'][str(UUID)], {
            'last ping': iso(0), 'since ping': {'seconds': 15.0},
            'dead': False, 'ping interval': {'seconds': 30.0},
            'ping death interval': {'minutes': 1},
            'agents': {'main': {'size': 3, 'len': 2, 'filter': None}}})
        other = status['']['dispatchers'][str(OTHER_UUID)]
        self.assertEqual(
            (other['last ping'], other['since ping'],
             other['ping death interval']), (None, None, {'days': 1}))
        self.assertEqual(other['agents'], {'picky': {
            'size': 1, 'len': 1,
            'filter': is_add_up.__module__ + '.is_add_up'}})

    def test_status_filters(self):
        self.assertEqual(list(self.asyncdb('status', 'queue:sec*')),
                         ['second'])
        mine = self.asyncdb('status', 'uuid:THIS')
        self.assertEqual(list(mine['']['dispatchers']), [str(UUID)])
        picky = self.asyncdb('status', 'queue:', 'agent:pi*')
        self.assertEqual(
            {uuid: list(record['agents'])
             for uuid, record in picky['']['dispatchers'].items()},
            {str(UUID): [], str(OTHER_UUID): ['picky']})

    def test_status_shows_choosers(self):
        agent = zc.asynchronous.agent.Agent(
            chooser=zc.asynchronous.legacy.chooseFirst)
        self.assertEqual(monitordb._agent_status(agent), {
            'size': 3, 'len': 0, 'chooser': 'zc.async.legacy.chooseFirst'})

    def test_dispatchers_not_activated_are_left_out(self):
        idle = uuid.UUID('5e1d2c3b-4e1e-11e0-9d6a-0017f2c49bdd')
        dispatchers = self.world.queue.dispatchers
        dispatchers.register(idle)
        transaction.commit()
        try:
            self.assertNotIn(str(idle),
                             self.asyncdb('status')['']['dispatchers'])
            self.assertNotIn(str(idle), self.asyncdb('UUIDs'))
        finally:
            dispatchers.unregister(idle)
            transaction.commit()


class HelpTests(SceneTestCase):

    def test_help(self):
        text = run(monitordb.asyncdb)
        self.assertTrue(text.startswith(
            'Monitor and introspect zc.async activity in the database.\n'))
        text = run(monitordb.asyncdb, 'help')
        for name, func in monitordb.funcs.items():
            self.assertIn('\n%s: %s\n' % (name, func.__doc__.split('\n')[0]),
                          text)
        jobs_help = run(monitordb.asyncdb, 'help', 'jobs')
        self.assertIn('callbacks_completed', jobs_help)
        self.assertIn('display:details', jobs_help)
        self.assertEqual(run(monitordb.asyncdb, 'help', 'x'),
                         'Unknown asyncdb tool\n')
        self.assertEqual(run(monitordb.asyncdb, 'x'),
                         '[Unknown tool name for this command: x]\n')
        for name, func in monitordb.funcs.items():
            self.assertIn('asyncdb ' + name, func.__doc__)


def test_suite():
    suite = unittest.TestSuite()
    for case in (StateTests, DisplayTests, FilterTests, JobStatsTests,
                 JobTests, DispatcherToolTests, HelpTests):
        suite.addTest(unittest.defaultTestLoader.loadTestsFromTestCase(case))
    return suite
