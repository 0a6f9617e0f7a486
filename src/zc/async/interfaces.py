"""The contract: constants, statuses, interfaces, events and exceptions.

This module is the map of zc.async.  Three roles cooperate:

* a **job** (:class:`IJob`) is a persistent call with a status, a result and
  callbacks;
* a **queue** (:class:`IQueue`) holds pending jobs and hands them to agents;
* a **dispatcher** (an in-memory object, one per process) polls the queues on
  a reactor clock and runs the jobs its persistent **agents**
  (:class:`IAgent`) claim, each in a worker thread with its own connection.

Client code only needs a queue: ``queue.put(callable)`` and a commit.

Every name of the contract is importable from here.  The events zc.async
notifies are defined in :mod:`zc.async.eventinterfaces`, and the
interfaces of the operations features (schedules, sandbox reports, monitor
commands) in :mod:`zc.async.opsinterfaces`.
"""
import zope.interface
import zope.interface.common.mapping
import zope.interface.common.sequence
import zc.queue.interfaces

from .eventinterfaces import (  # noqa: F401  (1.5 names)
    IObjectEvent, AbstractObjectEvent, IDispatcherRegistered,
    DispatcherRegistered, IDispatcherUnregistered, DispatcherUnregistered,
    IDispatcherActivated, DispatcherActivated, IDispatcherDeactivated,
    DispatcherDeactivated, IDispatcherReactivated, DispatcherReactivated,
    IObjectAdded, ObjectAdded, IDatabaseOpenedEvent, DatabaseOpened)
from .i18n import _
from .opsinterfaces import (  # noqa: F401
    IMonitorPlugin, ISandboxReport, ISchedule, ISchedules)

#: Root key of the :class:`zc.async.queue.Queues` mapping.
KEY = 'zc.async'

# Job statuses.  The values are 1.5's i18n message ids; compare by equality.
NEW = _('new-status', 'New')
PENDING = _('pending-status', 'Pending')
ASSIGNED = _('assigned-status', 'Assigned')
ACTIVE = _('active-status', 'Active')
CALLBACKS = _('callback-status', 'Performing Callbacks')
COMPLETED = _('completed-status', 'Completed')


# ---------------------------------------------------------------- exceptions

class AsyncError(Exception):
    """Base class of every exception zc.async defines."""


class AbortedError(AsyncError):
    """An interrupted job was given up by its retry policy."""


class TimeoutError(AsyncError):
    """A job missed its ``begin_by`` deadline; the default error of ``fail``.
    """


class BadStatusError(AsyncError):
    """A job was asked to do something its current status does not allow."""


class ReassignedError(AsyncError):
    """The job now belongs to another dispatcher or agent (false death)."""


class FullError(AsyncError):
    """A sized sequence is full (declared for compatibility; unused)."""


class JobStopped(AsyncError):
    """Raised inside a running job's thread to stop it, and stored as the
    job's failure: the base of :class:`TimeLimitExceeded` and
    :class:`AbortRequested` (see :mod:`zc.async.watchdog`).

    The job's retry policy sees it as a job error: the default policies do
    not retry it.  A job that swallows it (``except Exception: pass``)
    fails with it all the same once it returns, and is abandoned if it
    does not return soon.
    """


class TimeLimitExceeded(JobStopped):
    """A running job went on longer than its ``time_limit``."""


class AbortRequested(JobStopped):
    """Somebody asked for the job to be aborted (``IJob.requestAbort``)."""


class DuplicateJobError(AsyncError):
    """``put(..., unique_key=key, on_duplicate='raise')`` found a job
    holding ``key`` in the queue: pending, or running.

    ``args`` are the message, the key and that job.
    """

    @property
    def key(self):
        return self.args[1]

    @property
    def job(self):
        return self.args[2]


class SnapshotUnavailableError(AsyncError):
    """A replay asked for a database state the storage no longer has (a
    pack went past it, or the storage is history-free); the message says
    which.  ``oldest`` is the tid of the oldest complete state after it,
    when there is one (None otherwise)."""

    def __init__(self, message, oldest=None):
        super().__init__(message)
        self.oldest = oldest
