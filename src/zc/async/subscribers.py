"""Installers that run on ``DatabaseOpened``: queues, agents, dispatcher.

Each installer is a small class whose constructor holds all its settings and
whose instances are event handlers.  Register them (``configure.start``,
the policy ZCML files, or ``zope.component.provideHandler``) and fire
``zope.event.notify(zc.async.interfaces.DatabaseOpened(db))``:

* :class:`QueueInstaller` makes sure the ``Queues`` mapping and the named
  queues exist (optionally in another database);
* :class:`ThreadedDispatcherInstaller` starts a dispatcher on a private
  reactor in a daemon thread (and installs signal handlers, see
  :func:`restore_signal_handlers`);
* :class:`TwistedDispatcherInstaller` starts a dispatcher on the main Twisted
  reactor;
* :class:`AgentInstaller` (a handler of ``IDispatcherActivated``) adds an
  agent whenever a dispatcher activates in a queue;
* :class:`ScheduleInstaller` keeps a recurring job in a queue (the
  ``async:schedule`` ZCML directive).

Every installer instance names the event it handles in ``__component_adapts__``
so that ``provideHandler(queue_installer)`` and ZCML's
``<subscriber handler="zc.async.subscribers.queue_installer" />`` need no
``for``.
"""
import signal
import threading

import transaction
import twisted.internet.selectreactor
import zope.event

from . import _registry
from . import interfaces
from . import logs
from . import shutdown
from . import watchdog
from .agent import Agent
from .agent import check_batch_size
from .dispatcher import Dispatcher
from .queue import Queue
from .queue import Queues
from .schedule import Schedule, equivalent

# {id(dispatcher): {signal number: (previous handler, installed handler)}}
signal_handlers = {}



def queue_factory(conn, name):
    """The default ``QueueInstaller`` factory: a new, empty ``Queue``."""
    return Queue()


class QueueInstaller:
    """Make sure ``root['zc.async']`` and the named queues exist.

    ``factory(conn, name)`` makes each missing queue.  With ``db_name`` the
    ``Queues`` mapping lives in that database (also under ``KEY`` in its
    root) and is referenced from the main root.  Each addition fires
    ``ObjectAdded`` and is committed in a connection and transaction of the
    installer's own; running it again changes nothing.
    """

    __component_adapts__ = (interfaces.IDatabaseOpenedEvent,)

    def __init__(self, queues=('',), factory=queue_factory, db_name=None):
        if isinstance(queues, str):
            raise TypeError(
                'queues must be a sequence of queue names, not the string %r'
                % (queues,))
        self.queues = queues
        self.factory = factory
        self.db_name = db_name

    def __call__(self, ev):
        databases = ev.database.databases
        if self.db_name is not None and self.db_name not in databases:
            raise ValueError(
                'the zc.async queues belong in the database named %r, but'
                ' the opened multi-database has only %s; open that database'
                ' with the main one (e.g. a <zodb %s> section in zope.conf)'
                % (self.db_name, sorted(databases), self.db_name))
        tm = transaction.TransactionManager(explicit=True)
        conn = ev.database.open(transaction_manager=tm)
        try:
            if _in_transaction(tm, self._add_queues_mapping, conn):
                logs.log.info('queues collection added')
            for name in self.queues:
                if _in_transaction(tm, self._add_queue, conn, name):
                    logs.log.info('queue %r added', name)
        finally:
            conn.close()

    def _add_queues_mapping(self, conn):
        """Add the ``Queues`` mapping if missing; answer whether it was."""
        root = conn.root()
        if interfaces.KEY in root:
            return False
        queues = Queues()
        if self.db_name is not None:
            # Give the mapping its home in the other database explicitly.
            other = conn.get_connection(self.db_name)
            other.root()[interfaces.KEY] = queues
            other.add(queues)
        root[interfaces.KEY] = queues
        zope.event.notify(interfaces.ObjectAdded(queues, root, interfaces.KEY))
        return True

    def _add_queue(self, conn, name):
        """Add queue ``name`` if missing; answer whether it was."""
        queues = conn.root()[interfaces.KEY]
        if name in queues:
            return False
        queues[name] = self.factory(conn, name)
        zope.event.notify(interfaces.ObjectAdded(queues[name], queues, name))
        return True


def _in_transaction(tm, call, *args):
    """Run ``call(*args)`` and commit, retrying conflicts; return its answer.

    A conflict means another process installed concurrently: the retry sees
    its work and usually has nothing left to do.
    """
    for attempt in tm.attempts(5):
        with attempt:
            answer = call(*args)
    return answer


