"""Queues hold pending jobs and hand them to agents.

``root['zc.async']`` is a :class:`Queues` mapping of name -> :class:`Queue`
(the default queue is named ``''``).  A queue keeps its jobs in three stores:

* the put-back FIFO: interrupted jobs to be retried before anything else;
* the due FIFO (a conflict-resolving :class:`DueFIFO`): jobs whose
  ``begin_after`` had come when they were put;
* the scheduled BTree, keyed by ``(begin_after, database name, oid)``: jobs
  put with a future ``begin_after``.

Claim order is the put-back FIFO, then the due FIFO and the scheduled BTree
merged by ``begin_after`` (scheduled first on ties).  Putting a job writes
only the due FIFO's last bucket (or a BTree bucket), a length counter and
the new job, so concurrent puts resolve instead of conflicting.

The due FIFO and the put-back FIFO of a new queue are two-level
:class:`DueFIFO` composites whose conflict resolution lets puts and
claims of the same bucket merge: see :mod:`zc.async.duefifo`.  This
module re-exports its classes, whose pickled paths are
``zc.async.queue.DueFIFO``, ``DueSegment`` and ``DueBucket``.
"""
import datetime
import itertools

import BTrees.Length
import BTrees.OOBTree
import persistent
import persistent.interfaces
import zope.component
import zope.interface
import ZODB.interfaces

from . import clock
from . import duefifo
from . import interfaces
from . import loadable
from . import logs
from . import pgnotify
from . import twist
from . import unique
from . import unloadable
from . import utils
from .dispatcheragents import DispatcherAgents, Dispatchers  # noqa: F401
from .duefifo import DueBucket, DueFIFO, DueSegment  # noqa: F401  (pickled)
from .job import Job
from .quota import Quota, Quotas  # noqa: F401
from .schedule import Schedules


@zope.component.adapter(persistent.interfaces.IPersistent)
@zope.interface.implementer(interfaces.IQueue)
def getDefaultQueue(obj):
    """The default queue (``root[KEY]['']``) of ``obj``'s database.

    ``obj`` is a persistent object stored in (or below an object stored in)
    a database, or a connection.
    """
    if ZODB.interfaces.IConnection.providedBy(obj):
        conn = obj
    else:
        conn = twist.connection(obj)
        if conn is None:
            raise ValueError('%r is not stored in a database' % (obj,))
    root = conn.root()
    if interfaces.KEY not in root:
        raise KeyError('no zc.async queues in the database root',
                       interfaces.KEY)
    if '' not in root[interfaces.KEY]:
        raise KeyError('no default queue in the zc.async queues', '')
    return root[interfaces.KEY]['']


class Queues(utils.Dict):
    """The queues by name, under ``root[KEY]``; values must be IQueue."""

    __module__ = 'zc.async.queue'

    def __setitem__(self, key, value):
        if not interfaces.IQueue.providedBy(value):
            raise ValueError('value must be IQueue')
        super().__setitem__(key, value)


