"""Tests of zc.async.dispatcher: polling, pools, history, live runs.

The first classes drive a dispatcher step by step with the virtual-time
``zc.asynchronous.testing.Reactor``; the live classes run real Twisted
reactors in threads against a FileStorage and wait on conditions.
"""
import datetime
import operator
import threading
import time
import unittest
import uuid

import transaction
import twisted.internet.defer
import twisted.python.failure
import zope.component.testing
import zope.testing.loggingsupport
import ZODB
import ZODB.POSException
import ZODB.utils

import zc.asynchronous.agent
import zc.asynchronous.dispatcher as dispatcher_module
import zc.asynchronous.interfaces as interfaces
import zc.asynchronous.job
import zc.asynchronous.queue
import zc.asynchronous.testing as testing
from zc.asynchronous import local
from zc.asynchronous.dispatcher import Dispatcher, getId
from zc.asynchronous.tests import processes
from zc.asynchronous.tests.live import DispatcherTestCase
from zc.asynchronous.tests.live import LiveDispatcher
from zc.asynchronous.tests.live import set_up_components
from zc.asynchronous.tests.live import wait_until

UTC = datetime.timezone.utc

# ----------------------------------------------------- job callables

# Jobs are pickled by reference, so what they use lives at module level;
# each test resets it (see _reset).
events = {}  # name -> threading.Event
attempts = {}  # name -> number of calls
log = []  # (name, 'start'|'end', time.monotonic())


def _reset():
    events.clear()
    attempts.clear()
    del log[:]


def event(name):
    return events.setdefault(name, threading.Event())


def count(name):
    attempts[name] = attempts.get(name, 0) + 1
    return attempts[name]


def fail_with_value_error():
    raise ValueError('boom')


def conflict_once():
    if count('conflict') == 1:
        raise ZODB.POSException.ConflictError()
    return 42


def report_result(result):
    return 'I got result %r' % (result,)


def timed(name, value):
    log.append((name, 'start', time.monotonic()))
    event(name).wait(10)
    log.append((name, 'end', time.monotonic()))
    return value


def blocked(name):
    event('started ' + name).set()
    event(name).wait(10)
    return name


def crash_first_attempt(name):
    """The first call hangs until released, then dies as a killed process
    would (SystemExit: no commit); later calls answer 42."""
    if count(name) == 1:
        event('started ' + name).set()
        event(name).wait(20)
        raise SystemExit()
    return 42


def hang_first_attempt(name):
    """The first call hangs until released; every call answers 42."""
    if count(name) == 1:
        event('started ' + name).set()
        event(name).wait(20)
    return 42


def exit_thread():
    raise SystemExit()


def add(*values):
    return sum(values)


def sum_results(*jobs):
    return sum(job.result for job in jobs)


def hand_off():
    return local.getQueue().put(zc.asynchronous.job.Job(operator.mul, 6, 7))


def deferred_answer():
    deferred = twisted.internet.defer.Deferred()
    reactor = local.getReactor()
    # Twisted is not thread-safe: schedule from the reactor thread.
    reactor.callFromThread(reactor.callLater, 0.01, deferred.callback, 42)
    return deferred


def converse():
    """Publish progress, then wait for a reply set by someone else."""
    job = local.getJob()
    local.setLiveAnnotation('progress', 0.5)
    reply = local.getLiveAnnotation('reply', timeout=10, poll=0.02)
    return reply, job.annotations.get('reply', 'MISSING')


def whoami():
    return (local.getAgentName(), str(local.getDispatcher().UUID),
            local.getJob().status, local.getQueue().name)


# ------------------------------------------------------ virtual time

class VirtualTimeTestCase(unittest.TestCase):
    """A MappingStorage database with queue '' and a dispatcher on a
    started test reactor."""

    def setUp(self):
        _reset()
        zope.component.testing.setUp()
        self.uuid = uuid.uuid1()
        set_up_components(self.uuid)
        self.log = zope.testing.loggingsupport.InstalledHandler(
            'zc.async', level=1)
        self.addCleanup(self.log.uninstall)
        self.db = ZODB.DB(None)
        self.conn = self.db.open()
        self.root = self.conn.root()
        self.root[interfaces.KEY] = zc.asynchronous.queue.Queues()
        self.queue = self.root[interfaces.KEY][''] = \
            zc.asynchronous.queue.Queue()
        transaction.commit()
        self.reactor = testing.Reactor()
        self.reactor.start()
        self.dispatcher = Dispatcher(self.db, self.reactor)

    def tearDown(self):
        for event_ in events.values():
            event_.set()
        testing.tear_down_dispatcher(self.dispatcher)
        transaction.abort()
        self.conn.close()
        self.db.close()
        dispatcher_module.clear()
        zope.component.testing.tearDown()

    def put(self, call, *args, **kw):
        job = self.queue.put(zc.asynchronous.job.Job(call, *args), **kw)
        transaction.commit()
        return job

    def da(self):
        transaction.begin()
        return self.queue.dispatchers[self.uuid]

    def messages(self, level):
        return [record.getMessage() for record in self.log.records
                if record.levelname == level]


