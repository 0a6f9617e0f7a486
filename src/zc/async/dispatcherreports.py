"""What a dispatcher records and tells of itself: its polls, its job
records, its status and statistics, and the events its listeners hear.

:class:`DispatcherReports` is a base class of
:class:`zc.async.dispatcher.Dispatcher`, which fills the records as it
polls: ``polls``, a rolling set of :class:`PollInfo` (newest first), and
``jobs``, a rolling mapping ``{(oid, database name): job info}`` that
worker threads update through the reactor thread.  The monitor
(:mod:`zc.async.monitor`) and tests read them through the 1.5 methods of
``IDispatcher`` (``getStatusInfo``, ``getJobInfo``, ``getPollInfo``,
``iterPolls``, ``getStatistics``, ``getActiveJobIds``).
"""
import datetime

import ZODB.utils

from . import clock
from . import logs
from .workers import _handoff, _utcnow

STOPPED = 'STOPPED'
RUNNING = 'RUNNING'
STUCK = 'STUCK'
STARTING = 'STARTING'
DEGRADED = 'DEGRADED'  # polling, but the last poll's claims failed


def _naive(dt):
    """``dt`` as a naive UTC datetime (naive values are taken as UTC)."""
    if dt.tzinfo is not None:
        dt = dt.astimezone(datetime.timezone.utc).replace(tzinfo=None)
    return dt


class PollInfo(dict):
    """What one poll saw: ``{queue name: None | {agent name: info}}``.

    An agent info has 'size', 'len', 'error' (None or a Failure), 'new
    jobs' (ids claimed by this poll) and 'active jobs' (ids held when the
    poll began).  None means the dispatcher is not activated in that queue.
    ``key`` is set when the poll is recorded (newer polls: smaller keys).
    """

    key = None

    @property
    def utc_timestamp(self):
        """When the poll was recorded, as a naive UTC datetime."""
        if self.key is not None:
            return _naive(clock.long_to_dt(self.key))


class DispatcherReports:
    """The records and reports of :class:`zc.async.dispatcher.Dispatcher`.
    """

    def _recordPoll(self, poll_info, new_infos):
        try:
            last = self.polls.first()
        except ValueError:
            last = None
        self.polls.add(poll_info)
        for info in new_infos:
            info['poll id'] = poll_info.key
        if last is None or last != poll_info:
            logs.tracelog.debug('poll %s: %r', poll_info.key, poll_info)

    def _claimedByWorker(self, jobid, info):
        """Record a job that a worker's commit claimed (see
        ``zc.async.workers``) as claimed by the newest poll."""
        self.jobs[jobid] = info
        last = self.getPollInfo()
        if last is not None:
            info['poll id'] = last.key
            agents = last.get(info['queue']) or {}
            if info['agent'] in agents:
                agents[info['agent']]['new jobs'].append(jobid)

    def _reportUnloadable(self, entry):
        """In a claiming thread: a job was found unloadable (see
        ``zc.async.unloadable``)."""
        self.reactor.callFromThread(self._claimError, {
            'queue': entry.queue_name, 'agent': None,
            'reason': 'unloadable'})

    @_handoff
    def _claimError(self, info):
        self.notify('claim error', info)

    def notify(self, event, info):
        """Call each of :attr:`listeners` as ``listener(event, info)``.

        Runs in the reactor thread.  Events: ``'poll'`` after each poll
        (info: ``'duration'``, the seconds its database half took, and
        ``'poll'``, its :class:`PollInfo`); ``'job started'`` and ``'job
        finished'`` for each job attempt a worker thread runs (info: the
        job's record, see :meth:`getJobInfo`; listeners must not change
        it); ``'claim error'`` for each claim that failed, and each job
        found unloadable (info: ``'queue'``, ``'agent'`` (None for an
        unloadable job) and ``'reason'``, ``'error'`` or
        ``'unloadable'``).
        """
        for listener in list(self.listeners):
            try:
                listener(event, info)
            except Exception:
                # An observer must never break the dispatcher.
                logs.log.exception('error in dispatcher listener %r',
                                   listener)

    def _pools(self):
        """Every pool, live or stopped (for tests and tear-down)."""
        yield from self._livePools()
        yield from self.dead_pools

    def getStatusInfo(self):
        """Status, poll interval, time since last poll, uptime and UUID.

        The status is STOPPED, STARTING, RUNNING, STUCK (no poll for a poll
        interval) or DEGRADED (the last poll's claims failed).
        """
        interval = datetime.timedelta(seconds=self.poll_interval)
        res = {'poll interval': interval, 'time since last poll': None,
               'uptime': None, 'uuid': self.UUID, 'status': STOPPED}
        if not self.activated:
            return res
        now = _utcnow()
        res['uptime'] = now - self.activated
        last = self.getPollInfo()
        if last is None:
            stuck = self.activated + interval < now
            res['status'] = STUCK if stuck else STARTING
        else:
            since = res['time since last poll'] = now - last.utc_timestamp
            res['status'] = (STUCK if since > interval
                             else DEGRADED if _claims_failed(last)
                             else RUNNING)
        return res

    def getJobInfo(self, oid, database_name=None):
        """A copy of the record of job ``oid`` (an int or packed oid)."""
        if isinstance(oid, bytes):
            oid = ZODB.utils.u64(oid)
        if database_name is None:
            names = [name for key, name in self.jobs if key == oid]
            if len(names) > 1:
                raise ValueError('ambiguous database name')
            if not names:
                raise ValueError('unknown job oid %d' % (oid,))
            database_name = names[0]
        jobid = (oid, database_name)
        info = dict(self.jobs[jobid])
        if not info['completed'] and not info['reassigned']:
            info['reassigned'] = self._missingFromLastPoll(info, jobid)
        return info

    def _missingFromLastPoll(self, info, jobid):
        last = self.getPollInfo()
        agents = last.get(info['queue']) if last is not None else None
        agent = (agents or {}).get(info['agent'])
        if agent is None:
            return last is not None and agents is not None
        return (jobid not in agent['active jobs']
                and jobid not in agent['new jobs'])

    def getActiveJobIds(self, queue=None, agent=None):
        """``(oid, db name)`` of the jobs this process's threads run now."""
        res = []
        for queue_name, pools in self.queues.items():
            if queue is not None and queue != queue_name:
                continue
            for name, pool in pools.items():
                if agent is None or agent == name:
                    res.extend(jobid for jobid in pool.jobids.values()
                               if jobid is not None)
        return res

    def getPollInfo(self, at=None, before=None):
        """The newest poll, at or before ``at``, or strictly before
        ``before`` (a poll key or a datetime); None if there is none."""
        for poll in self.iterPolls(at=at, before=before, count=1):
            return poll
        return None

    def iterPolls(self, at=None, before=None, since=None, count=None):
        """Polls, newest first, from ``at``/``before`` back to ``since``
        (inclusive), at most ``count`` of them."""
        if at is not None and before is not None:
            raise ValueError('may only provide one of `at` and `before`')
        if count is not None and count < 0:
            raise ValueError('count must be zero or more, not %r' % (count,))
        newest = _key(at, 0) if at is not None else None
        if before is not None:
            newest = _key(before, 15) + 1
        oldest = _key(since, 15) if since is not None else None
        found = 0
        for poll in list(self.polls):
            if count is not None and found >= count:
                return
            if newest is not None and poll.key < newest:
                continue
            if oldest is not None and poll.key > oldest:
                return
            found += 1
            yield poll

    def getStatistics(self, at=None, before=None, since=None, queue=None,
                      agent=None):
        """Counts and extremes of the jobs started by the chosen polls.

        'statistics start' is the oldest poll's time, 'statistics end' the
        newest's (naive UTC).
        """
        stats = _Statistics(self.jobs, _utcnow())
        for poll in self.iterPolls(at=at, before=before, since=since):
            stats.addPoll(poll, queue, agent)
        return stats.result()


