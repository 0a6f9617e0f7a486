"""Fixtures for tests that run dispatchers: components, queues, reactors.

Not a test module.  :class:`LiveDispatcher` runs a dispatcher on a real
Twisted ``SelectReactor`` in a daemon thread; :class:`DispatcherTestCase`
gives each test a throwaway FileStorage database with queue ``''``, the
components zc.async needs, and captured ``zc.async`` logs.
"""
import threading
import unittest
import uuid

import persistent.interfaces
import transaction
import transaction.interfaces
import twisted.internet.selectreactor
import zope.component
import zope.component.testing
import zope.testing.loggingsupport
import ZODB.interfaces

import zc.asynchronous._registry
import zc.asynchronous.agent
import zc.asynchronous.configure
import zc.asynchronous.dispatcher
import zc.asynchronous.interfaces
import zc.asynchronous.job
import zc.asynchronous.queue
import zc.asynchronous.shutdown
import zc.asynchronous.testing
import zc.asynchronous.twist
from zc.asynchronous.tests import processes


def set_up_components(instance_uuid):
    """Register what dispatchers and jobs look up, in the global registry.

    (``configure.base`` would also read the instance UUID file.)
    """
    registry = zope.component.getGlobalSiteManager()
    twist = zc.asynchronous.twist
    for required in (persistent.interfaces.IPersistent,
                     ZODB.interfaces.IConnection):
        registry.registerAdapter(
            twist.transactionManager, (required,),
            transaction.interfaces.ITransactionManager)
    registry.registerAdapter(
        twist.connection, (persistent.interfaces.IPersistent,),
        ZODB.interfaces.IConnection)
    for required in zc.asynchronous.configure.JOB_ADAPTED_TYPES:
        registry.registerAdapter(zc.asynchronous.job.Job, (required,),
                                 zc.asynchronous.interfaces.IJob)
    registry.registerUtility(instance_uuid, zc.asynchronous.interfaces.IUUID)
    registry.registerHandler(
        zc.asynchronous.agent.addMainAgentActivationHandler)


def wait_until(condition, seconds=10, message='condition never became true'):
    """Call ``condition`` until it is true; AssertionError after
    ``seconds``.  Returns the true value."""
    res = processes.poll(condition, seconds, 0.01)
    if not res:
        raise AssertionError(message)
    return res


class LiveDispatcher:
    """A dispatcher on a private Twisted reactor running in a thread."""

    def __init__(self, db, poll_interval=0.5, uuid=None, instant=True,
                 before_activate=None):
        self.reactor = twisted.internet.selectreactor.SelectReactor()
        if not instant:
            self.reactor.instant_dispatch = False
        self.dispatcher = zc.asynchronous.dispatcher.Dispatcher(
            db, self.reactor, poll_interval=poll_interval, uuid=uuid)
        if before_activate is not None:  # e.g. listeners for the first poll
            before_activate(self.dispatcher)
        self.dispatcher.activate()
        thread = threading.Thread(
            target=self.reactor.run, kwargs={'installSignalHandlers': False},
            daemon=True, name='reactor %s' % (self.dispatcher.UUID,))
        self.dispatcher.thread = thread
        thread.start()

    def call(self, func, *args):
        """Run ``func(*args)`` in the reactor thread; return its result."""
        done = threading.Event()
        box = []

        def run():
            try:
                box.append(func(*args))
            finally:
                done.set()
        self.reactor.callFromThread(run)
        assert done.wait(10), 'reactor did not answer'
        return box[0] if box else None

    def stop(self):
        """Stop the reactor (deactivating the dispatcher), join the threads
        and release the reactor's file descriptors."""
        try:
            if self.dispatcher.thread.is_alive():
                zc.asynchronous.testing.tear_down_dispatcher(self.dispatcher)
            else:  # stopped or crashed before: end what is left
                end_pool_threads(self.dispatcher)
        finally:
            self._unregister()
            # A stopped reactor keeps its waker's pipe open; close it now
            # that no worker thread can call the reactor any more.
            waker, self.reactor.waker = self.reactor.waker, None
            if waker is not None:
                self.reactor.removeReader(waker)
                waker.connectionLost(None)

    def stop_reactor(self, timeout=None):
        """Stop the dispatcher warmly, giving its running jobs up to
        ``timeout`` seconds (None: its ``shutdown_timeout``), then its
        reactor, as SIGTERM does; jobs still running are handed back, and
        their threads go on.  Another dispatcher may then use the UUID."""
        assert zc.asynchronous.shutdown.stop_reactor_thread(
            self.dispatcher, timeout), 'the reactor did not stop'
        self._unregister()

    def crash(self):
        """Stop polling and the reactor with no clean-up, as a kill would.
        """
        def crash():
            self.dispatcher.activated = False
            self.reactor.crash()
        self.reactor.callFromThread(crash)
        self.dispatcher.thread.join(10)
        self._unregister()

    def _unregister(self):
        registry = zc.asynchronous._registry.dispatchers
        if registry.get(self.dispatcher.UUID) is self.dispatcher:
            del registry[self.dispatcher.UUID]


def end_pool_threads(dispatcher):
    """Stop the worker threads of a dispatcher whose reactor is gone."""
    for pool in dispatcher._pools():
        for thread in pool.threads:
            pool.queue.put(None)
        for thread in pool.threads:
            thread.join(10)


class DispatcherTestCase(unittest.TestCase):
    """A FileStorage database with queue '' and registered components.

    ``self.conn``/``self.queue`` are in the thread-local transaction.
    ``self.start()`` starts a :class:`LiveDispatcher`, stopped at tear-down.
    """

    def setUp(self):
        zope.component.testing.setUp()
        self.uuid = uuid.uuid1()
        set_up_components(self.uuid)
        self.log = zope.testing.loggingsupport.InstalledHandler(
            'zc.async', level=1)
        self.addCleanup(self.log.uninstall)
        self.db = zc.asynchronous.testing.db()
        self.conn = self.db.open()
        root = self.conn.root()
        root[zc.asynchronous.interfaces.KEY] = zc.asynchronous.queue.Queues()
        self.queue = root[zc.asynchronous.interfaces.KEY][''] = \
            zc.asynchronous.queue.Queue()
        transaction.commit()
        self.live = []

    def tearDown(self):
        for live in reversed(self.live):
            live.stop()
        transaction.abort()
        self.conn.close()
        self.db.close()
        zc.asynchronous.dispatcher.clear()
        zope.component.testing.tearDown()

    def start(self, poll_interval=0.5, uuid=None, instant=True,
              before_activate=None):
        live = LiveDispatcher(self.db, poll_interval,
                              self.uuid if uuid is None else uuid, instant,
                              before_activate)
        self.live.append(live)
        return live

    def put(self, call, *args, **kw):
        """Put ``call(*args)`` in queue '' and commit; return the job.

        Retries conflicts, as a producer should (a put may conflict with a
        dispatcher's claim that commits meanwhile).
        """
        for attempt in transaction.manager.attempts():
            with attempt:
                job = self.queue.put(
                    zc.asynchronous.job.Job(call, *args), **kw)
        return job

    def messages(self, level):
        """The ``zc.async`` log messages at ``level`` (a name)."""
        return [record.getMessage() for record in self.log.records
                if record.levelname == level]
