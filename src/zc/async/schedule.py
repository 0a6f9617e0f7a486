"""Recurring jobs: schedules that put a job in their queue at each tick.

``queue.schedules`` (a :class:`Schedules` mapping, made on first use) holds
:class:`Schedule` objects by name.  A schedule keeps a *template* job (a
:class:`zc.async.job.Job` that never runs: the callable, its arguments and
the job settings to copy), a rule (a ``cron`` expression read in a
``timezone``, or an ``every`` interval), and ``next_run``, its first tick
that has not fired yet.

Firing exactly once
-------------------

There is no separate scheduler process: every dispatcher, at each poll of
a queue, calls :func:`fire_due`, which puts a copy of the template in the
queue for each due tick and moves ``next_run`` past them, in the poll's
own transaction.  The job and the advanced schedule are one commit, so:

* two dispatchers firing the same tick at once both write the schedule;
  one commit wins, the other gets a ConflictError, and its retry finds the
  schedule advanced and puts nothing: each tick fires once, whatever the
  number of processes;
* a process that dies before its commit leaves the schedule as it was: the
  next poll of any dispatcher fires the tick; one that dies after it has
  put the job durably.  No tick is lost between them.

A schedule whose job cannot be made (a quota removed since, say) is logged
and left due, without stopping the others; it is retried at every poll.

Catching up
-----------

When no dispatcher polled for a while (all were down), several ticks may be
due at once.  ``catch_up`` decides what they put:

``'once'`` (the default)
    one job, for the latest due tick; the job's annotations tell the first
    tick it stands for.
``'all'``
    one job per due tick, in order, but at most :attr:`Schedule.max_catch_up`
    (100): the latest ones.  The older ones are logged and dropped, so a
    long downtime of an every-second schedule does not flood the queue.
``'skip'``
    nothing for the missed ticks; the latest due tick still fires if it is
    at most :attr:`Schedule.grace` (one minute) late, so a poll a few
    seconds late is not a miss.

In every case ``next_run`` becomes the next tick after now.

Overlapping jobs
----------------

With ``overlap=True`` (the default) each tick puts its job even if the
previous tick's job is still pending or running: ticks never wait for jobs.
With ``overlap=False`` a tick whose previous job is still pending, running
or in its callbacks puts nothing (it is logged as skipped), so at most one
job of the schedule is pending or running at a time.  (A job removed from
the queue does not hold the schedule back.)

Finding due schedules cheaply
-----------------------------

The mapping keeps the earliest ``next_run`` of its schedules in a small
record of its own (:class:`Earliest`, a ``zope.minmax.Minimum``).  A poll
reads that one record; only when it is due does it load the schedules
(and it stores the new earliest time after firing).  The value is a lower
bound, never later than a schedule's ``next_run``: adding a schedule
lowers it, concurrent changes merge to the earlier value, and a removed
schedule leaves it early, which costs one useless look at the schedules.
Dispatchers also wake up for the earliest time (a reactor call), so a tick
fires on time rather than at the next ``poll_interval`` heartbeat, and
they watch the record's invalidations (the queue's, until it has
schedules), so a new schedule is seen at once.

Cron rules, time zones and daylight saving time
-----------------------------------------------

``cron`` is a cron expression (five fields: minute, hour, day of month,
month, day of week; or ``@hourly``, ``@daily``, ``@weekly``,
``@monthly``, ``@yearly``), read by the croniter library, which also
accepts a sixth field for seconds.  It is matched against wall-clock times
in ``timezone`` (UTC by default), and each matching wall-clock time fires
once:

* when clocks go back, a time of the repeated hour fires at its first
  occurrence only (``30 2 * * *`` fires once, and an hourly rule fires
  nothing in the repeated hour);
* when clocks go forward, the times that do not exist fire together, once,
  at the moment of the change (``30 2 * * *`` fires at 03:00 that day).

``every`` is an exact duration: ticks fall on ``start + k * every``,
whatever the time zone (``timezone`` is refused with ``every``).
"""
import datetime
import zoneinfo

import croniter
import zope.interface
import zope.minmax

from . import clock
from . import interfaces
from . import logs
from . import pickling
from . import txn
from . import utils
from .job import Job

UTC = clock.UTC

