"""A test case running a real dispatcher on the test reactor.

Not a test module.  :class:`ReactorTestCase` gives each test a throwaway
FileStorage database with queue ``''``, zc.async's adapters, captured
``zc.async`` logs, and a dispatcher (agent ``'main'``, polling every
second) on :class:`zc.async.testing.Reactor`, whose frozen clock moves only
when the test lets time pass.
"""
import unittest
import uuid

import transaction
import zope.component
import zope.testing.cleanup
import zope.testing.loggingsupport

import zc.asynchronous.agent
import zc.asynchronous.dispatcher
from zc.asynchronous import configure
from zc.asynchronous import interfaces
from zc.asynchronous import testing
from zc.asynchronous.dispatcher import Dispatcher
from zc.asynchronous.queue import Queue, Queues

UUID = uuid.UUID('6f1c7a52-2f0e-11f1-9c3d-02fc00000013')


class ReactorTestCase(unittest.TestCase):

    poll_interval = 1

    def setUp(self):
        configure.base()
        zope.component.provideHandler(
            zc.asynchronous.agent.addMainAgentActivationHandler)
        self.log = zope.testing.loggingsupport.InstalledHandler(
            'zc.async', level=1)
        self.addCleanup(self.log.uninstall)
        self.db = testing.db()
        self.conn = self.db.open()
        root = self.conn.root()
        root[interfaces.KEY] = Queues()
        self.queue = root[interfaces.KEY][''] = Queue()
        transaction.commit()
        self.reactor = testing.Reactor()
        self.reactor.start()
        self.dispatcher = Dispatcher(self.db, self.reactor, uuid=UUID,
                                     poll_interval=self.poll_interval)
        self.dispatcher.activate()
        self.reactor.time_flies(self.poll_interval)

    def tearDown(self):
        try:
            testing.tear_down_dispatcher(self.dispatcher)
        finally:
            zc.asynchronous.dispatcher.clear()
            transaction.abort()
            self.conn.close()
            self.db.close()
            zope.testing.cleanup.cleanUp()

    def put(self, item, **kw):
        """``queue.put(item, **kw)``, committed; the job."""
        job = self.queue.put(item, **kw)
        transaction.commit()
        return job

    def run_until(self, condition, seconds=60):
        """Let virtual time pass, a second at a time, until ``condition()``
        (checked in a new transaction) is true; fail after ``seconds``."""
        for _ in range(seconds):
            self.reactor.time_flies(1)
            transaction.begin()
            if condition():
                return
        self.fail('condition not met after %d virtual seconds' % seconds)

    def run_until_completed(self, *jobs, seconds=60):
        self.run_until(lambda: all(
            job.status == interfaces.COMPLETED for job in jobs), seconds)

    def messages(self, level):
        """The ``zc.async`` log messages at ``level`` (a name)."""
        return [record.getMessage() for record in self.log.records
                if record.levelname == level]