class RegistryTests(VirtualTimeTestCase):

    def test_registered_under_its_uuid(self):
        self.assertIs(dispatcher_module.get(), self.dispatcher)
        self.assertIs(dispatcher_module.get(self.uuid), self.dispatcher)
        self.assertIsNone(dispatcher_module.get(uuid.uuid1()))
        self.assertEqual(dispatcher_module.get(uuid.uuid1(), 'x'), 'x')

    def test_one_dispatcher_per_uuid(self):
        with self.assertRaises(ValueError) as raised:
            Dispatcher(self.db, self.reactor)
        self.assertEqual(str(raised.exception),
                         'dispatcher for this UUID is already registered')

    def test_pop_and_clear(self):
        self.assertIs(dispatcher_module.pop(), self.dispatcher)
        self.assertIsNone(dispatcher_module.get())
        with self.assertRaises(KeyError):
            dispatcher_module.pop()
        other = Dispatcher(self.db, self.reactor, uuid=uuid.uuid1())
        dispatcher_module.clear()
        self.assertIsNone(dispatcher_module.get(other.UUID))

    def test_defaults_and_attributes(self):
        d = self.dispatcher
        self.assertIs(d.db, self.db)
        self.assertIs(d.reactor, self.reactor)
        self.assertEqual(d.poll_interval, 5)
        self.assertEqual(d.UUID, self.uuid)
        self.assertEqual((d.polls.size, d.jobs.size), (400, 200))
        self.assertEqual((d.queues, d.dead_pools), ({}, []))
        self.assertIs(d.activated, False)
        self.assertIsNone(d.conn)
        self.assertIsNone(d.thread)

    def test_getId(self):
        self.assertEqual(getId(self.queue),
                         (ZODB.utils.u64(self.queue._p_oid), 'unnamed'))


class ActivationTests(VirtualTimeTestCase):

    def test_pool_sizes_follow_activation_and_agents(self):
        self.assertEqual(self.db.getPoolSize(), 7)
        self.dispatcher.activate()
        self.assertEqual(self.db.getPoolSize(), 8)  # the poll connection
        self.assertEqual(self.reactor.time_flies(1), 1)
        self.assertEqual(self.db.getPoolSize(), 11)  # + agent 'main' (3)
        self.reactor.stop()
        self.assertEqual(self.db.getPoolSize(), 7)
        self.assertIs(self.dispatcher.activated, False)
        self.assertEqual(
            self.messages('INFO')[:1],
            ['attempting to activate dispatcher %s' % (self.uuid,)])
        self.assertIn('deactivated dispatcher %s' % (self.uuid,),
                      self.messages('INFO'))

    def test_activation_state_and_errors(self):
        self.dispatcher.activate()
        self.assertEqual(self.dispatcher.activated,
                         datetime.datetime(2006, 8, 10, 15, 44, 22, 211))
        with self.assertRaises(ValueError) as raised:
            self.dispatcher.activate()
        self.assertEqual(str(raised.exception), 'already activated')
        self.dispatcher.deactivate()
        with self.assertRaises(ValueError) as raised:
            self.dispatcher.deactivate()
        self.assertEqual(str(raised.exception), 'not activated')

    def test_polls_every_interval_once_running(self):
        self.dispatcher.activate()
        self.assertEqual(self.reactor.time_flies(1), 1)  # callWhenRunning
        self.assertEqual(self.reactor.time_flies(3), 0)
        self.assertEqual(self.reactor.time_flies(2), 1)
        self.assertEqual(self.reactor.time_flies(10), 2)
        self.assertEqual(len(self.dispatcher.polls), 4)

    def test_first_poll_registers_activates_and_pings(self):
        self.dispatcher.activate()
        self.reactor.time_flies(1)
        poll = self.dispatcher.getPollInfo()
        self.assertIsInstance(poll, dispatcher_module.PollInfo)
        self.assertEqual(poll, {'': {'main': {
            'size': 3, 'len': 0, 'error': None, 'new jobs': [],
            'active jobs': []}}})
        self.assertEqual(poll.utc_timestamp,
                         datetime.datetime(2006, 8, 10, 15, 44, 22, 211))
        da = self.da()
        self.assertTrue(da.activated)
        self.assertFalse(da.dead)
        self.assertEqual(da.last_ping.value, testing._START)
        self.assertEqual(list(da), ['main'])

    def test_missing_queues_mapping_polls_nothing(self):
        del self.root[interfaces.KEY]
        transaction.commit()
        self.dispatcher.activate()
        self.reactor.time_flies(1)
        self.assertEqual(self.dispatcher.getPollInfo(), {})
        self.assertEqual(len(self.dispatcher.polls), 1)

    def test_pings_are_written_once_per_ping_interval(self):
        self.dispatcher.activate()
        self.reactor.time_flies(1)
        first = self.da().last_ping.value
        self.reactor.time_flies(20)
        self.assertEqual(self.da().last_ping.value, first)
        self.reactor.time_flies(15)
        self.assertGreaterEqual(
            self.da().last_ping.value - first, datetime.timedelta(seconds=30))

    def test_deactivation_deactivates_records(self):
        self.dispatcher.activate()
        self.reactor.time_flies(1)
        self.reactor.stop()
        da = self.da()
        self.assertFalse(da.activated)
        self.assertIsNone(self.dispatcher.conn)
        self.assertEqual(self.dispatcher.queues, {})
        self.assertEqual(len(self.dispatcher.dead_pools), 1)

    def test_reactivation_clears_history(self):
        self.dispatcher.activate()
        self.reactor.time_flies(6)
        self.assertEqual(len(self.dispatcher.polls), 2)
        self.dispatcher.deactivate()
        self.assertEqual(len(self.dispatcher.polls), 2)  # kept to diagnose
        self.dispatcher.activate()
        self.assertEqual(len(self.dispatcher.polls), 0)
        self.reactor.time_flies(1)
        self.assertEqual(len(self.dispatcher.polls), 1)
        self.assertTrue(self.da().activated)