#: The values of ``catch_up``.
CATCH_UP = ('once', 'all', 'skip')

#: Annotation keys of a tick's job: the schedule's name, the tick (an
#: aware UTC datetime), and, for a ``catch_up='once'`` job standing for
#: several ticks, the first of them.
SCHEDULE_KEY = 'zc.async.schedule'
TICK_KEY = 'zc.async.tick'
SINCE_KEY = 'zc.async.missed_since'

# The template's job settings that each tick's job copies.
_COPIED = ('retry_policy_factory', 'failure_log_level', 'begin_by',
           'quota_names')

# The statuses of a job that ``overlap=False`` waits for.
_UNFINISHED = (interfaces.PENDING, interfaces.ASSIGNED, interfaces.ACTIVE,
               interfaces.CALLBACKS)

_TINY = datetime.timedelta(microseconds=1)
_NONE = datetime.timedelta(0)


@zope.interface.implementer(interfaces.ISchedule)
class Schedule(utils.Base):
    """See :class:`zc.async.interfaces.ISchedule`."""

    __module__ = 'zc.async.schedule'

    # Class defaults are also the values of fields older pickles lack.
    name = None
    cron = every = start = None
    _zone = None  # an IANA zone name, a stored tzinfo, or None for UTC
    catch_up = 'once'
    overlap = True
    next_run = last_run = last_job = None
    _anchor = None  # every=: ticks fall on _anchor + k * every

    #: How late the latest due tick may fire under ``catch_up='skip'``.
    grace = datetime.timedelta(minutes=1)
    #: The most jobs ``catch_up='all'`` puts at once (the latest ticks).
    max_catch_up = 100

    def __init__(self, callable, *args, cron=None, every=None, timezone=None,
                 start=None, catch_up='once', overlap=True, **kwargs):
        self.cron, self.every, self._zone = _check_rule(
            cron, every, timezone)
        self.start = _check_aware(start, 'start')
        if catch_up not in CATCH_UP:
            raise ValueError('catch_up must be one of %s, not %r' % (
                ', '.join(map(repr, CATCH_UP)), catch_up))
        if not isinstance(overlap, bool):
            raise TypeError('overlap must be True or False, not %r'
                            % (overlap,))
        self.catch_up = catch_up
        self.overlap = overlap
        self.job = _template(callable, args, kwargs)
        now = clock.now()
        begin = now if start is None else max(start, now)
        if every is not None:
            # UTC: aware arithmetic in a zone would add wall-clock time.
            self._anchor = (now + every if start is None else start
                            ).astimezone(UTC)
            begin = max(begin, self._anchor)
        self.next_run = self.nextTick(begin - _TINY)

    def __repr__(self):
        return '<%s %r: %s>' % (logs.custom_repr(self), self.name, self.rule)

    @property
    def timezone(self):
        """The tzinfo ``cron`` is read in."""
        zone = self._zone
        if isinstance(zone, str):
            # Stored by name: ZODB's pickler cannot store a ZoneInfo.
            return zoneinfo.ZoneInfo(zone)
        return UTC if zone is None else zone

    @property
    def rule(self):
        """The rule in words: ``cron '0 3 * * *' in Europe/Berlin`` or
        ``every 0:01:00``."""
        if self.cron is None:
            return 'every %s' % (self.every,)
        return 'cron %r in %s' % (self.cron, _zone_name(self._zone))

    # ------------------------------------------------------------ ticks

    def nextTick(self, after):
        """The first tick strictly after the aware datetime ``after``."""
        after = _check_aware(after, 'after')
        if self.cron is None:
            if after < self._anchor:
                return self._anchor
            return self._anchor + ((after - self._anchor) // self.every
                                   + 1) * self.every
        return _cron_next(self.cron, self.timezone, after)

    def lastTick(self, until):
        """The last tick at or before the aware datetime ``until`` (None if
        an ``every`` rule has none)."""
        until = _check_aware(until, 'until')
        if self.cron is None:
            if until < self._anchor:
                return None
            return self._anchor + ((until - self._anchor) // self.every
                                   ) * self.every
        return _cron_last(self.cron, self.timezone, until)

    # ------------------------------------------------------------ firing

    def newJob(self):
        """A new job copied from the template: callable, arguments and
        ``retry_policy_factory``, ``failure_log_level``, ``begin_by`` and
        ``quota_names``."""
        template = self.job
        job = type(template)(template.callable, *template.args,
                             **template.kwargs)
        for name in _COPIED:
            setattr(job, name, getattr(template, name))
        return job

    def _fire(self, queue, now):
        """Put the jobs of the ticks due by ``now`` in ``queue`` and move
        ``next_run`` to the next tick after ``now``."""
        due = self.next_run
        latest = max(due, self.lastTick(now) or due)
        self.next_run = self.nextTick(now)
        if not self.overlap and self._running():
            logs.log.info(
                'schedule %r of queue %r: no job for its ticks from %s to %s,'
                ' as its last job %r is not finished', self.name,
                queue.name, due, latest, self.last_job)
            return
        ticks, since = self._ticks(due, latest, now)
        for tick in ticks:
            job = self.newJob()
            job.annotations[SCHEDULE_KEY] = self.name
            job.annotations[TICK_KEY] = tick
            if since is not None:
                job.annotations[SINCE_KEY] = since
            self.last_job = queue.put(job)
            self.last_run = tick
        if ticks[:1] != [due]:  # logged once the jobs are put
            logs.log.warning(
                'schedule %r of queue %r missed its ticks from %s to %s'
                ' (catch_up=%r, %d job(s) put)', self.name, queue.name, due,
                self.lastTick(ticks[0] - _TINY) if self.catch_up == 'all'
                else latest,
                self.catch_up, len(ticks))
        logs.tracelog.debug('schedule %r of queue %r put %d job(s)',
                            self.name, queue.name, len(ticks))

    def _ticks(self, due, latest, now):
        """``(ticks to fire, first tick a 'once' job stands for or None)``
        for the due ticks from ``due`` to ``latest``."""
        if self.catch_up == 'skip':
            return ([] if now - latest > self.grace else [latest]), None
        if self.catch_up == 'once' or due == latest:
            return [latest], (None if due == latest else due)
        ticks = [latest]  # 'all': the latest max_catch_up ticks
        while len(ticks) < self.max_catch_up:
            tick = self.lastTick(ticks[-1] - _TINY)
            if tick is None or tick < due:
                break
            ticks.append(tick)
        ticks.reverse()
        return ticks, None

    def _running(self):
        """Whether the last job put is pending, running or in callbacks (a
        job removed from its queue is not)."""
        job = self.last_job
        return job is not None and job.status in _UNFINISHED