class UnloadableJobError(AsyncError):
    """No live dispatcher of the job's queue could load the job.

    A job whose record, callable or arguments cannot be loaded (its module
    is missing, say) is passed over by the claims of the dispatchers that
    cannot load it; once every live dispatcher of its queue has found it
    unloadable for the queue's ``unloadable_timeout``, one of them fails
    it with this error (see :mod:`zc.async.unloadable`).

    ``UnloadableJobError(oid, callable_name, error)``: the job's oid (an
    integer), the dotted name of its callable (None when even that could
    not be read) and what went wrong (a text).
    """

    def __init__(self, oid, callable_name, error):
        super().__init__(oid, callable_name, error)

    oid = property(lambda self: self.args[0])
    callable_name = property(lambda self: self.args[1])
    error = property(lambda self: self.args[2])

    def __str__(self):
        return 'job %d (callable %s) could not be loaded by any live ' \
            'dispatcher of its queue: %s' % (
                self.oid, self.callable_name or '?', self.error)


# ---------------------------------------------------------------- interfaces

class IReactor(zope.interface.Interface):
    """The part of a Twisted reactor a dispatcher uses."""

    def callFromThread(callable, *args, **kw):
        """Run ``callable`` as soon as possible in the reactor thread.

        May be called from any thread.
        """

    def callInThread(callable, *args, **kw):
        """Run ``callable`` in a separate thread."""

    def callLater(seconds, callable, *args, **kw):
        """Run ``callable`` in the reactor thread after ``seconds``."""

    def addSystemEventTrigger(phase, eventType, callable, *args, **kw):
        """Run ``callable`` around a system event.

        Dispatchers use ``('before', 'shutdown', ...)`` to stop: the
        trigger may return a Deferred (its running jobs still finishing),
        which the reactor waits for before it shuts down.
        """

    def callWhenRunning(callable, *args, **kw):
        """Run ``callable`` once the reactor runs (now, if it already does)."""


class IRetryPolicy(zope.interface.Interface):
    """Decides what happens when a job fails, its commit fails, or it is
    interrupted.

    ``jobError``, ``commitError`` and ``interrupted`` answer ``True`` (try
    again now, in this thread), ``False`` (give up), or a ``datetime`` or
    ``timedelta`` (put the job back in its queue to be claimed at that time;
    a past time or non-positive delta means the front of the queue).
    """

    def jobError(failure, data_cache):
        """The job's callable raised ``failure``; retry?

        ``data_cache`` is a dict the policy may use for counters within one
        call of the job; ``updateData`` persists it.
        """

    def commitError(failure, data_cache):
        """Committing the job's result raised ``failure``; retry?"""

    def interrupted():
        """The job was found active after its dispatcher died or stopped."""

    def updateData(data_cache):
        """Persist bookkeeping from ``data_cache`` right before a commit."""


class IAbstractJob(zope.interface.Interface):
    """Something with a status, a result and callbacks."""

    parent = zope.interface.Attribute(
        'The current container: a queue, an agent, a job or None.')

    status = zope.interface.Attribute(
        'One of NEW, PENDING, ASSIGNED, ACTIVE, CALLBACKS or COMPLETED.')

    result = zope.interface.Attribute(
        'None until completed; then a value or a Failure.  While the job '
        'waits on an inner job, temporarily that job.')

    def addCallbacks(success=None, failure=None,
                     failure_log_level=None, retry_policy_factory=None):
        """Add a callback proxy choosing ``success`` or ``failure`` by the
        result (a Failure selects ``failure``); return the proxy."""

    def addCallback(callback, failure_log_level=None,
                    retry_policy_factory=None):
        """Add ``callback`` (adapted to IJob), called with the final result.

        Returns the callback job.  On a COMPLETED job the callback runs at
        once, in the caller's thread.
        """

    callbacks = zope.interface.Attribute(
        'A persistent FIFO of callback jobs and proxies (do not mutate).')


class ICallbackProxy(IAbstractJob):
    """Chooses one of several jobs once the parent's result is known."""

    job = zope.interface.Attribute('The chosen job, or None until chosen.')

    def getJob(result):
        """Choose, remember and return the job for ``result``."""