class AnotherProcessTests(VirtualTimeTestCase):

    def test_live_record_with_our_uuid_is_left_alone_until_dead(self):
        # Given a record for our UUID, activated by a process still alive,
        self.queue.dispatchers.register(self.uuid)
        self.queue.dispatchers[self.uuid].activate()
        transaction.commit()
        # when we poll,
        self.dispatcher.activate()
        self.reactor.time_flies(1)
        # then we skip the queue and say why,
        self.assertEqual(self.dispatcher.getPollInfo(), {'': None})
        error, = self.messages('ERROR')
        self.assertTrue(error.startswith(
            'UUID %s already activated in queue  (oid %d): another '
            'process?' % (self.uuid, ZODB.utils.u64(self.queue._p_oid))))
        self.reactor.time_flies(30)
        self.assertEqual(self.dispatcher.getPollInfo(), {'': None})
        # and once the record is dead, we clean it and take it over.
        self.reactor.time_flies(40)
        self.assertEqual(list(self.dispatcher.getPollInfo()['']), ['main'])
        da = self.da()
        self.assertTrue(da.activated)
        self.assertFalse(da.dead)

    def test_dead_sibling_is_deactivated_by_our_ping(self):
        sibling = uuid.uuid1()
        self.queue.dispatchers.register(sibling)
        self.queue.dispatchers[sibling].activate()
        self.queue.dispatchers.ping(sibling)
        self.queue.dispatchers[sibling].ping_death_interval = \
            datetime.timedelta(seconds=10)
        transaction.commit()
        self.dispatcher.activate()
        self.reactor.time_flies(1)
        self.assertTrue(self.queue.dispatchers[sibling].activated)
        self.reactor.time_flies(15)
        transaction.begin()
        record = self.queue.dispatchers[sibling]
        self.assertFalse(record.activated)
        self.assertTrue(record.dead)
        self.assertTrue(self.da().activated)


