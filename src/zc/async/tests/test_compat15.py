"""What tests and tools written for zc.async 1.5 rely on, checked against
zc.async 2 (issue 12): mappings, testing helpers, texts and formats.

Each class names the 1.5 behaviour it pins down; deliberate differences
are in docs/porting.rst.
"""
import contextlib
import io
import logging
import operator
import threading
import unittest.mock
import uuid

import persistent
import transaction
import twisted.internet.defer
import zope.component
import ZODB.POSException

import zc.asynchronous
import zc.asynchronous.agent
import zc.asynchronous.dispatcher
import zc.asynchronous.interfaces as interfaces
import zc.asynchronous.job
import zc.asynchronous.monitor
import zc.asynchronous.monitordb
import zc.asynchronous.testing

from . import live
from . import test_job
from .live import DispatcherTestCase
from .test_queue import DBTestCase


class QueueTestCase(DBTestCase):
    """A database with queue '' (see test_queue) and a UUID."""

    def setUp(self):
        super().setUp()
        self.uuid = uuid.uuid1()


class MappingKeyTypeTests(QueueTestCase):
    """A key of another type is simply absent (1.5's Python 2 compared any
    two keys; a BTree of Python 3 raises TypeError)."""

    def setUp(self):
        super().setUp()
        self.queue.dispatchers.register(self.uuid)
        agents = self.queue.dispatchers[self.uuid]
        agents['main'] = zc.asynchronous.agent.Agent()
        self.queue.quotas.create('q')
        self.commit()

    def mappings(self):
        return {'queues': self.queues,
                'dispatchers': self.queue.dispatchers,
                'dispatcher agents': self.queue.dispatchers[self.uuid],
                'quotas': self.queue.quotas}

    def test_get_answers_the_default(self):
        for name, mapping in self.mappings().items():
            with self.subTest(name):
                self.assertIsNone(mapping.get(2))
                self.assertEqual(mapping.get(2, 'default'), 'default')
                self.assertIsNone(mapping.get(None))

    def test_in_is_False(self):
        for name, mapping in self.mappings().items():
            with self.subTest(name):
                self.assertNotIn(2, mapping)
                self.assertNotIn((1, 'x'), mapping)

    def test_getitem_is_a_KeyError(self):
        for name, mapping in self.mappings().items():
            with self.subTest(name):
                with self.assertRaises(KeyError) as caught:
                    mapping[2]
                self.assertEqual(caught.exception.args, (2,))

    def test_pop_answers_the_default_or_a_KeyError(self):
        for mapping in (self.queues, self.queue.dispatchers[self.uuid]):
            self.assertEqual(mapping.pop(2, 'default'), 'default')
            with self.assertRaises(KeyError):
                mapping.pop(2)
            with self.assertRaises(KeyError):
                del mapping[2]

    def test_keys_of_the_right_type_still_work(self):
        self.assertIs(self.queues.get(''), self.queue)
        self.assertIn(self.uuid, self.queue.dispatchers)
        self.assertIn('main', self.queue.dispatchers[self.uuid])
        self.assertEqual(self.queue.quotas.get('q').name, 'q')
        self.assertIsNone(self.queue.dispatchers.get(uuid.uuid1()))


# Jobs of the test-reactor tests (module level: jobs are pickled by name).

def imaginary_network_call():
    """1.5's example: a Deferred that another thread fires, through the
    reactor, a little later."""
    reactor = zc.asynchronous.local.getReactor()
    deferred = twisted.internet.defer.Deferred()

    def answer():
        zc.asynchronous.testing.time_sleep(0.3)
        reactor.callFromThread(deferred.callback, 'the answer')
    threading.Thread(target=answer, daemon=True).start()
    return deferred


RELEASE = threading.Event()


def wait_for_release():
    RELEASE.wait(60)
    return 'released'


def wait_for_reply(other):
    return zc.asynchronous.local.getLiveAnnotation(
        'reply', 'no reply', job=other, timeout=15, poll=0.1)


class TestReactorCase(DispatcherTestCase):
    """A dispatcher on zc.async.testing.Reactor, driven as 1.5 tests do."""

    def setUp(self):
        super().setUp()
        # 1.5's dispatcher.txt adds its agent itself, after the first poll.
        zope.component.getGlobalSiteManager().unregisterHandler(
            zc.asynchronous.agent.addMainAgentActivationHandler)
        self.reactor = zc.asynchronous.testing.Reactor()
        self.reactor.start()
        self.dispatcher = zc.asynchronous.dispatcher.Dispatcher(
            self.db, self.reactor)
        self.dispatcher.activate()

    def tearDown(self):
        if self.reactor.started:
            self.reactor.stop()  # deactivates the dispatcher
        live.end_pool_threads(self.dispatcher)
        super().tearDown()

    def add_agent(self):
        agent = zc.asynchronous.agent.Agent()
        self.queue.dispatchers[self.dispatcher.UUID]['main'] = agent
        transaction.commit()
        return agent