@zope.interface.implementer(interfaces.IQueue)
class Queue(utils.Base):
    """See :class:`zc.async.interfaces.IQueue`."""

    __module__ = 'zc.async.queue'

    name = None
    _putback_queue = None  # 1.5 queues create it on their first putBack
    _schedules = None  # see the schedules property
    _unique_jobs = None  # made by the first put with a unique key
    _unloadable_timeout = unloadable.DEFAULT_TIMEOUT

    def __init__(self):
        self._queue = duefifo.new_fifo()  # due FIFO
        self._held = BTrees.OOBTree.OOBTree()  # {(begin_after, db, oid): job}
        self._putback_queue = duefifo.new_fifo()
        # Every put, putBack, claim, pull and remove changes this counter;
        # dispatchers watch its invalidations to wake up when work arrives.
        self._length = BTrees.Length.Length(0)
        self.quotas = Quotas()
        self.quotas.__parent__ = self
        self.dispatchers = Dispatchers()
        self.dispatchers.__parent__ = self

    @property
    def schedules(self):
        """The queue's recurring jobs (see :mod:`zc.async.schedule`).

        Made on first use, so that queues stored before schedules existed
        load unchanged; reading it then writes the queue once.
        """
        if self._schedules is None:
            self._schedules = Schedules()
            self._schedules.parent = self
        return self._schedules

    # ---------------------------------------------------------- putting

    def put(self, item, begin_after=None, begin_by=None,
            failure_log_level=None, retry_policy_factory=None,
            unique_key=None, on_duplicate='return', time_limit=None):
        """Add ``item`` (adapted to IJob) to the queue; return the job.

        With a ``unique_key``, return (or raise DuplicateJobError about)
        the job holding that key in this queue instead, if there is one:
        see :mod:`zc.async.unique`.
        """
        job = _adapt(item)
        key = unique.check(job, unique_key, on_duplicate)
        # Check everything before changing anything: a refused job is as
        # it was.
        self._check_puttable(job)
        unloadable.warn_if_main(job)
        begin_after = _check_aware(begin_after, 'begin_after')
        conn = self._connection() if job._p_jar is None else None
        if begin_by is not None:
            job.begin_by = begin_by  # its setter refuses negative values
        if key is not None:
            held = unique.holder(self, key)
            if held is not None:
                return unique.duplicate(self, key, held, on_duplicate)
        if time_limit is not None:
            job.time_limit = time_limit  # its setter checks the value
        now = clock.now()
        if begin_after is not None:
            job.begin_after = begin_after
        elif job.begin_after is None:
            job.begin_after = now
        if failure_log_level is not None:
            job.failure_log_level = failure_log_level
        if retry_policy_factory is not None:
            job.retry_policy_factory = retry_policy_factory
        if job.assignerUUID is None:  # a rescheduled job keeps its assigner
            job.assignerUUID = _instance_uuid()
        if conn is not None:
            conn.add(job)  # gives the oid that scheduled jobs are keyed by
        if key is not None:
            unique.register(self, key, job)
        self._store(job, now)
        return job

    def _requeue(self, job):
        """Put back a NEW job that an agent held but never started.

        It keeps its ``begin_after`` and ``assignerUUID`` and is not checked
        again: a quota removed meanwhile must not make cleaning fail.
        """
        self._store(job, clock.now())

    def _check_puttable(self, job):
        if job.status != interfaces.NEW:
            raise ValueError('cannot add already-assigned job')
        for name in job.quota_names:
            if name not in self.quotas:
                raise ValueError('unknown quota name', name)
        job._check_picklable()

    def _store(self, job, now):
        """File a NEW job with its ``begin_after`` set as pending."""
        if job.begin_after <= now:
            duefifo.append(self._queue, job)
        else:
            self._held[_scheduled_key(job)] = job
        job.parent = self
        self._length.change(1)
        pgnotify.work_due(self)  # RelStorage on PostgreSQL: wake dispatchers

    def putBack(self, item):
        """Put an interrupted job back, ahead of every other job."""
        if not interfaces.IJob.providedBy(item):
            raise TypeError('can only put back an IJob, not %r' % (item,))
        if item.status != interfaces.NEW:
            raise ValueError('can only put back a NEW job, not %s: %r'
                             % (item.status, item))
        if item.begin_after is None or item._p_jar is None:
            raise ValueError('can only put back a job that was queued before: '
                             '%r' % (item,))
        if self._putback_queue is None:  # a 1.5 queue: FIFO as its due FIFO
            self._putback_queue = duefifo.new_fifo(type(self._queue),
                                            self._queue.subfactory)
        duefifo.append(self._putback_queue, item)
        item.parent = self
        self._length.change(1)
        pgnotify.work_due(self)

    @property
    def unloadable_timeout(self):
        """How long a pending job that no live dispatcher of this queue can
        load waits before it is failed (a timedelta; zero: at once)."""
        return self._unloadable_timeout

    @unloadable_timeout.setter
    def unloadable_timeout(self, value):
        if not isinstance(value, datetime.timedelta):
            raise TypeError('unloadable_timeout must be a timedelta, not %r'
                            % (value,))
        if value < datetime.timedelta(0):
            raise ValueError('unloadable_timeout must not be negative, not '
                             '%s' % (value,))
        self._unloadable_timeout = value

    def _connection(self):
        conn = twist.connection(self)
        if conn is None:
            raise ValueError('%r must be stored in a database (commit it) '
                             'before jobs are put in it' % (self,))
        return conn

    # --------------------------------------------------------- claiming

    def claim(self, filter=None, default=None):
        """Remove and return the first job an agent may start; see IQueue.

        Walks in claim order and stops at the first job that is not due yet,
        so the cost depends on the jobs passed over, not the queue size.
        """
        return self._claim(filter, default)

    def _claim(self, filter=None, default=None, prefer=None, window=1,
               grace=None, waiting=None, unloadable=None,
               fail_unloadable=False):
        """``claim``, taking the first job that ``prefer(job)`` accepts
        among the first ``window`` jobs if one can be claimed, else the
        first one that can and has been due for ``grace`` (a timedelta) at
        least.  ``prefer`` judges a job without loading it (by its oid,
        say): the jobs it passes over are not loaded.  When a job due for
        less than ``grace`` is left, its ``begin_after`` is appended to the
        list ``waiting``.

        Dispatchers of several processes claiming at the same time would
        all take the first job, and all but one commit would conflict: each
        prefers its own share of the jobs instead, and leaves the others'
        to them for a little while.

        Jobs that this process cannot load are passed over: ``unloadable``
        is the claiming dispatcher's :class:`zc.async.unloadable.Registry`
        (by default, that of this process's dispatcher); with
        ``fail_unloadable``, a job failing one whose time has come may be
        returned instead.
        """
        if not self._length():
            return default
        now = clock.now()
        cleaned = set()  # quota names cleaned during this claim
        bad = _BadJobs(self, unloadable, fail_unloadable, now)
        found = None
        if prefer is not None:
            found = self._first_claimable(
                (pair for pair in itertools.islice(self._iter(), window)
                 if prefer(pair[0])), filter, now, now, cleaned, bad=bad)
        if found is None:
            due_by = now if grace is None else now - grace
            found = self._first_claimable(
                self._iter(), filter, now, due_by, cleaned, waiting, bad)
        return default if found is None else self._take_claimed(*found)

    def _first_claimable(self, pairs, filter, now, due_by, cleaned,
                         waiting=None, bad=None):
        """``(job, remove, candidate, quotas)`` for the first of the ``(job,
        remove)`` pairs, due by ``due_by``, that can be claimed ``now``; or
        None, after noting in ``waiting`` when the first one due by ``now``
        but not by ``due_by`` was due.

        ``bad`` (a :class:`_BadJobs`) passes over the jobs this process
        cannot load; a job failing one of them is a candidate whose
        ``job`` and ``remove`` are None (the job stays queued: it is taken
        out by the failing job).
        """
        for job, remove in pairs:
            begin_after = loadable.due_time(job)
            if begin_after > due_by:
                if waiting is not None and begin_after <= now:
                    waiting.append(begin_after)
                break
            entry = None if bad is None else bad.check(job)
            if entry is not None:
                candidate = bad.failing_job(job, entry)
                if candidate is not None and (
                        filter is None or filter(candidate)):
                    return None, None, candidate, ()
                continue
            if _expired(job, now):
                candidate, quotas = _timeout_job(job, now), ()
            else:
                candidate, quotas = job, self._quotas_with_room(job, cleaned)
                if quotas is None:
                    continue
            if filter is None or filter(candidate):
                return job, remove, candidate, quotas
        return None

    def _take_claimed(self, job, remove, candidate, quotas):
        if job is None:  # a job failing one that cannot be loaded
            return candidate
        self._take(job, remove)
        if candidate is not job and job.unique_key is not None:
            unique.release(self, job)  # it missed its deadline: never runs
        for quota in quotas:
            quota.add(job)
        return candidate

    def _quotas_with_room(self, job, cleaned):
        """The job's existing quotas, or None if one of them is full."""
        quotas = []
        for name in job.quota_names:
            quota = self.quotas.get(name)
            if quota is None:  # removed since the job was put: ignored
                continue
            if name not in cleaned:
                quota.clean()
                cleaned.add(name)
            if quota.filled and job not in quota:
                return None
            quotas.append(quota)
        return quotas

    def _take(self, job, remove):
        """Remove ``job`` from its store; it is nobody's until reparented."""
        remove()
        self._length.change(-1)
        job.parent = None

    # ------------------------------------------------------ client removal

    def pull(self, index=0):
        """Remove and return the job at ``index`` in claim order."""
        length = len(self)
        position = index + length if index < 0 else index
        if not 0 <= position < length:
            raise IndexError(index)
        for ix, (job, remove) in enumerate(self._iter()):
            if ix == position:
                return self._unqueue(job, remove)
        raise IndexError(index)  # the length counter disagreed with stores

    def remove(self, item):
        """Remove ``item`` from the queue."""
        remove = self._locate(item)
        if remove is None:
            raise LookupError('item not in queue', item)
        self._unqueue(item, remove)

    def _locate(self, item):
        """The ``remove`` callable of ``item``, or None if it is not here."""
        if getattr(item, 'parent', None) is not self:
            return None
        key = _scheduled_key(item)
        if self._held.get(key) is item:  # no walk for scheduled jobs
            return lambda: self._held.__delitem__(key)
        fifos = [duefifo.iter_fifo(self._queue)]
        if self._putback_queue is not None:
            fifos.insert(0, duefifo.iter_fifo(self._putback_queue))
        for job, remove in itertools.chain(*fifos):
            if job is item:
                return remove
        return None

    def _unqueue(self, job, remove):
        self._take(job, remove)
        job.assignerUUID = None
        if job.unique_key is not None:
            unique.release(self, job)
        return job

    def _discard(self, item):
        """Take ``item`` out of the queue without changing it; whether it
        was here.  For a job whose class is missing in this process (it
        cannot be changed, nor even read)."""
        for job, remove in self._iter():
            if job is item:
                remove()
                self._length.change(-1)
                return True
        return False

    # --------------------------------------------------------- sequence

    def _iter(self):
        """Yield ``(job, remove)`` in claim order; ``remove()`` takes the job
        out of its store (stop iterating afterwards)."""
        if self._held:
            due = utils.sortedmerge(
                [self._iter_scheduled(), duefifo.iter_fifo(self._queue)],
                key=lambda pair: loadable.due_time(pair[0]))
        else:  # nothing to merge: no job loaded for its begin_after
            due = duefifo.iter_fifo(self._queue)
        if self._putback_queue is not None:
            yield from duefifo.iter_fifo(self._putback_queue)
        yield from due

    def _iter_scheduled(self):
        for key, job in self._held.items():
            yield job, lambda key=key: self._held.__delitem__(key)

    def __iter__(self):
        return (job for job, remove in self._iter())

    def __getitem__(self, index):
        if isinstance(index, slice):
            return list(self)[index]
        length = len(self)
        position = index + length if index < 0 else index
        if not 0 <= position < length:
            raise IndexError(index)
        for ix, job in enumerate(self):
            if ix == position:
                return job
        raise IndexError(index)

    def __len__(self):
        return self._length()

    def __bool__(self):
        return bool(self._length())

    __nonzero__ = __bool__

    def __repr__(self):
        return '<%s %r>' % (logs.custom_repr(self), self.name)


