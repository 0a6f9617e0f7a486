"""Zope functional-test set-up: a fast dispatcher for the test's database.

In a functional test (or a ``zope.testrunner`` layer) whose site is
configured with ``ftesting.zcml`` (not with a dispatcher policy: the
policy's dispatcher would watch the layer's base storage, not the test's
``DemoStorage``), call::

    zc.asynchronous.ftesting.setUp(connection)   # the test's connection or DB
    ...
    zc.asynchronous.ftesting.tearDown()

As in 1.5, ``setUp()`` without a connection uses ``getRootFolder()`` from
the calling code's globals (a ``zope.app.testing`` functional doctest has
one), and ``tearDown()`` stops the process's dispatcher even if ``setUp``
did not start it.

:func:`setUp` installs the queues and a threaded dispatcher polling every
0.1 s on that database, adds agent ``'main'`` when it activates, waits for
two polls, and echoes ``zc.async`` CRITICAL log records to stdout.
:func:`tearDown` stops it, joins its threads and raises
:class:`zc.async.testing.TearDownDispatcherError` naming any job that did
not stop.
"""
import logging
import sys

import zope.component
# Connects zope.event.notify to the registries (the agent installer is a
# registered handler of DispatcherActivated).
import zope.component.event  # noqa: F401
import ZODB.interfaces

from . import dispatcher as dispatcher_registry
from . import interfaces
from . import subscribers
from . import testing
from .testing import TearDownDispatcherError  # noqa: F401  (for callers)

# Default of setUp's ``log_file``: whatever ``sys.stdout`` is at the call.
STDOUT = object()

# What setUp started, for tearDown: {'dispatcher', 'agent_installer',
# 'log_handler'}; empty when nothing is set up.
_state = {}


def setUp(connection=None,
          queue_installer=subscribers.queue_installer,
          dispatcher_installer=subscribers.ThreadedDispatcherInstaller(
              poll_interval=0.1),
          agent_installer=subscribers.agent_installer,
          log_file=STDOUT, log_level=logging.CRITICAL):
    """Start a dispatcher on the database of ``connection`` (or on
    ``connection`` itself, a database) for a functional test; by default
    on the database of ``getRootFolder()``, a function found in the
    caller's globals.

    Registers ``agent_installer`` as a handler, runs ``queue_installer``
    and ``dispatcher_installer`` (not the application's own subscribers)
    for the database, waits for the dispatcher's first two polls, and
    unless ``log_file`` is None echoes ``zc.async`` records of
    ``log_level`` and above to ``log_file`` (stdout at call time by
    default).  Pair every call with :func:`tearDown`.
    """
    if _state:
        raise ValueError('zc.async.ftesting.setUp was called twice; call'
                         ' tearDown() after each setUp()')
    if connection is None:
        connection = _root_folder_connection(sys._getframe(1).f_globals)
    db = _database(connection)
    zope.component.provideHandler(agent_installer)
    _state['agent_installer'] = agent_installer
    try:
        if log_file is not None:
            _state['log_handler'] = testing.print_logs(
                sys.stdout if log_file is STDOUT else log_file, log_level)
        event = interfaces.DatabaseOpened(db)
        queue_installer(event)
        _start(dispatcher_installer, event)
    except BaseException:
        tearDown()
        raise


def _root_folder_connection(caller_globals):
    """The connection of ``getRootFolder()`` of the caller (1.5's way)."""
    get_root_folder = caller_globals.get('getRootFolder')
    if get_root_folder is None:
        raise ValueError(
            'zc.async.ftesting.setUp needs the connection (or database) of'
            ' the functional test, for example getRootFolder()._p_jar, or a'
            ' getRootFolder function in the globals of its caller')
    return get_root_folder()._p_jar


def _database(connection):
    """The database of ``connection`` (a connection or a database)."""
    if ZODB.interfaces.IConnection.providedBy(connection):
        return connection.db()
    if ZODB.interfaces.IDatabase.providedBy(connection):
        return connection
    raise TypeError('zc.async.ftesting.setUp needs a ZODB connection or'
                    ' database, not %r' % (connection,))


def _start(dispatcher_installer, event):
    """Run the installer; wait for two polls of the activated dispatcher.
    """
    dispatcher_installer(event)
    dispatcher = dispatcher_registry.get(
        getattr(dispatcher_installer, 'uuid', None))
    if dispatcher is None:
        raise ValueError('the dispatcher installer %r started no dispatcher'
                         % (dispatcher_installer,))
    _state['dispatcher'] = dispatcher
    testing.get_poll(dispatcher, 0)
    testing.get_poll(dispatcher, 1)
    if not dispatcher.activated:
        raise AssertionError('dispatcher %s did not activate'
                             % (dispatcher.UUID,))


def tearDown():
    """Undo :func:`setUp`: stop and forget the dispatcher, join its threads.

    Also removes the log handler, unregisters the agent installer,
    restores the signal handlers the dispatcher installer replaced and
    closes the stopped reactor's file descriptors.  Raises
    :class:`~zc.async.testing.TearDownDispatcherError` naming the dispatcher
    or jobs that did not stop within 3 seconds each (after undoing the rest).

    Without a :func:`setUp` before, it stops and forgets the process's
    dispatcher (the one of the ``IUUID`` utility), whatever started it,
    as in 1.5; ValueError if there is none.
    """
    state = dict(_state) or {'dispatcher': _process_dispatcher()}
    _state.clear()
    handler = state.get('log_handler')
    if handler is not None:
        logging.getLogger('zc.async').removeHandler(handler)
    if 'agent_installer' in state:
        zope.component.getGlobalSiteManager().unregisterHandler(
            state['agent_installer'])
    dispatcher = state.get('dispatcher')
    if dispatcher is not None:
        try:
            testing.tear_down_dispatcher(dispatcher)
        finally:
            _forget(dispatcher)


def _process_dispatcher():
    dispatcher = dispatcher_registry.get()
    if dispatcher is None:
        raise ValueError('zc.async.ftesting.tearDown: no dispatcher runs in'
                         ' this process (no setUp, or torn down already)')
    return dispatcher


def _forget(dispatcher):
    """Drop ``dispatcher`` from the registry; put its signals back; close
    the pipe of its stopped private reactor."""
    if dispatcher_registry.get(dispatcher.UUID) is dispatcher:
        dispatcher_registry.pop(dispatcher.UUID)
    subscribers.restore_signal_handlers(dispatcher)
    thread = getattr(dispatcher, 'thread', None)
    if thread is not None and not thread.is_alive():
        _close_waker(dispatcher.reactor)


def _close_waker(reactor):
    """Close the self-pipe of a stopped reactor (two file descriptors).

    A Twisted reactor keeps it for its lifetime, which for a process's
    global reactor is the process's; each test's private reactor would
    leak it.  Without a waker, ``callFromThread`` still queues calls.
    """
    waker = getattr(reactor, 'waker', None)
    if waker is None:
        return
    reactor.removeReader(waker)
    reactor.waker = None
    waker.connectionLost(None)