queue_installer = QueueInstaller()
multidb_queue_installer = QueueInstaller(db_name='async')


class ThreadedDispatcherInstaller:
    """Start a dispatcher on a private reactor in a daemon thread.

    The reactor comes from ``reactor_factory()`` (a Twisted
    ``SelectReactor`` by default) and runs without Twisted's own signal
    handling; the thread is kept as ``dispatcher.thread``.  When the event
    arrives in the main thread, SIGINT, SIGTERM (and SIGBREAK on Windows)
    handlers are installed that stop the dispatcher and its reactor first,
    letting running jobs finish (see :func:`install_signal_handlers`).
    ``uuid`` lets tests run two dispatchers in one process.  As every
    installer, it returns None: ``zc.async.dispatcher.get(uuid)`` finds the
    dispatcher.
    """

    __component_adapts__ = (interfaces.IDatabaseOpenedEvent,)

    def __init__(self, poll_interval=5,
                 reactor_factory=twisted.internet.selectreactor.SelectReactor,
                 uuid=None):
        self.poll_interval = poll_interval
        self.reactor_factory = reactor_factory
        self.uuid = uuid

    def __call__(self, ev):
        reactor = self.reactor_factory()
        dispatcher = Dispatcher(ev.database, reactor,
                                poll_interval=self.poll_interval,
                                uuid=self.uuid)
        # Activating here (not in the thread) reports a misconfiguration to
        # the caller; it only schedules work for when the reactor runs.
        dispatcher.activate()
        thread = threading.Thread(
            target=reactor.run, kwargs={'installSignalHandlers': False},
            name='zc.async dispatcher %s' % (dispatcher.UUID,), daemon=True)
        dispatcher.thread = thread
        thread.start()
        if threading.current_thread() is threading.main_thread():
            install_signal_handlers(dispatcher)


threaded_dispatcher_installer = ThreadedDispatcherInstaller()


def install_signal_handlers(dispatcher):
    """Stop ``dispatcher`` and its reactor thread on SIGINT, SIGTERM and
    SIGBREAK.

    The dispatcher stops warmly: its running jobs get up to its
    ``shutdown_timeout`` to finish (see :mod:`zc.async.shutdown`); a signal
    that comes meanwhile stops it at once.  SIGINT then calls the handler
    it replaced (normally raising ``KeyboardInterrupt``); SIGTERM and
    SIGBREAK raise ``SystemExit``.  A signal that is ignored (``SIG_IGN``)
    stays ignored.  The replaced and installed handlers are recorded in
    ``signal_handlers[id(dispatcher)]``.  Call only from the main thread.
    """
    previous_sigint = signal.getsignal(signal.SIGINT)
    signals = []  # received while stopping

    def stop():
        signals.append(True)
        # The first signal waits for the jobs; the next ones, which come
        # while it waits, stop at once.
        shutdown.stop_reactor_thread(dispatcher, 0 if signals[1:] else None)

    def on_sigint(signum, frame):
        stop()
        _call_previous(previous_sigint, signum, frame)

    def on_terminate(signum, frame):
        stop()
        raise SystemExit()

    handlers = {signal.SIGINT: on_sigint, signal.SIGTERM: on_terminate}
    if hasattr(signal, 'SIGBREAK'):  # Windows only
        handlers[signal.SIGBREAK] = on_terminate
    installed = signal_handlers.setdefault(id(dispatcher), {})
    for signum, handler in handlers.items():
        previous = signal.getsignal(signum)
        if previous == signal.SIG_IGN:
            continue  # ignored on purpose (nohup, background jobs): keep it
        installed[signum] = (previous, handler)
        signal.signal(signum, handler)


def _call_previous(previous, signum, frame):
    """Call a signal handler we replaced, as Python would have."""
    if callable(previous):
        previous(signum, frame)
    elif previous in (signal.SIG_DFL, None):
        # SIGINT's default outside Python's own handler: interrupt.
        raise KeyboardInterrupt()


def restore_signal_handlers(dispatcher):
    """Put back the handlers ``dispatcher``'s installer replaced.

    Only where the current handler is still the one the installer set: a
    handler installed later by someone else is left alone.  The record in
    :data:`signal_handlers` is dropped either way.
    """
    handlers = signal_handlers.pop(id(dispatcher), {})
    for signum, (previous, installed) in handlers.items():
        if signal.getsignal(signum) is installed:
            signal.signal(
                signum, signal.SIG_DFL if previous is None else previous)