class IJob(IAbstractJob):
    """A persistent call with a status, a result and callbacks.

    States and transitions (the internal id is NEW, ACTIVE, CALLBACKS or
    COMPLETED; PENDING and ASSIGNED are derived from ``parent``):

    * NEW: not in a queue, never called.  ``put`` makes it PENDING.
    * PENDING: in a queue (``parent`` is the queue).  ``claim`` hands it to an
      agent; ``pull``/``remove`` make it NEW again.
    * ASSIGNED: held by an agent, not yet called.
    * ACTIVE: being called, or waiting on a returned job or Deferred.
    * CALLBACKS: the result is stored; callbacks are running.
    * COMPLETED: result stored and all callbacks done.  Final.

    Calling is allowed in NEW or ASSIGNED only; rescheduling by a retry
    policy returns the job to NEW (then PENDING).
    """

    callable = zope.interface.Attribute(
        'The callable; settable only while NEW.  Bound methods are stored '
        'as (owner, method name).')

    args = zope.interface.Attribute('A persistent list of arguments.')

    kwargs = zope.interface.Attribute('A persistent dict of keyword args.')

    annotations = zope.interface.Attribute(
        'An OOBTree for metadata and live progress annotations.')

    assignerUUID = zope.interface.Attribute(
        'The UUID of the instance that put the job in a queue.')

    begin_after = zope.interface.Attribute(
        'A timezone-aware datetime (stored in UTC) before which the job '
        'must not start.  Naive values raise ValueError.')

    begin_by = zope.interface.Attribute(
        'A timedelta after ``begin_after`` by which the job must start, or '
        'None for no deadline.  A missed deadline fails the job with '
        'TimeoutError.')

    quota_names = zope.interface.Attribute(
        'A tuple of names of the queue quotas this job counts against.')

    failure_log_level = zope.interface.Attribute(
        'The log level of this job\'s failures (None means ERROR).')

    retry_policy_factory = zope.interface.Attribute(
        'None, a callable taking the job, or the name of an IRetryPolicy '
        'adapter.')

    active_start = zope.interface.Attribute(
        'When the current or last attempt started (UTC).')

    active_end = zope.interface.Attribute('When the result was stored (UTC).')

    active_snapshot = zope.interface.Attribute(
        'The transaction id (8 bytes) of the committed database state that '
        'the callable saw in the attempt whose outcome was stored last (its '
        'connection\'s snapshot), or None (never called, or called before '
        'zc.async 2).  Recorded in the commits the attempt makes anyway; '
        'see zc.async.ops.sandbox.replay.')

    initial_callbacks_end = zope.interface.Attribute(
        'When the callbacks first completed (UTC), from ``key``.')

    time_limit = zope.interface.Attribute(
        'A positive timedelta, or None (the default): how long the '
        'callable may run in a dispatcher\'s worker thread before '
        'TimeLimitExceeded is raised in it (see zc.async.watchdog).  None '
        'means the limit of the agent that claimed the job, if any.  '
        'Settable while NEW or PENDING.')

    abort_requested = zope.interface.Attribute(
        'Whether ``requestAbort`` was called (and committed).')

    def requestAbort():
        """Ask for the job to be aborted, from any process.

        A job that has not started (NEW or PENDING) is taken out of its
        queue (it keeps the queue as its parent, for a retry) and failed at
        once with AbortRequested, which commits (as ``fail`` does).  For an ASSIGNED or ACTIVE job the request is
        recorded; once it is committed, the dispatcher running the job
        raises AbortRequested in the job's thread (or before the job
        starts, if it has not yet), and code that checks
        ``zc.async.local.isAbortRequested()`` may return early; the job
        fails with AbortRequested either way.  BadStatusError for a job in
        CALLBACKS or COMPLETED status: it has its result.
        """

    unique_key = zope.interface.Attribute(
        'The unique key the job was put with (a string), or None.  While '
        'the job is pending or running, no other job is put in its queue '
        'under that key.')

    def __call__(*args, **kwargs):
        """Run the job in its own transactions and return the result.

        Call-time args are appended to the stored args, call-time kwargs
        override the stored ones.  Errors become a Failure result; a retry
        policy may retry or reschedule (then the job itself is returned).
        """

    def handleInterrupt():
        """Deal with a job found ACTIVE after its dispatcher went away.

        The retry policy's ``interrupted`` decides: put back, put later, or
        fail with AbortedError.  In CALLBACKS status, resume the callbacks.
        """

    def resumeCallbacks():
        """Run outstanding callbacks, then mark the job COMPLETED."""

    def fail(e=None):
        """Complete a NEW, PENDING or ASSIGNED job with a Failure of ``e``
        (TimeoutError by default) and run its callbacks."""

    def getRetryPolicy():
        """Return the job's retry policy, creating it once."""

    def setUp():
        """Hook called before the callable; returns ``setup_info``."""

    def tearDown(setup_info):
        """Hook called after the commit or abort of an attempt."""


