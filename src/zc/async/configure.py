"""Pure-Python equivalents of the ZCML files, taking a registry.

Without Zope, call :func:`base` (or :func:`minimal`) once at start-up, then
either set up queues and agents yourself or call :func:`start` to install a
queue, a dispatcher and a ``'main'`` agent, and :func:`stop` at the end::

    zc.asynchronous.configure.base()
    zc.asynchronous.configure.start(db, poll_interval=1)
    ...
    zc.asynchronous.configure.stop()

A client-only process (it puts jobs; other processes run them) calls
:func:`client` instead of :func:`start`.

Each function registers into ``registry``, by default the global site
manager.  Adapter lookups such as ``IJob(func)`` and the events that run the
installers go through the *current* site manager, so a registry other than
the global one must be made current (``zope.component.hooks``) to take
effect.

The instance UUID is registered with ``provided=IUUID`` explicitly: the
stdlib ``uuid.UUID`` class is not declared to implement ``IUUID`` (zc.async
1.5 did that at import; zc.async 2 does not change classes it does not own).
"""
import types

import persistent.interfaces
import transaction.interfaces
import zope.component
# Importing it connects zope.event.notify to the registries' handlers, which
# the installers rely on (zope.component does not import it by itself).
import zope.component.event  # noqa: F401
import zope.event
import ZODB.interfaces

from . import dispatcher
from . import instanceuuid
from . import interfaces
from .ops import monitorserver
from . import subscribers
from . import twist
from . import z3
from .job import Job
from .queue import getDefaultQueue

# Callables that ``IJob(callable)`` turns into a new Job (1.5's list plus
# builtin methods, which are the same type as builtin functions).
JOB_ADAPTED_TYPES = (
    types.FunctionType,
    types.MethodType,
    types.MethodWrapperType,
    types.BuiltinFunctionType,
)


def _registry(registry):
    return zope.component.getGlobalSiteManager() if registry is None \
        else registry


def minimal(registry=None):
    """Register what every process using zc.async needs.

    Transaction-manager adapters for persistent objects and connections,
    ``Job`` as the ``IJob`` adapter for functions, methods, method-wrappers
    and builtin functions/methods, ``IAnnotations(job)`` (the job's
    ``annotations``), and the instance UUID as the ``IUUID`` utility
    (``configure.zcml`` registers the same).  Use it instead of
    :func:`base` when the application already registers a
    persistent-object-to-connection adapter.
    """
    registry = _registry(registry)
    for required in (persistent.interfaces.IPersistent,
                     ZODB.interfaces.IConnection):
        registry.registerAdapter(
            twist.transactionManager, (required,),
            transaction.interfaces.ITransactionManager)
    for required in JOB_ADAPTED_TYPES:
        registry.registerAdapter(Job, (required,), interfaces.IJob)
    registry.registerAdapter(z3.annotations)
    registry.registerUtility(instanceuuid.UUID, interfaces.IUUID)


def base(registry=None):
    """:func:`minimal` plus the persistent-object-to-connection adapter."""
    registry = _registry(registry)
    minimal(registry)
    registry.registerAdapter(
        twist.connection, (persistent.interfaces.IPersistent,),
        ZODB.interfaces.IConnection)


def client(registry=None):
    """Register the default-queue adapters: ``IQueue(persistent_obj)`` and
    ``IQueue(conn)`` give queue ``''``.

    What a client-only process needs, after :func:`base` (or
    :func:`minimal`), to put jobs that other processes run; :func:`start`
    registers it too.
    """
    registry = _registry(registry)
    for required in (persistent.interfaces.IPersistent,
                     ZODB.interfaces.IConnection):
        registry.registerAdapter(getDefaultQueue, (required,),
                                 interfaces.IQueue)


def start(db, poll_interval=5, db_name=None, agent_chooser=None,
          agent_size=3, twisted=False, registry=None, monitor_port=None,
          monitor_host='127.0.0.1'):
    """Install queue ``''``, a dispatcher and agent ``'main'`` for ``db``.

    Registers the default-queue adapters (see :func:`client`), a
    :class:`QueueInstaller` (queues
    in database ``db_name`` if given), a threaded dispatcher installer (or,
    with ``twisted=True``, one for the main Twisted reactor, which the
    caller then runs) polling every ``poll_interval`` seconds, and an
    ``AgentInstaller('main')`` with ``agent_chooser`` and ``agent_size``;
    then fires ``DatabaseOpened(db)``.  Call :func:`base` or
    :func:`minimal` first.

    With ``monitor_port`` (an integer, or its text, such as
    ``os.environ.get('MONITOR_PORT')``; 0 picks a free port) a
    :class:`zc.async.ops.monitorserver.MonitorInstaller` registered last
    serves the ``async`` and ``asyncdb`` monitor commands on
    ``monitor_host:monitor_port`` (loopback by default) once the dispatcher
    exists.
    """
    if monitor_port is not None:  # bad values fail before anything starts
        monitor_installer = monitorserver.MonitorInstaller(
            monitor_port, monitor_host)
    registry = _registry(registry)
    client(registry)
    if twisted:
        dispatcher_installer = subscribers.TwistedDispatcherInstaller(
            poll_interval=poll_interval)
    else:
        dispatcher_installer = subscribers.ThreadedDispatcherInstaller(
            poll_interval=poll_interval)
    handlers = [subscribers.QueueInstaller(db_name=db_name),
                dispatcher_installer,
                subscribers.AgentInstaller(
                    'main', chooser=agent_chooser, size=agent_size)]
    if monitor_port is not None:
        handlers.append(monitor_installer)
    for handler in handlers:
        registry.registerHandler(handler, handler.__component_adapts__)
    _notify(registry, interfaces.DatabaseOpened(db))


def stop(timeout=None):
    """Stop the dispatcher that :func:`start` started, if any (the process's
    dispatcher): its running jobs get up to ``timeout`` seconds (None: its
    ``shutdown_timeout``, 30 seconds) to finish, then it deactivates and
    its reactor stops (see :mod:`zc.async.shutdown`).  Waits for that,
    restores the signal handlers it installed and forgets it
    (``zc.async.dispatcher.get()`` is None again).  The end of the
    interpreter does the same, with a shorter timeout, for a dispatcher
    still running.
    """
    running = dispatcher.get()
    if running is not None:
        subscribers.stop_and_forget(running, timeout)


def _notify(registry, event):
    """Fire ``event``: to everyone if ``registry`` is current, else to it."""
    if registry is zope.component.getSiteManager():
        zope.event.notify(event)
    else:
        registry.handle(event)
