"""What tests and tools written for zc.async 1.5 rely on, checked against
zc.async 2 (issue 12): mappings, testing helpers, texts and formats.

Each class names the 1.5 behaviour it pins down; deliberate differences
are in docs/porting.rst.
"""
import contextlib
import io
import operator
import threading
import uuid

import transaction
import twisted.internet.defer
import zope.component

import zc.asynchronous
import zc.asynchronous.agent
import zc.asynchronous.dispatcher
import zc.asynchronous.interfaces as interfaces
import zc.asynchronous.testing

from . import live
from .live import DispatcherTestCase
from .test_queue import DBTestCase


class MappingKeyTypeTests(DBTestCase):
    """A key of another type is simply absent (1.5's Python 2 compared any
    two keys; a BTree of Python 3 raises TypeError)."""

    def setUp(self):
        super().setUp()
        self.uuid = uuid.uuid1()
        self.queue.dispatchers.register(self.uuid)
        self.queue.dispatchers[self.uuid]['main'] = zc.asynchronous.agent.Agent()
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


class TestReactorTests(DispatcherTestCase):
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