class JobTests(VirtualTimeTestCase):

    def setUp(self):
        super().setUp()
        self.dispatcher.activate()
        self.reactor.time_flies(1)

    def test_job_runs_and_is_recorded(self):
        job = self.put(operator.mul, 14, 3)
        self.reactor.wait_for(job)
        self.assertEqual(job.result, 42)
        jobid = getId(job)
        info = self.dispatcher.getJobInfo(*jobid)
        self.assertEqual(sorted(info), [
            'agent', 'call', 'completed', 'failed', 'poll id', 'queue',
            'quota names', 'reassigned', 'result', 'started', 'thread'])
        self.assertEqual(info['result'], '42')
        self.assertEqual((info['agent'], info['queue']), ('main', ''))
        self.assertEqual(info['call'], repr(job))
        self.assertFalse(info['failed'] or info['reassigned'])
        self.assertEqual(info['quota names'], ())
        self.assertIsInstance(info['thread'], int)
        self.assertIsNone(info['completed'].tzinfo)
        self.assertLessEqual(info['started'], info['completed'])
        poll = self.dispatcher.getPollInfo(at=info['poll id'])
        self.assertEqual(poll['']['main']['new jobs'], [jobid])
        self.assertEqual(self.dispatcher.getJobInfo(jobid[0]), info)
        self.assertEqual(self.dispatcher.getActiveJobIds(), [])
        trace = [record.getMessage() for record in self.log.records
                 if record.name == 'zc.async.trace']
        self.assertIn('starting in thread %d: %r' % (info['thread'], job),
                      trace)
        self.assertIn('completed in thread %d: %r' % (info['thread'], job),
                      trace)

    def test_failure_is_recorded_with_its_traceback(self):
        job = self.put(fail_with_value_error)
        self.reactor.wait_for(job)
        info = self.dispatcher.getJobInfo(*getId(job))
        self.assertTrue(info['failed'])
        self.assertIn('ValueError: boom', info['result'])

    def test_long_results_are_truncated(self):
        job = self.put(operator.mul, 'x', 20000)
        self.reactor.wait_for(job)
        result = self.dispatcher.getJobInfo(*getId(job))['result']
        self.assertEqual(len(result), 10000 + len('\n[...TRUNCATED...]'))
        self.assertTrue(result.endswith('\n[...TRUNCATED...]'))

    def test_running_job_is_active_and_then_reassigned_if_gone(self):
        job = self.put(blocked, 'a')
        self.reactor.time_flies(5)
        testing.wait_for_start(job)
        jobid = getId(job)
        self.assertEqual(self.dispatcher.getActiveJobIds(), [jobid])
        self.assertEqual(self.dispatcher.getActiveJobIds(queue=''), [jobid])
        self.assertEqual(self.dispatcher.getActiveJobIds(agent='x'), [])
        self.assertIsNotNone(self.dispatcher.getJobInfo(*jobid)['started'])
        self.assertFalse(self.dispatcher.getJobInfo(*jobid)['reassigned'])
        # A sibling thought we were dead and took the job away (and our
        # agent, now of size 0, claims nothing any more).
        da = self.da()
        da['main'].size = 0
        da.deactivate()
        transaction.commit()
        self.reactor.time_flies(5)
        self.assertTrue(self.dispatcher.getJobInfo(*jobid)['reassigned'])
        # Our worker's attempt then ends with the job refusing its result.
        event('a').set()
        self.reactor._settle([job])
        self.assertTrue(self.dispatcher.getJobInfo(*jobid)['reassigned'])
        self.assertEqual(self.dispatcher.getActiveJobIds(), [])
        self.assertTrue(any('was reassigned' in message
                            for message in self.messages('ERROR')))

    def test_job_completed_while_pending_is_dropped_from_the_agent(self):
        job = self.put(operator.mul, 6, 7)
        job.fail()
        transaction.commit()
        self.reactor.time_flies(5)
        self.reactor._settle([job])
        self.assertIn('job already completed?', self.messages('ERROR'))
        da = self.da()
        self.assertEqual(len(da['main']), 0)
        self.assertEqual(list(da['main'].completed), [job])
        self.assertIsInstance(job.result, twisted.python.failure.Failure)

    def test_a_thread_that_dies_is_replaced(self):
        pool = self.dispatcher.queues['']['main']
        before = list(pool.threads)
        job = self.put(exit_thread)
        self.reactor.time_flies(5)
        wait_until(lambda: not all(t.is_alive() for t in before))
        wait_until(lambda: self.reactor._let_threads_work(0.01)
                   or len([t for t in pool.threads if t.is_alive()]) == 3)
        self.assertEqual(len(pool.threads), 3)
        self.assertNotEqual(pool.threads, before)
        self.assertEqual(pool.getSize(), 3)
        transaction.begin()
        self.assertEqual(job.status, interfaces.ACTIVE)  # as if killed

    def test_unknown_and_ambiguous_job_ids(self):
        with self.assertRaises(KeyError):
            self.dispatcher.getJobInfo(999, 'unnamed')
        with self.assertRaises(ValueError):
            self.dispatcher.getJobInfo(999)
        info = {'completed': None, 'reassigned': False}
        self.dispatcher.jobs[(999, 'unnamed')] = info
        self.dispatcher.jobs[(999, 'async')] = info
        with self.assertRaises(ValueError) as raised:
            self.dispatcher.getJobInfo(999)
        self.assertEqual(str(raised.exception), 'ambiguous database name')

    def test_statistics(self):
        good = self.put(operator.mul, 6, 7)
        bad = self.put(fail_with_value_error)
        self.reactor.wait_for(good, bad)
        self.reactor.time_flies(5)
        stats = self.dispatcher.getStatistics()
        self.assertEqual(
            (stats['started'], stats['successful'], stats['failed'],
             stats['unknown']), (2, 1, 1, 0))
        self.assertEqual(stats['shortest successful'], getId(good))
        self.assertEqual(stats['longest successful'], getId(good))
        self.assertEqual(stats['longest failed'], getId(bad))
        self.assertIsNone(stats['longest active'])
        # A13: chronological
        self.assertEqual(stats['statistics start'],
                         datetime.datetime(2006, 8, 10, 15, 44, 22, 211))
        self.assertLess(stats['statistics start'], stats['statistics end'])
        self.assertEqual(stats['statistics end'],
                         self.dispatcher.getPollInfo().utc_timestamp)
        empty = self.dispatcher.getStatistics(queue='nope')
        self.assertEqual(empty['started'], 0)
        self.assertIsNone(empty['shortest failed'])

    def test_pools_follow_agent_sizes_and_removal(self):
        da = self.da()
        da['main'].size = 5
        da['extra'] = zc.asynchronous.agent.Agent(size=2)
        transaction.commit()
        self.reactor.time_flies(5)
        pools = self.dispatcher.queues['']
        self.assertEqual(
            {name: pool.getSize() for name, pool in pools.items()},
            {'main': 5, 'extra': 2})
        self.assertEqual(self.db.getPoolSize(), 7 + 1 + 5 + 2)
        del self.da()['extra']
        transaction.commit()
        self.reactor.time_flies(5)
        self.assertEqual(list(self.dispatcher.queues['']), ['main'])
        self.assertEqual(self.dispatcher.dead_pools[-1].getSize(), 0)
        self.assertEqual(self.db.getPoolSize(), 7 + 1 + 5)
        self.reactor.stop()
        self.assertEqual(self.db.getPoolSize(), 7)