class IAgent(zope.interface.common.sequence.IFiniteSequence):
    """Chooses jobs for one dispatcher in one queue and holds them."""

    size = zope.interface.Attribute('The most jobs held at once.')

    name = zope.interface.Attribute('The name in the dispatcher agents.')

    completed = zope.interface.Attribute(
        'An ICompletedCollection of recently finished jobs.')

    parent = zope.interface.Attribute('The IDispatcherAgents.')

    time_limit = zope.interface.Attribute(
        'None (the default), or a positive timedelta: the time limit of '
        'the jobs this agent claims that have none of their own (callbacks '
        'and zc.async\'s housekeeping jobs excepted).')

    batch_size = zope.interface.Attribute(
        'A positive int, 1 by default: how many small jobs a worker thread '
        'of a plain agent (no chooser) claims and runs in one transaction, '
        'each in a savepoint of its own (see zc.async.batches: a conflict '
        'of that commit runs every job of the batch again).  1 keeps one '
        'transaction per job, as in 1.5.')

    def get():
        """Declared in 1.5; the implementation's method is ``claimJob``."""

    def remove(item):
        """Remove ``item`` from the held jobs."""

    def __delitem__(index):
        """Remove the held job at ``index``."""

    def index(item):
        """The position of ``item`` (by identity); ValueError if absent."""


class IFilterAgent(IAgent):
    """An agent whose choice is a pure predicate over jobs."""

    filter = zope.interface.Attribute(
        'None (accept every job) or a side-effect free callable ``job -> '
        'bool`` saying whether this agent accepts ``job``, ignoring '
        'fullness.  An attribute, not a method, since it may be None.')


class IQueue(zc.queue.interfaces.IQueue):
    """Holds pending jobs, in ``begin_after`` order, and hands them out."""

    parent = zope.interface.Attribute('The IQueues mapping.')

    name = zope.interface.Attribute('The name in the IQueues mapping.')

    quotas = zope.interface.Attribute('The queue\'s Quotas mapping.')

    dispatchers = zope.interface.Attribute(
        'The Dispatchers mapping, UUID -> IDispatcherAgents.')

    schedules = zope.interface.Attribute(
        'The ISchedules mapping of the queue\'s recurring jobs, by name '
        '(made on first use).')
    unloadable_timeout = zope.interface.Attribute(
        'A timedelta (10 minutes unless set): how long a pending job that '
        'no live dispatcher of the queue can load waits before it is '
        'failed with UnloadableJobError (zero: at once).')

    def put(item, begin_after=None, begin_by=None, failure_log_level=None,
            retry_policy_factory=None, unique_key=None,
            on_duplicate='return', time_limit=None):
        """Adapt ``item`` to IJob, add it to the queue and return the job.

        The job must be NEW.  ``begin_after`` must be timezone-aware;
        ``begin_by`` is a timedelta after ``begin_after``; ``time_limit``
        sets the job's ``time_limit``.

        ``unique_key`` (a string): while a job put with that key is pending
        or running in this queue (until it completes, or leaves the queue
        unrun), return that job instead of adding ``item``; with
        ``on_duplicate='raise'``, raise DuplicateJobError instead.
        """

    def putBack(item):
        """Put an interrupted job at the front of the queue."""

    def pull(index=0):
        """Remove and return the job at ``index`` (claim order)."""

    def remove(item):
        """Remove ``item``; LookupError if it is not in the queue."""

    def claim(filter=None, default=None):
        """Remove and return the first due job that ``filter`` accepts and
        whose quotas have room, or a job failing an expired one; else
        ``default``."""