class TestReactorTests(TestReactorCase):
    """The test reactor's helpers behave as 1.5's."""

    def test_the_callers_connection_sees_what_a_poll_committed(self):
        self.assertEqual(self.reactor.time_flies(1), 1)
        # No transaction.abort() or begin() needed, as in 1.5:
        self.assertIn(self.dispatcher.UUID, self.queue.dispatchers)
        agent = self.add_agent()
        job = self.put(operator.mul, 6, 7)
        self.reactor.wait_for(job)
        self.assertEqual(job.result, 42)
        self.assertEqual(list(agent), [])
        self.assertEqual(len(agent.completed), 1)

    def test_wait_for_gives_other_threads_real_time(self):
        self.reactor.time_flies(1)
        self.add_agent()
        job = self.put(imaginary_network_call)
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            self.reactor.wait_for(job, attempts=50)  # up to 5 real seconds
        self.assertEqual(out.getvalue(), '')  # no TIME OUT
        self.assertEqual(job.result, 'the answer')

    def test_wait_for_times_out_after_its_attempts(self):
        self.reactor.time_flies(1)
        self.add_agent()
        RELEASE.clear()
        self.addCleanup(RELEASE.set)
        job = self.put(wait_for_release)
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            self.reactor.wait_for(job, attempts=2)
        self.assertEqual(out.getvalue(), 'TIME OUT\n')
        self.assertEqual(job.status, interfaces.ACTIVE)
        RELEASE.set()
        self.reactor.wait_for(job)
        self.assertEqual(job.result, 'released')

    def test_the_clock_moves_for_a_job_waiting_for_a_live_annotation(self):
        # The job waits up to 15 virtual seconds; letting 5 pass must not
        # wait for the job (1.5 compared real time, and its job gave up
        # after 17 real seconds).
        self.reactor.time_flies(1)
        self.add_agent()
        other = self.queue.put(len)
        job = self.put(wait_for_reply, other)
        self.reactor.time_flies(5)  # the job starts, and waits 15 seconds
        self.reactor.time_flies(5)
        self.assertEqual(job.status, interfaces.ACTIVE)
        self.assertNotIn('reply', other.annotations)
        other.annotations['reply'] = 'hello'
        transaction.commit()
        self.reactor.wait_for(job, poll_interval=1)
        self.assertEqual(job.result, 'hello')

    def test_a_live_annotation_times_out_on_the_virtual_clock(self):
        self.reactor.time_flies(1)
        self.add_agent()
        job = self.put(wait_for_reply, self.queue.put(len))
        self.reactor.time_flies(5)  # the job starts, and waits 15 seconds
        self.reactor.time_flies(14)
        self.assertEqual(job.status, interfaces.ACTIVE)
        self.reactor.wait_for(job, poll_interval=2)
        self.assertEqual(job.result, 'no reply')


class BadStatusMessageTests(QueueTestCase):
    """BadStatusError says what 1.5 said, word for word (doctests match the
    exception line)."""

    def check(self, message, attempt):
        with self.assertRaises(interfaces.BadStatusError) as caught:
            attempt()
        self.assertEqual(caught.exception.args, (message,))

    def test_messages(self):
        pending = self.queue.put(len)
        self.check('can only set callable when a job has NEW, PENDING, or '
                   'ASSIGNED status',
                   lambda: setattr(pending, 'callable', abs))
        self.check('can only set begin_after when a job has NEW status',
                   lambda: setattr(pending, 'begin_after', None))
        self.check('can only call a job with NEW or ASSIGNED status', pending)
        self.check('can only call ``handleInterrupt`` on a job with ACTIVE '
                   'status', pending.handleInterrupt)
        self.check('can only resumeCallbacks on a job with CALLBACKS status',
                   pending.resumeCallbacks)
        done = zc.asynchronous.job.Job(len, 'ab')
        self.root['done'] = done
        done()
        self.check('can only call a job with NEW or ASSIGNED status', done)
        self.check('can only set begin_by when a job has NEW or PENDING '
                   'status', lambda: setattr(done, 'begin_by', None))
        self.check('can only set quota_names when a job has NEW or PENDING '
                   'status', lambda: setattr(done, 'quota_names', ()))
        self.check('can only call fail on a job with NEW, PENDING, or '
                   'ASSIGNED status', done.fail)
        self.check('can only handleCallbackInterrupt on a job with ACTIVE '
                   'status', lambda: pending.handleCallbackInterrupt(done))