class HistoryTests(VirtualTimeTestCase):

    def setUp(self):
        super().setUp()
        dispatcher_module.clear()
        self.dispatcher = Dispatcher(self.db, self.reactor, jobs_size=2,
                                     polls_size=3)
        self.dispatcher.activate()

    def test_history_sizes(self):
        self.reactor.time_flies(21)
        self.assertEqual(len(self.dispatcher.polls), 3)
        jobs = [self.put(operator.mul, i, 2) for i in range(3)]
        self.reactor.wait_for(*jobs)
        self.assertEqual(list(self.dispatcher.jobs),
                         [getId(job) for job in jobs[1:]])

    def test_poll_lookups(self):
        self.reactor.time_flies(11)  # polls at 0, 5, 10 s
        newest, middle, oldest = self.dispatcher.iterPolls()
        self.assertIs(self.dispatcher.getPollInfo(), newest)
        self.assertIs(self.dispatcher.getPollInfo(at=middle.key), middle)
        self.assertIs(self.dispatcher.getPollInfo(before=middle.key), oldest)
        self.assertIs(self.dispatcher.getPollInfo(
            at=middle.utc_timestamp + datetime.timedelta(seconds=1)), middle)
        self.assertIs(self.dispatcher.getPollInfo(
            before=middle.utc_timestamp), oldest)
        self.assertIsNone(self.dispatcher.getPollInfo(before=oldest.key))
        self.assertEqual(
            list(self.dispatcher.iterPolls(since=middle.key)),
            [newest, middle])
        self.assertEqual(
            list(self.dispatcher.iterPolls(
                since=middle.utc_timestamp.replace(tzinfo=UTC))),
            [newest, middle])
        self.assertEqual(list(self.dispatcher.iterPolls(count=1)), [newest])
        with self.assertRaises(ValueError):
            self.dispatcher.getPollInfo(at=1, before=1)


class StatusTests(VirtualTimeTestCase):

    def status(self):
        return self.dispatcher.getStatusInfo()

    def test_statuses(self):
        self.assertEqual(self.status(), {
            'status': 'STOPPED', 'poll interval': datetime.timedelta(0, 5),
            'time since last poll': None, 'uptime': None,
            'uuid': self.uuid})
        self.dispatcher.activate()
        self.assertEqual(self.status()['status'], dispatcher_module.STARTING)
        testing.set_now(testing._START + datetime.timedelta(seconds=6))
        self.assertEqual(self.status()['status'], dispatcher_module.STUCK)
        self.reactor.time_flies(1)
        status = self.status()
        self.assertEqual(status['status'], dispatcher_module.RUNNING)
        self.assertEqual(status['uptime'], datetime.timedelta(seconds=7))
        self.assertEqual(status['time since last poll'],
                         datetime.timedelta(seconds=1))
        testing.set_now(testing._START + datetime.timedelta(seconds=13))
        self.assertEqual(self.status()['status'], dispatcher_module.STUCK)
        self.dispatcher.deactivate()
        self.assertEqual(self.status()['status'], dispatcher_module.STOPPED)


class InstantDispatchVirtualTests(VirtualTimeTestCase):
    """Wake-ups, driven deterministically by a test reactor that opts in.
    """

    def setUp(self):
        super().setUp()
        self.reactor.instant_dispatch = True
        self.dispatcher.activate()
        self.reactor.time_flies(1)

    def pending_polls(self):
        return [call for call in self.reactor.calls if call.active()]

    def test_commit_to_a_queue_wakes_a_poll_now(self):
        self.assertFalse(self.reactor.time_passes())  # nothing due now
        job = self.put(operator.mul, 6, 7)
        self.assertTrue(self.reactor.time_passes())  # the wake-up poll
        self.assertEqual(len(self.dispatcher.polls), 2)
        self.assertEqual(self.dispatcher.getPollInfo()['']['main']['new jobs'],
                         [getId(job)])
        # The heartbeat now follows poll_interval after this poll.
        beat, = self.pending_polls()
        self.assertEqual(beat.getTime(), testing._START
                         + datetime.timedelta(seconds=1 + 5))
        self.assertEqual(testing.wait_for_result(job), 42)

    def test_own_claims_and_unrelated_commits_do_not_wake(self):
        self.put(operator.mul, 6, 7)
        self.assertTrue(self.reactor.time_passes())
        self.reactor._let_threads_work(2)
        self.assertFalse(self.reactor.time_passes())
        self.root['other'] = 1
        transaction.commit()
        self.assertFalse(self.reactor.time_passes())

    def release_first_then_see_both_done(self, first, second):
        event('first').set()
        deadline = time.monotonic() + 10
        while (_status(second) != interfaces.COMPLETED
               and time.monotonic() < deadline):
            self.reactor._let_threads_work(0.01)  # runs the worker reports
        transaction.begin()
        self.assertEqual(first.result, 'first')
        self.assertEqual(second.result, 42)

    def test_full_agent_wakes_when_a_job_finishes(self):
        self.da()['main'].size = 1
        transaction.commit()
        self.reactor.time_flies(5)
        first = self.put(blocked, 'first')
        second = self.put(operator.mul, 6, 7)
        self.assertTrue(self.reactor.time_passes())
        transaction.begin()
        self.assertEqual(len(self.queue), 1)
        self.assertEqual(self.reactor.time_flies(0), 0)  # no beat is due
        self.release_first_then_see_both_done(first, second)

    def test_new_work_does_not_wake_a_dispatcher_with_no_idle_thread(self):
        self.da()['main'].size = 1
        transaction.commit()
        self.reactor.time_flies(5)
        first = self.put(blocked, 'first')
        self.assertTrue(self.reactor.time_passes())
        event('started first').wait(10)
        polls = len(self.dispatcher.polls)
        transaction.begin()  # a MappingStorage resolves no conflict
        second = self.put(operator.mul, 6, 7)
        self.reactor.time_passes()  # the wake-up finds no room: no poll
        self.assertEqual(len(self.dispatcher.polls), polls)
        self.release_first_then_see_both_done(first, second)

    def test_installing_the_queues_wakes_a_poll(self):
        del self.root[interfaces.KEY]
        transaction.commit()
        self.reactor.time_flies(5)
        self.assertEqual(self.dispatcher.getPollInfo(), {})
        self.root[interfaces.KEY] = zc.asynchronous.queue.Queues()
        self.root[interfaces.KEY][''] = zc.asynchronous.queue.Queue()
        transaction.commit()
        self.assertTrue(self.reactor.time_passes())
        self.assertEqual(list(self.dispatcher.getPollInfo()), [''])

    def test_deactivation_removes_the_hook(self):
        adapter = self.db._mvcc_storage
        self.assertIn('invalidate', vars(adapter))
        self.assertIn('_invalidate_finish', vars(adapter))
        self.dispatcher.deactivate()
        self.assertNotIn('invalidate', vars(adapter))
        self.assertNotIn('_invalidate_finish', vars(adapter))
        self.put(operator.mul, 6, 7)
        self.assertFalse(self.reactor.time_passes())