@zope.interface.implementer(interfaces.ISchedules)
class Schedules(utils.Dict):
    """See :class:`zc.async.interfaces.ISchedules`."""

    __module__ = 'zc.async.schedule'

    def __init__(self):
        super().__init__()
        self._earliest = Earliest()

    def __setitem__(self, name, schedule):
        if not isinstance(name, str):
            raise TypeError('a schedule name must be a string, not %r'
                            % (name,))
        if not interfaces.ISchedule.providedBy(schedule):
            raise TypeError('queue.schedules holds Schedule objects, not %r'
                            % (schedule,))
        if schedule.parent is not None:
            raise ValueError('%r is already in queue.schedules as %r'
                             % (schedule, schedule.name))
        self.pop(name, None)  # a replaced schedule forgets its place
        super().__setitem__(name, schedule)
        self._earliest.lower(schedule.next_run)

    @property
    def earliest(self):
        """No schedule's ``next_run`` is before this (None: no schedule
        was ever added)."""
        return self._earliest.value


class Earliest(zope.minmax.Minimum):
    """The earliest ``next_run`` of a :class:`Schedules` mapping, or
    earlier: concurrent changes resolve to the earlier value."""

    __module__ = 'zc.async.schedule'

    def lower(self, value):
        """Make the value ``value`` if that is earlier.

        Writes the record even if not: a dispatcher storing a later value
        at the same time then conflicts with this change, and the resolver
        keeps the earlier of the two.
        """
        if self.value is None or value < self.value:
            self.value = value
        else:
            self._p_changed = True

    def _p_resolveConflict(self, old, committed, new):
        values = [value for value in (committed, new) if value is not None]
        return min(values) if values else None