def stop_and_forget(dispatcher, timeout=None):
    """Stop ``dispatcher`` and wait (:func:`zc.async.shutdown.stop_and_wait`),
    then restore the signal handlers that its installer replaced and drop
    it from the process's dispatchers."""
    shutdown.stop_and_wait(dispatcher, timeout)
    restore_signal_handlers(dispatcher)
    _registry.forget(dispatcher)


class TwistedDispatcherInstaller:
    """Start a dispatcher on the main Twisted reactor.

    Each poll runs in the reactor's thread pool with a fresh connection
    (``activate(threaded=True)``); the application runs the reactor.
    """

    __component_adapts__ = (interfaces.IDatabaseOpenedEvent,)

    def __init__(self, poll_interval=5):
        self.poll_interval = poll_interval

    def __call__(self, ev):
        dispatcher = Dispatcher(ev.database, poll_interval=self.poll_interval)
        dispatcher.activate(threaded=True)


twisted_dispatcher_installer = TwistedDispatcherInstaller()


class AgentInstaller:
    """Add an agent named ``agent_name`` whenever a dispatcher activates.

    Handles ``IDispatcherActivated`` (in the activating poll's transaction)
    for the queues named in ``queue_names`` (None: every queue).  The agent
    gets ``chooser`` or ``filter`` (not both), ``size``, ``time_limit`` and
    ``batch_size`` (see ``IAgent``).
    """

    __component_adapts__ = (interfaces.IDispatcherActivated,)

    def __init__(self, agent_name, chooser=None, size=3, queue_names=None,
                 filter=None, time_limit=None, batch_size=1):
        if chooser is not None and filter is not None:
            raise ValueError('cannot set both chooser and filter to non-None')
        if isinstance(queue_names, str):
            raise TypeError(
                'queue_names must be None or a collection of queue names,'
                ' not the string %r' % (queue_names,))
        self.agent_name = agent_name
        self.chooser = chooser
        self.size = size
        self.queue_names = queue_names
        self.filter = filter
        self.time_limit = watchdog.check_time_limit(time_limit)
        self.batch_size = check_batch_size(batch_size)

    def __call__(self, ev):
        dispatcher_agents = ev.object
        queue_name = dispatcher_agents.parent.name
        if self.queue_names is not None and queue_name not in self.queue_names:
            return
        if self.agent_name in dispatcher_agents:
            logs.log.info('agent %r already in queue %r',
                          self.agent_name, queue_name)
            return
        dispatcher_agents[self.agent_name] = Agent(
            chooser=self.chooser, filter=self.filter, size=self.size,
            time_limit=self.time_limit, batch_size=self.batch_size)
        logs.log.info('agent %r added to queue %r',
                      self.agent_name, queue_name)


agent_installer = AgentInstaller('main')


class ScheduleInstaller:
    """Keep the schedule ``name`` in queue ``queue`` (see
    :mod:`zc.async.schedule`): ``Schedule(callable, *args, **settings)``.

    On ``DatabaseOpened`` it adds the schedule if it is missing and
    replaces one whose rule, options or job differ; an equivalent one is
    kept, with its next and last runs, so restarts change nothing.  The
    queues must exist already (register it after the queue installer).
    The settings are checked when the installer is made.
    """

    __component_adapts__ = (interfaces.IDatabaseOpenedEvent,)

    def __init__(self, name, callable, *args, queue='', **settings):
        self.name = name
        self.queue = queue
        self.callable = callable
        self.args = args
        self.settings = settings
        self.make()  # bad settings fail now, not when the database opens

    def make(self):
        """A new schedule with the installer's settings."""
        return Schedule(self.callable, *self.args, **self.settings)

    def __call__(self, ev):
        tm = transaction.TransactionManager(explicit=True)
        conn = ev.database.open(transaction_manager=tm)
        try:
            done = _in_transaction(tm, self._install, conn)
        finally:
            conn.close()
        if done:
            logs.log.info('schedule %r %s in queue %r', self.name, done,
                          self.queue)

    def _install(self, conn):
        """Add or replace the schedule; what was done, or None."""
        queues = conn.root().get(interfaces.KEY)
        if queues is None or self.queue not in queues:
            raise ValueError(
                'schedule %r needs the zc.async queue %r, which the database'
                ' does not have: install the queues first (a dispatcher'
                ' policy does)' % (self.name, self.queue))
        schedules = queues[self.queue].schedules
        old = schedules.get(self.name)
        new = self.make()
        if old is not None and equivalent(old, new):
            return None
        schedules[self.name] = new
        return 'added' if old is None else 'replaced'