def _status(job):
    transaction.begin()
    return job.status


class PollErrorTests(VirtualTimeTestCase):

    def test_claim_errors_go_to_the_poll_info_and_polling_goes_on(self):
        self.dispatcher.activate()
        self.reactor.time_flies(1)
        agent = self.da()['main']
        agent.chooser = _broken_chooser
        transaction.commit()
        self.reactor.time_flies(5)
        info = self.dispatcher.getPollInfo()['']['main']
        self.assertIsInstance(info['error'], twisted.python.failure.Failure)
        self.assertIn('chooser trouble', info['error'].getTraceback())
        self.assertEqual(info['new jobs'], [])
        self.assertIn('chooser trouble', str(self.da()['main'].failure.value))
        agent = self.da()['main']
        agent.chooser = None
        transaction.commit()
        self.reactor.time_flies(5)
        self.assertIsNone(self.dispatcher.getPollInfo()['']['main']['error'])


def _broken_chooser(agent):
    raise RuntimeError('chooser trouble')


# ----------------------------------------------------------- live runs

class LiveTests(DispatcherTestCase):

    def setUp(self):
        _reset()
        super().setUp()
        self.addCleanup(lambda: [e.set() for e in list(events.values())])

    def test_put_run_result(self):
        live = self.start()
        job = self.put(operator.mul, 14, 3)
        self.assertEqual(testing.wait_for_result(job), 42)
        info = live.dispatcher.getJobInfo(*getId(job))
        self.assertEqual(info['result'], '42')
        self.assertIsNotNone(info['completed'])

    def test_local_inside_a_job(self):
        live = self.start()
        job = self.put(whoami)
        self.assertEqual(testing.wait_for_result(job),
                         ('main', str(live.dispatcher.UUID),
                          interfaces.ACTIVE, ''))

    def test_callbacks(self):
        self.start()
        job = self.queue.put(zc.asynchronous.job.Job(operator.mul, 21, 2))
        callback = job.addCallback(report_result)
        transaction.commit()
        testing.wait_for_result(job)
        transaction.begin()
        self.assertEqual(callback.status, interfaces.COMPLETED)
        self.assertEqual(callback.result, 'I got result 42')

    def test_failure_keeps_its_traceback(self):
        live = self.start()
        job = self.put(fail_with_value_error)
        failure = testing.wait_for_result(job)
        self.assertIsInstance(failure, twisted.python.failure.Failure)
        self.assertIn('fail_with_value_error', failure.getTraceback())
        self.assertIn('ValueError: boom', failure.getTraceback())
        self.assertTrue(live.dispatcher.getJobInfo(*getId(job))['failed'])

    def test_conflict_is_retried(self):
        self.start()
        job = self.put(conflict_once)
        self.assertEqual(testing.wait_for_result(job), 42)
        self.assertEqual(attempts['conflict'], 2)

    def test_quota_serialises_jobs(self):
        self.queue.quotas.create('serial', size=1)
        first = self.queue.put(zc.asynchronous.job.Job(timed, 'first', 1))
        second = self.queue.put(zc.asynchronous.job.Job(timed, 'second', 2))
        first.quota_names = second.quota_names = ('serial',)
        transaction.commit()
        self.start(poll_interval=0.1)
        wait_until(lambda: log)
        # Several polls later, the second job still waits for the first.
        live = self.live[0]
        testing.get_poll(live.dispatcher)
        testing.get_poll(live.dispatcher)
        self.assertEqual([entry[:2] for entry in log], [('first', 'start')])
        event('first').set()
        event('second').set()
        self.assertEqual(testing.wait_for_result(second), 2)
        self.assertEqual([entry[:2] for entry in log], [
            ('first', 'start'), ('first', 'end'),
            ('second', 'start'), ('second', 'end')])

    def test_serial_and_parallel(self):
        self.start(poll_interval=0.1)
        job_module = zc.asynchronous.job
        serial = self.put(job_module.serial(
            job_module.Job(add, 1, 2), job_module.Job(add, 3, 4),
            postprocess=job_module.Job(sum_results)))
        parallel = self.put(job_module.parallel(
            job_module.Job(add, 10), job_module.Job(add, 20, 30),
            postprocess=job_module.Job(sum_results)))
        self.assertEqual(testing.wait_for_result(serial), 10)
        self.assertEqual(testing.wait_for_result(parallel), 60)

    def test_returned_job_and_deferred(self):
        self.start()
        handed = self.put(hand_off)
        deferred = self.put(deferred_answer)
        self.assertEqual(testing.wait_for_result(handed), 42)
        self.assertEqual(testing.wait_for_result(deferred), 42)

    def test_live_annotations(self):
        self.start()
        job = self.put(converse)
        self.assertEqual(testing.wait_for_annotation(job, 'progress'), 0.5)
        job.annotations['reply'] = 'HIYA'
        transaction.commit()
        self.assertEqual(testing.wait_for_result(job), ('HIYA', 'MISSING'))

    def test_threaded_polls(self):
        live = self.start()
        live.call(live.dispatcher.deactivate)
        live.call(live.dispatcher.activate, True)
        self.assertIsNone(live.dispatcher.conn)
        job = self.put(operator.mul, 6, 7)
        self.assertEqual(testing.wait_for_result(job), 42)
        self.assertEqual(live.dispatcher.getPollInfo()['']['main']['size'], 3)

    def test_stopping_deactivates(self):
        live = self.start()
        testing.get_poll(live.dispatcher, 0)
        live.stop()
        testing.wait_for_deactivation(live.dispatcher)
        transaction.begin()
        self.assertFalse(self.queue.dispatchers[self.uuid].activated)