class IDispatcherAgents(zope.interface.common.mapping.IMapping):
    """A dispatcher's record in one queue: a mapping of agent name -> agent,
    with liveness data (``activated``, ``last_ping``, ``dead``)."""

    UUID = zope.interface.Attribute('The dispatcher UUID.')

    activated = zope.interface.Attribute('When activated, or None.')

    last_ping = zope.interface.Attribute(
        'A zope.minmax.Maximum whose ``value`` is the last ping time.')

    ping_interval = zope.interface.Attribute('A timedelta (30 s).')

    ping_death_interval = zope.interface.Attribute('A timedelta (60 s).')

    dead = zope.interface.Attribute(
        'True when the later of last ping and activation is more than '
        '``ping_death_interval`` ago.')

    instance_lock = zope.interface.Attribute(
        '``(host name, UUID file path, process id)`` of the process that '
        'activated the record while it held the lock on its instance UUID '
        'file, else None.  A later process that takes that lock knows the '
        'record\'s process has ended (see zc.async.instanceuuid).')

    unloadable = zope.interface.Attribute(
        'None, or an OOBTree {(database name, oid): first seen} of the '
        'pending jobs of the queue that this dispatcher found it cannot '
        'load (kept by the dispatcher\'s polls).')

    def activate():
        """Clean the agents, mark activated and fire DispatcherActivated."""

    def deactivate():
        """Mark deactivated, clean the agents and fire
        DispatcherDeactivated.

        Returns what the cleaning did, as ``[(job, what)]``: ``what`` says
        where each job held by the agents went (see
        ``zc.async.dispatcheragents.HANDED_BACK``).
        """

    def reactivate():
        """Mark activated again without cleaning; fire
        DispatcherReactivated."""


class IDispatchers(zope.interface.common.mapping.IEnumerableMapping):
    """A queue's mapping of dispatcher UUID -> IDispatcherAgents."""

    def register(UUID):
        """Create the dispatcher's record; ValueError if it exists."""

    def unregister(UUID):
        """Remove a deactivated dispatcher's record."""

    def ping(UUID):
        """Record that the dispatcher is alive and check on a sibling."""


class IQuota(zope.interface.common.sequence.IFiniteSequence):
    """A named, queue-wide concurrency limit."""

    name = zope.interface.Attribute('The quota name.')

    size = zope.interface.Attribute('How many jobs may be active at once.')

    parent = zope.interface.Attribute('The queue.')

    filled = zope.interface.Attribute('Whether ``len(quota) >= size``.')

    def clean():
        """Drop jobs that reached CALLBACKS/COMPLETED or were rescheduled."""

    def add(item):
        """Count ``item`` against the quota; ValueError if filled."""


class ISizedSequence(zope.interface.common.sequence.IFiniteSequence):
    """Declared for compatibility; unused."""

    size = zope.interface.Attribute('The maximum length.')

    def add(item):
        """Add ``item``; FullError if full."""


class ICompletedCollection(zope.interface.Interface):
    """Recently completed jobs, newest first, kept for about a week."""

    def __iter__():
        """Iterate newest first."""

    def iter(start=None, stop=None):
        """Iterate completion times from ``start`` (newer) to ``stop``."""

    def __len__():
        """The number of jobs kept."""

    def add(job):
        """Add a completed job, keyed by its completion time."""

    def first(start=None):
        """The newest job (at or before ``start``)."""

    def last(stop=None):
        """The oldest job (at or after ``stop``)."""

    def __nonzero__():
        """Whether any job is kept."""

    __parent__ = zope.interface.Attribute('The agent.')


class IUUID(zope.interface.Interface):
    """A marker for the instance UUID utility."""

