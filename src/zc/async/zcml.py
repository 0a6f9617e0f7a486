"""The ``async:policy`` ZCML directive: a dispatcher policy, checked early.

A Zope site starts zc.async with two lines of its ``site.zcml``::

    <include package="zc.async" />
    <include package="zc.async" file="basic_dispatcher_policy.zcml" />

(or ``multidb_dispatcher_policy.zcml`` to keep the queues in a database
named ``async``).  Each policy file holds one ``async:policy`` directive,
which a site may also use itself, with its own settings::

    <configure xmlns:async="http://namespaces.zope.org/zc.async">
      <include package="zc.async" file="dispatcher.zcml" />
      <async:policy name="multidb" database="queues" poll_interval="1" />
    </configure>

It registers the default-queue adapters (``IQueue(obj)`` and
``IQueue(connection)``) and, as subscribers of ``IDatabaseOpenedEvent``
(fired by ``zope.app.appsetup`` when the site's database opens), a queue
installer and a threaded dispatcher installer (whose dispatcher also stops
when the process exits: see :mod:`zc.async.shutdown`); agent ``'main'`` is
added by a subscriber of ``IDispatcherActivated``.  With 1.5's default
settings these are the pre-built installers of :mod:`zc.async.subscribers`,
so a policy file registers exactly what zc.async 1.5's did.

The directive checks its arguments when the configuration is processed: an
unknown policy, a ``multidb`` policy without a database name, or two
policies in one site (a conflict naming both places) fail then, not when
the database opens.

``<async:monitor port="8081" />`` (``host`` defaults to ``127.0.0.1``) also
serves the ``async`` and ``asyncdb`` monitor commands, and the
``IMonitorPlugin`` utilities, on that port once the dispatcher exists (see
:mod:`zc.async.ops.monitorserver`).  One per site; its installer runs after
every dispatcher installer, wherever the directive appears.

``<async:schedule name="nightly" callable="myapp.jobs.cleanup"
cron="0 3 * * *" timezone="Europe/Berlin" />`` keeps a recurring job in a
queue (``queue=""``, the default queue, unless told otherwise; ``every``
is a number of seconds instead of ``cron``; ``catch_up`` and ``overlap``
as for :class:`zc.async.schedule.Schedule`).  Its settings are checked
when the configuration is processed; its installer runs after the queue
installer, and adds the schedule, or replaces it if its definition
changed.
"""
import datetime

import persistent.interfaces
import zope.component
import zope.component.zcml
import zope.configuration.exceptions
import zope.configuration.fields
import zope.interface
import zope.schema
import ZODB.interfaces

from . import interfaces
from .ops import monitorserver
from . import subscribers
from .queue import getDefaultQueue

NAMESPACE = 'http://namespaces.zope.org/zc.async'

#: The policies, by name: where each keeps the queues.
POLICIES = {
    'basic': 'the queues in the main database',
    'multidb': 'the queues in another database, named by database=',
}

class IPolicyDirective(zope.interface.Interface):
    """Run a dispatcher in this process, with its queues and agent."""

    name = zope.schema.TextLine(
        title='Policy',
        description='"basic" (queues in the main database) or "multidb"'
                    ' (queues in the database named by ``database``).')

    database = zope.schema.TextLine(
        title='Queues database',
        description='Name of the database holding the queues (required by'
                    ' and only allowed for the "multidb" policy).',
        required=False)

    poll_interval = zope.schema.Float(
        title='Poll interval',
        description='Seconds between the dispatcher\'s heartbeat polls.',
        required=False, default=5.0)

    agent_size = zope.schema.Int(
        title='Agent size',
        description='Number of jobs agent "main" runs at once.',
        required=False, default=3, min=1)


def policy(_context, name, database=None, poll_interval=5.0, agent_size=3):
    """Handle ``<async:policy>``: see :class:`IPolicyDirective`."""
    _check(name, database, poll_interval)
    # Only one policy per site: a second one is reported as a conflict.
    _context.action(discriminator=('zc.async', 'dispatcher policy'))
    for required in (persistent.interfaces.IPersistent,
                     ZODB.interfaces.IConnection):
        zope.component.zcml.adapter(
            _context, [getDefaultQueue], provides=interfaces.IQueue,
            for_=[required])
    for handler in installers(database, poll_interval, agent_size):
        zope.component.zcml.subscriber(_context, handler=handler)


def _check(name, database, poll_interval):
    """Raise ConfigurationError for settings no dispatcher can run with."""
    if name not in POLICIES:
        raise zope.configuration.exceptions.ConfigurationError(
            'unknown zc.async dispatcher policy %r; use one of: %s' % (
                name, '; '.join('%r (%s)' % item
                                for item in POLICIES.items())))
    if name == 'multidb' and not database:
        raise zope.configuration.exceptions.ConfigurationError(
            'the multidb zc.async dispatcher policy needs the name of the'
            ' database that holds the queues, as database="..."'
            ' (multidb_dispatcher_policy.zcml uses database="async")')
    if name == 'basic' and database:
        raise zope.configuration.exceptions.ConfigurationError(
            'the basic zc.async dispatcher policy keeps the queues in the'
            ' main database, so database=%r is not allowed; use'
            ' name="multidb" to keep them in that database' % (database,))
    if not poll_interval > 0:
        raise zope.configuration.exceptions.ConfigurationError(
            'poll_interval must be a number of seconds above 0, not %r'
            % (poll_interval,))