class InstantDispatchTests(DispatcherTestCase):

    def setUp(self):
        _reset()
        super().setUp()

    def test_idle_dispatcher_starts_new_work_long_before_the_next_poll(self):
        # Given a dispatcher that has polled and will not poll for 30 s,
        live = self.start(poll_interval=30)
        testing.get_poll(live.dispatcher, 0)
        # a job committed now starts (and ends) within a few seconds.
        job = self.put(operator.mul, 6, 7)
        self.assertEqual(testing.wait_for_result(job, seconds=5), 42)
        job = self.put(operator.mul, 7, 7)
        self.assertEqual(testing.wait_for_result(job, seconds=5), 49)

    def test_queued_work_flows_when_a_full_agent_frees_up(self):
        live = self.start(poll_interval=30)
        testing.get_poll(live.dispatcher, 0)
        # (Changing an agent does not wake the dispatcher; the wake-up poll
        # for the jobs claims just one, as the agent's size says.)
        transaction.begin()
        self.queue.dispatchers[self.uuid]['main'].size = 1
        transaction.commit()
        jobs = [self.queue.put(zc.asynchronous.job.Job(operator.mul, i, 2))
                for i in range(4)]
        transaction.commit()
        self.assertEqual([testing.wait_for_result(job, seconds=5)
                          for job in jobs], [0, 2, 4, 6])


class ZEOInstantDispatchTests(unittest.TestCase):
    """Commits of other ZEO clients wake the dispatcher too."""

    layer = processes.ZEOLayer

    def setUp(self):
        zope.component.testing.setUp()
        self.uuid = uuid.uuid1()
        set_up_components(self.uuid)
        server = processes.ZEOLayer.server
        self.worker_db, self.client_db = server.open_db(), server.open_db()
        self.tm = transaction.TransactionManager()
        self.conn = self.client_db.open(self.tm)
        root = self.conn.root()
        root[interfaces.KEY] = zc.asynchronous.queue.Queues()
        self.queue = root[interfaces.KEY][''] = zc.asynchronous.queue.Queue()
        self.tm.commit()
        # (ZEO delivers the commit to the other client asynchronously.)
        wait_until(lambda: _sees_queues(self.worker_db))
        self.live = LiveDispatcher(self.worker_db, poll_interval=30,
                                   uuid=self.uuid)

    def tearDown(self):
        self.live.stop()
        self.tm.abort()
        self.conn.close()
        self.worker_db.close()
        self.client_db.close()
        dispatcher_module.clear()
        zope.component.testing.tearDown()

    def test_job_put_by_another_client_starts_at_once(self):
        testing.get_poll(self.live.dispatcher, 0)
        for n in range(3):
            job = self.queue.put(zc.asynchronous.job.Job(operator.mul, n, 7))
            self.tm.commit()
            self.assertEqual(testing.wait_for_result(job, seconds=5), 7 * n,
                             n)


def _sees_queues(db):
    with db.transaction() as conn:
        return interfaces.KEY in conn.root()


# ------------------------------------------------------ catastrophes