class LogTextTests(QueueTestCase):
    """Log messages that alerting rules match keep 1.5's words."""

    def test_ping_of_a_deactivated_dispatcher(self):
        self.queue.dispatchers.register(self.uuid)
        with self.assertLogs('zc.async.events', logging.CRITICAL) as logs:
            self.queue.dispatchers.ping(self.uuid)
        self.assertEqual(
            logs.records[0].getMessage(),
            "Dispatcher %r not activated prior to ping. This can indicate "
            "that the dispatcher's ping_death_interval is set too short, or "
            "that some transactions in the system are taking too long to "
            "commit. Activating, to correct the current problem, but if the "
            "dispatcher was inappropriately viewed as ``dead`` and "
            "deactivated, you should investigate the cause.  (Queue ''; the "
            "clocks of the machines may also be out of sync.)" % (self.uuid,))
        self.assertTrue(self.queue.dispatchers[self.uuid].activated)


class ReportTests(TestReactorCase):
    """The dispatcher's reports and the monitor's texts, as 1.5's."""

    def test_the_poll_log_shows_the_keys_in_1_5s_order(self):
        with self.assertLogs('zc.async.trace', logging.DEBUG) as logs:
            self.reactor.time_flies(1)
            self.add_agent()
            self.reactor.time_flies(5)
        self.assertRegex(
            logs.records[-1].getMessage(),
            r"^poll \d+: \{'': \{'main': \{'active jobs': \[\], 'error': "
            r"None, 'new jobs': \[\], 'len': 0, 'size': 3\}\}\}$")

    def test_status_info_keys(self):
        keys = {'poll interval', 'status', 'time since last poll', 'uptime',
                'uuid'}  # 1.5's code had 'uuid' running and stopped
        self.reactor.time_flies(1)
        self.assertEqual(set(self.dispatcher.getStatusInfo()), keys)
        self.reactor.stop()
        info = self.dispatcher.getStatusInfo()
        self.assertEqual(set(info), keys)
        self.assertEqual(info['status'], 'STOPPED')
        self.assertEqual(info['uuid'], self.dispatcher.UUID)

    def run_monitor(self, command, *words):
        out = io.StringIO()
        command(out, *words)
        return out.getvalue()

    def test_utcnow_is_bare(self):
        self.assertEqual(self.run_monitor(zc.asynchronous.monitor.async_,
                                          'utcnow'),
                         '2006-08-10T15:44:22.000211Z\n')

    def test_help_summaries(self):
        self.assertEqual(
            self.run_monitor(zc.asynchronous.monitor.async_, 'help'),
            "These are the tools available.  Usage for each tool is\n"
            "'async <tool name> [modifiers...]'.  Learn more about each\n"
            "tool using 'async help <tool name>'.\n"
            "\n"
            "UUID: Get instance UUID in hex.\n"
            "help: Get help on an async monitor tool.\n"
            "job: Local information about a job as of last poll, if known.\n"
            "jobs: Show active jobs in worker threads as of the instant.\n"
            "jobstats: Statistics on historical jobs as of last poll.\n"
            "poll: Get information about a single poll, defaulting to most "
            "recent.\n"
            "polls: Get information about recent polls, defaulting to most "
            "recent.\n"
            "status: Get a mapping of general zc.async dispatcher "
            "information.\n"
            "utcnow: Return the current time in UTC, in ISO 8601 format.\n")
        self.reactor.time_flies(1)
        self.assertEqual(
            self.run_monitor(zc.asynchronous.monitordb.asyncdb, 'help'),
            "These are the tools available.  Usage for each tool is\n"
            "'asyncdb <tool name> [modifiers...]'.  Learn more about each\n"
            "tool using 'asyncdb help <tool name>'.\n"
            "\n"
            "UUIDs: Return all active UUIDs.\n"
            "count: Count jobs in one or more states.\n"
            "help: Get help on an asyncdb monitor tool.\n"
            "job: Return details of job identified by integer oid.\n"
            "jobs: Return jobs in one or more states.\n"
            "jobstats: Return statistics about jobs in one or more states.\n"
            "lastcompleted: Return details of the most recently completed "
            "job.\n"
            "nextpending: Return details of the next job in queue to be "
            "performed.\n"
            "status: Return status of the agents of all queues and all "
            "active UUIDs.\n"
            "traceback: Return the traceback for the job identified by "
            "integer oid.\n")


# Jobs of the commit-sequence tests.