def equivalent(a, b):
    """Whether schedules ``a`` and ``b`` have the same rule, options and
    job (callable, arguments and copied settings)."""
    return _definition(a) == _definition(b)


def _definition(schedule):
    job = schedule.job
    return (schedule.cron, schedule.every, _zone_name(schedule._zone),
            schedule.start, schedule.catch_up, schedule.overlap,
            type(job), job.callable, list(job.args), dict(job.kwargs),
            [getattr(job, name) for name in _COPIED])


# -------------------------------------------------- used by dispatchers

def schedules_of(queue):
    """``queue``'s :class:`Schedules`, or None if it never had one (reading
    ``queue.schedules`` would make one)."""
    return getattr(queue, '_schedules', None)


def next_due(queue):
    """When the next tick of ``queue``'s schedules may be due, or None."""
    schedules = schedules_of(queue)
    return None if schedules is None else schedules.earliest


def watched(queue):
    """The record whose changes may make ``queue``'s next tick earlier:
    dispatchers watch its invalidations.  The queue itself until it has
    schedules (adding the first one writes it)."""
    schedules = schedules_of(queue)
    return queue if schedules is None else schedules._earliest


def fire_due(queue):
    """Fire the due ticks of ``queue``'s schedules, in the current
    transaction (the caller commits); return the earliest ``next_run``.

    A schedule that cannot fire (for an error that is neither a conflict
    nor a disconnect, which propagate) is logged, rolled back to a
    savepoint and left due: the earliest time stays the stored one, so
    nothing is written for it, and dispatchers try it again at their next
    poll rather than wake each other up.
    """
    schedules = schedules_of(queue)
    if schedules is None:
        return None
    now = clock.now()
    stored = schedules.earliest
    if stored is None or stored > now:
        return stored
    earliest = None
    tm = queue._p_jar.transaction_manager
    for name, schedule in schedules.items():
        savepoint = tm.savepoint(optimistic=True)
        try:
            if schedule.next_run <= now:
                schedule._fire(queue, now)
            next_run = schedule.next_run
        except Exception as e:
            if txn._error_kind(e) != 'other':
                raise
            savepoint.rollback()
            logs.log.error('cannot fire schedule %r of queue %r',
                           name, queue.name, exc_info=True)
            next_run = stored  # no later than its own next_run
        earliest = next_run if earliest is None else min(earliest, next_run)
    if earliest != stored:
        schedules._earliest.value = earliest
    return earliest


# ------------------------------------------------------------ checking

def _check_rule(cron, every, timezone):
    """``(cron, every, timezone)`` checked; exactly one rule is given."""
    if (cron is None) == (every is None):
        raise ValueError('give a schedule exactly one rule: cron=... or'
                         ' every=... (got %s)' % (
                             'both' if cron is not None else 'neither',))
    if every is not None:
        if not isinstance(every, datetime.timedelta):
            raise TypeError('every must be a datetime.timedelta, not %r'
                            % (every,))
        if every <= _NONE:
            raise ValueError('every must be a positive interval, not %r'
                             % (every,))
        if timezone is not None:
            raise ValueError('timezone applies to cron rules only: every=%r'
                             ' is an exact interval' % (every,))
        return None, every, None
    if not isinstance(cron, str):
        raise TypeError('cron must be a cron expression string, not %r'
                        % (cron,))
    timezone = _check_zone(timezone)
    try:
        ticks = croniter.croniter(cron)
    except (croniter.CroniterError, ValueError) as e:
        raise ValueError('invalid cron expression %r: %s' % (cron, e))
    try:
        ticks.get_next(datetime.datetime)
    except croniter.CroniterBadDateError:
        raise ValueError('cron expression %r matches no date from now on'
                         % (cron,))
    return cron, None, timezone


