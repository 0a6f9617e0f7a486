"""Fixtures for the monitor tests: a dispatcher on the virtual-time reactor.

Not a test module.  :class:`MonitorTestCase` gives a MappingStorage
database with queue ``''``, a dispatcher with a fixed UUID on a started
``zc.asynchronous.testing.Reactor`` (frozen clock), and :func:`run`, which
calls a monitor command with a connection that collects its output.
"""
import threading
import unittest
import uuid

import transaction
import zope.component.testing
import zope.testing.loggingsupport
import ZODB

import zc.asynchronous._registry
import zc.asynchronous.dispatcher
import zc.asynchronous.interfaces as interfaces
import zc.asynchronous.job
import zc.asynchronous.queue
import zc.asynchronous.testing as testing
from zc.asynchronous.tests.live import set_up_components

UUID = uuid.UUID('a6f3b8fa-4e1d-11e0-9d6a-0017f2c49bdd')
OTHER_UUID = uuid.UUID('0bc2ee3c-4e1e-11e0-9d6a-0017f2c49bdd')

# Jobs are pickled by reference: what they use lives at module level.
events = {}  # name -> threading.Event


def event(name):
    return events.setdefault(name, threading.Event())


def release_all():
    for found in events.values():
        found.set()
    events.clear()


def blocked(name):
    """Run until the test sets event ``name``."""
    event('started ' + name).set()
    event(name).wait(20)
    return name


def blocked_callback(result):
    event('cb').wait(20)
    return result


def succeed(*values):
    return sum(values)


def explode():
    raise ValueError('boom')


class Output:
    """A monitor connection that collects what is written."""

    def __init__(self):
        self.parts = []

    def write(self, text):
        self.parts.append(text)

    @property
    def text(self):
        return ''.join(self.parts)


def run(command, *words):
    """What ``command(connection, *words)`` writes."""
    output = Output()
    command(output, *words)
    return output.text


class World:
    """The database, components, reactor and dispatcher of a test."""

    def __init__(self):
        zope.component.testing.setUp()
        set_up_components(UUID)
        self.log = zope.testing.loggingsupport.InstalledHandler(
            'zc.async', level=1)
        self.db = ZODB.DB(None)
        self.conn = self.db.open()
        self.root = self.conn.root()
        queues = self.root[interfaces.KEY] = zc.asynchronous.queue.Queues()
        self.queue = queues[''] = zc.asynchronous.queue.Queue()
        transaction.commit()
        self.reactor = testing.Reactor()
        self.reactor.start()
        self.dispatcher = zc.asynchronous.dispatcher.Dispatcher(
            self.db, self.reactor)

    def put(self, call, *args, queue=None, **kw):
        """Put a job of ``call(*args)`` and commit; return the job."""
        queue = self.queue if queue is None else queue
        job = queue.put(zc.asynchronous.job.Job(call, *args), **kw)
        transaction.commit()
        return job

    def close(self):
        release_all()
        try:
            dispatchers = zc.asynchronous._registry.dispatchers
            for found in list(dispatchers.values()):
                testing.tear_down_dispatcher(found)
        finally:
            if self.reactor.started:
                self.reactor.stop()
            transaction.abort()
            self.conn.close()
            self.db.close()
            zc.asynchronous.dispatcher.clear()
            self.log.uninstall()
            zope.component.testing.tearDown()


class MonitorTestCase(unittest.TestCase):
    """A fresh :class:`World` per test (``self.world``, and shortcuts)."""

    def setUp(self):
        self.world = World()
        self.addCleanup(self.world.close)
        self.dispatcher = self.world.dispatcher
        self.reactor = self.world.reactor
        self.queue = self.world.queue