def installers(database=None, poll_interval=5.0, agent_size=3):
    """The event handlers of a policy, in the order they must run."""
    return [
        _prebuilt_or_new(
            (subscribers.queue_installer,
             subscribers.multidb_queue_installer),
            subscribers.QueueInstaller, db_name=database or None),
        _prebuilt_or_new(
            (subscribers.threaded_dispatcher_installer,),
            subscribers.ThreadedDispatcherInstaller,
            poll_interval=poll_interval),
        _prebuilt_or_new(
            (subscribers.agent_installer,), subscribers.AgentInstaller,
            agent_name='main', size=agent_size),
    ]


def _prebuilt_or_new(prebuilt, factory, **settings):
    """The pre-built installer with ``settings``, else a new one."""
    for installer in prebuilt:
        if all(getattr(installer, key) == value
               for key, value in settings.items()):
            return installer
    return factory(**settings)


# ----------------------------------------------------------- monitor

# Action order of the monitor's handler: after the order-0 registrations,
# so that it runs after the dispatcher installers of any policy.
MONITOR_ORDER = 1


class IMonitorDirective(zope.interface.Interface):
    """Serve the monitor commands about this process's dispatcher."""

    port = zope.schema.Int(
        title='Port',
        description='TCP port of the monitor line server (0: any free'
                    ' port).',
        min=0, max=65535)

    host = zope.schema.TextLine(
        title='Host',
        description='Address to listen on.  Anyone who can connect reads'
                    ' job data: keep the default, 127.0.0.1, unless the'
                    ' port is firewalled.',
        required=False, default='127.0.0.1')


def monitor(_context, port, host='127.0.0.1'):
    """Handle ``<async:monitor>``: see :class:`IMonitorDirective`."""
    try:
        installer = monitorserver.MonitorInstaller(port, host)
    except ValueError as e:
        raise zope.configuration.exceptions.ConfigurationError(str(e))
    _context.action(
        discriminator=('zc.async', 'monitor'),
        callable=zope.component.zcml.handler,
        args=('registerHandler', installer, installer.__component_adapts__,
              '', _context.info),
        order=MONITOR_ORDER)


# ---------------------------------------------------------- schedules

# Action order of schedule installers: after the queue installer of any
# policy (order 0).
SCHEDULE_ORDER = 1


class IScheduleDirective(zope.interface.Interface):
    """Keep a recurring job in a queue (see zc.async.schedule)."""

    name = zope.schema.TextLine(
        title='Name', description='The name in ``queue.schedules``.')

    callable = zope.configuration.fields.GlobalObject(
        title='Callable',
        description='The dotted name of the function each tick\'s job'
                    ' calls (without arguments).')

    cron = zope.schema.TextLine(
        title='Cron rule',
        description='A cron expression, read in ``timezone`` (give it or'
                    ' ``every``).', required=False)

    every = zope.schema.Float(
        title='Interval',
        description='Seconds between ticks (give it or ``cron``).',
        required=False)

    timezone = zope.schema.TextLine(
        title='Time zone',
        description='The IANA time zone of a cron rule (default: UTC).',
        required=False)

    catch_up = zope.schema.Choice(
        title='Catch up',
        description='What due ticks put after a downtime: "once", "all"'
                    ' or "skip".',
        values=('once', 'all', 'skip'), required=False, default='once')

    overlap = zope.schema.Bool(
        title='Overlap',
        description='False: no job while the last one is not finished.',
        required=False, default=True)

    queue = zope.schema.TextLine(
        title='Queue', description='The queue\'s name (default: "").',
        required=False, default='')


def schedule(_context, name, callable, cron=None, every=None, timezone=None,
             catch_up='once', overlap=True, queue=''):
    """Handle ``<async:schedule>``: see :class:`IScheduleDirective`."""
    if every is not None:
        every = datetime.timedelta(seconds=every)
    try:
        installer = subscribers.ScheduleInstaller(
            name, callable, queue=queue, cron=cron, every=every,
            timezone=timezone or None, catch_up=catch_up, overlap=overlap)
    except (TypeError, ValueError) as e:
        raise zope.configuration.exceptions.ConfigurationError(
            'schedule %r: %s' % (name, e))
    _context.action(
        discriminator=('zc.async', 'schedule', queue, name),
        callable=zope.component.zcml.handler,
        args=('registerHandler', installer, installer.__component_adapts__,
              '', _context.info),
        order=SCHEDULE_ORDER)