def _check_zone(timezone):
    """The stored form of ``timezone`` (None: UTC; an IANA name, as for a
    ZoneInfo or pytz zone; or a tzinfo that pickles)."""
    if timezone is None or timezone is UTC:
        return None
    if isinstance(timezone, zoneinfo.ZoneInfo) or hasattr(
            timezone, 'localize'):
        # ZoneInfo by name; pytz zones give wrong offsets to
        # datetime.replace(tzinfo=...): use the standard library's zone.
        timezone = getattr(timezone, 'key', getattr(timezone, 'zone', None))
        if timezone is None:
            raise TypeError('give the name of a time zone that was read'
                            ' from a file')
    if isinstance(timezone, str):
        try:
            zoneinfo.ZoneInfo(timezone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError('unknown time zone %r (give an IANA name such'
                             ' as "Europe/Berlin", or a tzinfo)'
                             % (timezone,))
        return timezone
    if not isinstance(timezone, datetime.tzinfo):
        raise TypeError('timezone must be a time zone name or a tzinfo,'
                        ' not %r' % (timezone,))
    problem = pickling.pickling_problem(timezone)
    if problem is not None:
        raise TypeError('timezone %r cannot be stored (%s)'
                        % (timezone, problem))
    return timezone


def _check_aware(value, argname):
    """``value`` unchanged; it must be None or an aware datetime."""
    if value is None:
        return None
    if not isinstance(value, datetime.datetime):
        raise TypeError('%s must be a datetime, not %r' % (argname, value))
    if value.utcoffset() is None:
        raise ValueError('cannot use timezone-naive values (%s=%r)'
                         % (argname, value))
    return value


def _template(callable, args, kwargs):
    """The template job of a schedule: a new Job of ``callable(*args,
    **kwargs)``, or ``callable`` itself if it is a new job."""
    if not interfaces.IJob.providedBy(callable):
        job = Job(callable, *args, **kwargs)
    elif args or kwargs:
        raise TypeError('give the arguments to the job, not to Schedule,'
                        ' when the callable is a job (%r)' % (callable,))
    elif callable.status != interfaces.NEW or callable.parent is not None:
        raise ValueError('a schedule needs a new job that is in no queue,'
                         ' not %r' % (callable,))
    elif len(callable.callbacks):
        raise ValueError('a schedule copies its job\'s callable, arguments'
                         ' and settings, not callbacks: %r has some'
                         % (callable,))
    else:
        job = callable
    job._check_picklable()
    return job


def _zone_name(zone):
    """The name of a stored zone (see :func:`_check_zone`)."""
    return 'UTC' if zone is None else str(zone)


# ------------------------------------------------------------ cron

def _cron_next(expr, timezone, after):
    """The first tick of ``expr`` in ``timezone`` strictly after
    ``after``.

    Wall-clock times are iterated from the reading at ``after``; their
    instants (see :func:`_instant`) never decrease as they grow, so the
    first one after ``after`` is the answer.
    """
    ticks = croniter.croniter(expr, _wall(after, timezone))
    while True:
        tick = _instant(ticks.get_next(datetime.datetime), timezone)
        if tick > after:
            return tick


def _cron_last(expr, timezone, until):
    """The last tick of ``expr`` in ``timezone`` at or before ``until``."""
    local = until.astimezone(timezone)
    # In the second occurrence of a repeated hour, the first occurrence of
    # later wall times is already past: start after them.
    repeated = (local.replace(fold=0).utcoffset()
                - local.replace(fold=1).utcoffset())
    start = local.replace(tzinfo=None) + max(repeated, _NONE) + _TINY
    ticks = croniter.croniter(expr, start)
    while True:
        tick = _instant(ticks.get_prev(datetime.datetime), timezone)
        if tick <= until:
            return tick


def _wall(instant, timezone):
    """The naive wall-clock reading in ``timezone`` at ``instant``."""
    return instant.astimezone(timezone).replace(tzinfo=None)


def _instant(wall, timezone):
    """The aware UTC instant of the naive wall-clock time ``wall``.

    A repeated time is taken at its first occurrence; a skipped one (clocks
    went forward) at the first instant after the gap.
    """
    instant = wall.replace(tzinfo=timezone).astimezone(UTC)
    if _wall(instant, timezone) == wall:
        return instant
    # Skipped: fold=1 reads it with the offset after the change, which
    # gives an instant before the gap.  Bisect the seconds between.
    low = int(wall.replace(tzinfo=timezone, fold=1).timestamp())
    high = int(instant.timestamp())
    while high - low > 1:
        middle = (low + high) // 2
        if _wall(datetime.datetime.fromtimestamp(middle, UTC),
                 timezone) > wall:
            high = middle
        else:
            low = middle
    return datetime.datetime.fromtimestamp(high, UTC)