def _claims_failed(poll):
    """Whether a claim of the poll ``poll`` (a PollInfo) failed."""
    return any(info['error'] is not None
               for agents in poll.values() if agents
               for info in agents.values())


def _key(value, ties):
    """A poll key for a key or a datetime (``ties``: its low-bit offset)."""
    if isinstance(value, datetime.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=datetime.timezone.utc)
        return clock.dt_to_long(value) + ties
    return value


class _Statistics:
    """Accumulates :meth:`Dispatcher.getStatistics` over polls."""

    def __init__(self, jobs, now):
        self.jobs = jobs
        self.now = now
        self.counts = {'started': 0, 'successful': 0, 'failed': 0,
                       'unknown': 0}
        self.durations = {'successful': [], 'failed': [], 'active': []}
        self.newest = self.oldest = None

    def addPoll(self, poll, queue, agent):
        self.newest = self.newest or poll.utc_timestamp
        self.oldest = poll.utc_timestamp
        for queue_name, agents in poll.items():
            if agents is None or queue not in (None, queue_name):
                continue
            for name, info in agents.items():
                if agent in (None, name):
                    for jobid in info['new jobs']:
                        self.addJob(jobid)

    def addJob(self, jobid):
        self.counts['started'] += 1
        info = self.jobs.get(jobid)
        if info is None:
            self.counts['unknown'] += 1
        elif info['completed'] and info['started']:
            kind = 'failed' if info['failed'] else 'successful'
            self.counts[kind] += 1
            self.durations[kind].append(
                (info['completed'] - info['started'], jobid))
        elif info['started'] and not info['reassigned']:
            self.durations['active'].append(
                (self.now - info['started'], jobid))

    def result(self):
        res = dict(self.counts)
        for kind, durations in self.durations.items():
            durations.sort(key=lambda item: item[0])
            res['shortest ' + kind] = durations[0][1] if durations else None
            res['longest ' + kind] = durations[-1][1] if durations else None
        res['statistics start'] = self.oldest
        res['statistics end'] = self.newest
        return res