# ------------------------------------------------------------------ helpers

def _adapt(item):
    """``item`` as an IJob: adapted, or wrapped in a Job if only callable."""
    job = interfaces.IJob(item, None)
    if job is not None:
        return job
    if not callable(item):
        raise TypeError('cannot put %r in a queue: it is neither a job nor '
                        'callable' % (item,))
    return Job(item)


def _check_aware(value, argname):
    """``value`` unchanged; it must be None or an aware datetime."""
    if value is None:
        return None
    if not isinstance(value, datetime.datetime):
        raise TypeError('%s must be a datetime, not %r' % (argname, value))
    if value.tzinfo is None:
        raise ValueError('cannot use timezone-naive values (%s=%r)'
                         % (argname, value))
    return value


def _instance_uuid():
    """The instance UUID utility, or None when none is registered."""
    return zope.component.queryUtility(interfaces.IUUID)


def _scheduled_key(job):
    return (job.begin_after, job._p_jar.db().database_name, job._p_oid)


def _expired(job, now):
    """Whether ``job`` missed its ``begin_by`` deadline."""
    return (job.begin_by is not None
            and job.begin_after + job.begin_by < now)


def _timeout_job(job, now):
    """A new job that fails ``job`` with a TimeoutError when run."""
    res = _adapt(job.fail)
    res.args.append(interfaces.TimeoutError())
    return _stamped(res, now)


def _stamped(job, now):
    """The new job ``job``, made by a claim, as if put at ``now``."""
    job.begin_after = now
    job.assignerUUID = _instance_uuid()
    return job


class _BadJobs:
    """The jobs one claim passes over because this process cannot load
    them (see :mod:`zc.async.unloadable`)."""

    def __init__(self, queue, registry, may_fail, now):
        self.queue = queue
        self.registry = (unloadable.process_registry(queue._p_jar.db())
                         if registry is None else registry)
        self.may_fail = may_fail
        self.now = now

    def check(self, job):
        """The registry entry of ``job`` if it cannot be run here, else
        None."""
        return self.registry.check(job, self.queue)

    def failing_job(self, job, entry):
        """A job failing ``job`` (of ``entry``) when that is due, or None.
        """
        if not self.may_fail:
            return None
        res = self.registry.failing_job(job, entry, self.queue)
        return None if res is None else _stamped(res, self.now)