class CatastropheTests(DispatcherTestCase):
    """reference.md 3.6, C5 to C9, with dispatchers in this process."""

    def setUp(self):
        _reset()
        super().setUp()
        self.addCleanup(lambda: [e.set() for e in list(events.values())])

    def put_with_callback(self, name, func=crash_first_attempt):
        job = self.queue.put(zc.asynchronous.job.Job(func, name))
        callback = job.addCallback(report_result)
        transaction.commit()
        return job, callback

    def assert_recovered(self, job, callback, seconds=10):
        self.assertEqual(testing.wait_for_result(job, seconds), 42)
        transaction.begin()
        wait_until(lambda: _status(callback) == interfaces.COMPLETED)
        self.assertEqual(callback.result, 'I got result 42')
        self.assertEqual(job.getRetryPolicy().data.get('interruptions'), 1)

    def shorten_death(self, uuid_, seconds=1, ping_seconds=None):
        transaction.begin()
        da = self.queue.dispatchers[uuid_]
        da.ping_death_interval = datetime.timedelta(seconds=seconds)
        if ping_seconds is not None:
            da.ping_interval = datetime.timedelta(seconds=ping_seconds)
        transaction.commit()

    def test_C5_graceful_shutdown_during_a_job(self):
        live = self.start()
        job, callback = self.put_with_callback('C5')
        event('started C5').wait(10)
        # As SIGTERM does, once the job did not finish within the timeout:
        # it is handed back, and its thread goes on.
        live.stop_reactor(timeout=0.1)
        transaction.begin()
        self.assertEqual(job.status, interfaces.ACTIVE)
        wrapper, = list(self.queue)
        self.assertEqual(wrapper.callable, job.handleInterrupt)
        self.assertFalse(self.queue.dispatchers[self.uuid].activated)
        self.start()  # same UUID
        self.assert_recovered(job, callback)
        event('C5').set()  # the first attempt ends as if killed

    def test_C6_hard_crash_then_same_instance_restarts(self):
        crashed = self.start()
        job, callback = self.put_with_callback('C6')
        event('started C6').wait(10)
        crashed.crash()
        restarted = self.start(poll_interval=0.2)
        poll = testing.get_poll(restarted.dispatcher, 0)
        self.assertEqual(poll, {'': None})
        self.assertTrue(any('another process?' in message
                            for message in self.messages('ERROR')))
        transaction.begin()
        da = self.queue.dispatchers[self.uuid]
        self.assertTrue(da.activated)
        self.assertEqual(list(da['main']), [job])
        self.assertEqual(job.status, interfaces.ACTIVE)
        # Pings at each poll keep the revived record alive.
        self.shorten_death(self.uuid, 1, ping_seconds=0.05)
        self.assert_recovered(job, callback)
        transaction.begin()
        self.assertTrue(da.activated)
        self.assertFalse(da.dead)
        event('C6').set()

    def test_C7_hard_crash_with_sibling_recovery(self):
        crashed = self.start()
        job, callback = self.put_with_callback('C7')
        event('started C7').wait(10)
        crashed.crash()
        sibling = self.start(poll_interval=0.2, uuid=uuid.uuid1())
        testing.get_poll(sibling.dispatcher, 0)
        transaction.begin()
        da = self.queue.dispatchers[self.uuid]
        self.assertTrue(da.activated)
        self.assertEqual(list(da['main']), [job])
        self.shorten_death(self.uuid)
        testing.wait_for_death(da)
        self.assert_recovered(job, callback)
        transaction.begin()
        self.assertFalse(da.activated)
        self.assertTrue(da.dead)
        self.assertEqual(len(da['main']), 0)
        event('C7').set()

    def test_C9_false_death(self):
        # Given a dispatcher running a job, that polls slowly
        original = self.start(poll_interval=1, instant=False)
        job = self.put(hang_first_attempt, 'C9')
        event('started C9').wait(10)
        jobid = getId(job)
        wait_until(lambda: original.dispatcher.getActiveJobIds() == [jobid])
        # and a fast sibling, when the first seems dead,
        sibling = self.start(poll_interval=0.05, uuid=uuid.uuid1())
        self.shorten_death(self.uuid)
        # the sibling deactivates its record and runs the job itself;
        self.assertEqual(testing.wait_for_result(job, 10), 42)
        transaction.begin()
        self.assertEqual(job.agent.parent.UUID, sibling.dispatcher.UUID)
        self.assertIn(jobid, [
            jobid_ for poll in sibling.dispatcher.iterPolls()
            for jobid_ in poll['']['main']['new jobs']])
        # the original reactivates its record at its next ping and sees
        # that the job is gone;
        self.shorten_death(self.uuid, 60)
        wait_until(lambda: original.dispatcher.getJobInfo(*jobid)[
            'reassigned'])
        wait_until(lambda: any('not activated prior to ping' in message
                               for message in self.messages('CRITICAL')))
        # when its attempt ends, the job refuses the stale result.
        event('C9').set()
        wait_until(lambda: not original.dispatcher.getActiveJobIds())
        self.assertTrue(any('was reassigned' in message
                            for message in self.messages('ERROR')))
        transaction.begin()
        self.assertEqual(job.result, 42)