CALLS = []


def count_calls():
    """Changes nothing in the database (1.5's job.txt ``count_calls``)."""
    CALLS.append('called')
    return 42


def count_changing_calls(counter):
    """The same, but it changes a persistent object."""
    CALLS.append('called')
    counter.value += 1
    return 42


def raise_an_error(error):
    CALLS.append('called')
    raise error()


class Counter(persistent.Persistent):
    value = 0


class CommitSequenceTests(test_job.DatabaseTestCase):
    """The commits of a job whose result commit fails, counted as 1.5's
    job chapter counted them (by patching ``TransactionManager.commit``):
    the calls of ``commit`` numbered ``allowed`` commit, the next
    ``failures`` ones raise ``error``, and the rest commit."""

    def run_job(self, call, *args, allowed=(1,), failures=1,
                error=ValueError):
        del CALLS[:]
        job = self.root['j'] = zc.asynchronous.job.Job(call, *args)
        transaction.commit()
        commit = transaction.TransactionManager.commit
        numbers = []

        def patched(tm):
            numbers.append(len(numbers) + 1)
            refused = len(numbers) - len([n for n in allowed
                                          if n <= len(numbers)])
            if len(numbers) not in allowed and refused <= failures:
                raise error()
            commit(tm)
        with unittest.mock.patch.object(
                transaction.TransactionManager, 'commit', patched):
            res = job()
        return job, res, len(numbers)

    def test_a_commit_error_is_the_result(self):
        # 1: ACTIVE; 2: the result's commit fails; 3: the retry policy is
        # fetched (and stored), 4: asked; 5: the failure is stored;
        # 6, 7: resumeCallbacks completes the job.
        job, res, commits = self.run_job(count_calls)
        self.assertTrue(res.check(ValueError))
        self.assertIs(job.result, res)
        self.assertEqual(CALLS, ['called'])
        self.assertEqual(commits, 7)
        self.assertEqual(job.status, interfaces.COMPLETED)
        self.assertEqual(self.logged(logging.INFO, text='Commit failed'), [
            'Commit failed for %r (see subsequent traceback).  Prior to '
            'this, job succeeded with result: 42' % (job,)])

    def test_a_failed_outcome_is_logged_too(self):
        job, res, commits = self.run_job(raise_an_error, RuntimeError,
                                         allowed=(1, 2, 3))
        self.assertTrue(res.check(ValueError))
        self.assertEqual(CALLS, ['called'])
        lost = self.logged(logging.ERROR, text='Commit failed')
        self.assertEqual(len(lost), 1)
        self.assertIn('Prior to this, job failed with traceback:', lost[0])
        self.assertIn('RuntimeError', lost[0])

    def test_conflicts_run_a_changing_callable_again_five_times(self):
        # As in 1.5: 2, 5, 8, 11 and 14 (the results) fail; 3 and 4, 6 and
        # 7 ... fetch and ask the policy.
        job, res, commits = self.run_job(
            count_changing_calls, self.stored(Counter()), failures=5,
            allowed=(1, 3, 4, 6, 7, 9, 10, 12, 13),
            error=ZODB.POSException.ConflictError)
        self.assertTrue(res.check(ZODB.POSException.ConflictError))
        self.assertEqual(len(CALLS), 5)

    def test_a_changing_callable_succeeding_within_its_retries(self):
        job, res, commits = self.run_job(
            count_changing_calls, self.stored(Counter()), failures=2,
            allowed=(1, 3, 4, 6, 7), error=ZODB.POSException.ConflictError)
        self.assertEqual(res, 42)
        self.assertEqual(len(CALLS), 3)

    def test_the_policy_is_fetched_until_its_commit_succeeds(self):
        job, res, commits = self.run_job(
            count_changing_calls, self.stored(Counter()), failures=24,
            error=ZODB.POSException.ConflictError)
        self.assertEqual(res, 42)
        self.assertEqual(len(CALLS), 2)
        self.assertEqual(self.sleeps, [])

    def test_conflicts_do_not_run_a_callable_that_changed_nothing(self):
        # zc.async 2: the result alone is committed again; 1.5 ran the
        # callable again (five times in all, then failed).
        job, res, commits = self.run_job(
            count_calls, failures=5, error=ZODB.POSException.ConflictError)
        self.assertEqual(res, 42)
        self.assertEqual(CALLS, ['called'])
        self.assertEqual(commits, 7)  # ACTIVE, five conflicts, the result
        self.assertEqual(job.status, interfaces.COMPLETED)

    def stored(self, obj):
        self.root['counter'] = obj
        transaction.commit()
        return obj
