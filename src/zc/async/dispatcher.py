"""A dispatcher polls queues on a reactor clock and hands claimed jobs to
worker threads.

One :class:`Dispatcher` runs per process (per instance UUID).  It is driven
by a reactor (:class:`zc.async.interfaces.IReactor`): once activated, it
polls every ``poll_interval`` seconds.  A poll syncs its connection, finds
``root['zc.async']`` and, for each queue, registers and activates this
dispatcher's record (a :class:`zc.async.queue.DispatcherAgents`), pings it,
and lets each agent claim jobs, which go to that agent's
:class:`~zc.async.workers.AgentThreadPool` (also importable from here):
daemon threads, each with its own long-lived connection, that run one job
at a time.  The claim's commit also starts the jobs it claims (see
:func:`zc.async.workers.start_claimed`), and a worker whose job completes
claims the agent's next job in that same commit, so a busy agent needs no
poll.

Threads never touch the dispatcher's memory (pools, job records, poll
history): workers report back with ``reactor.callFromThread``, and a
threaded poll hands its findings to the reactor thread the same way.

The dispatcher is built from parts: the poll is here;
:class:`~zc.async.dispatcherwakeups.DispatcherWakeUps` polls at once when
a queue changes (instant dispatch), between the beats;
:class:`~zc.async.dispatcherreports.DispatcherReports` keeps the poll
history and job records and reports on them (status, statistics,
listeners).  This module re-exports the 1.5 names they define
(``PollInfo``, ``STOPPED``, ``RUNNING``, ...).
"""
import collections
import datetime
import logging
import threading
import time

import transaction
import twisted.python.failure
import ZODB.utils

from . import _registry
from . import clock
from . import instanceuuid
from . import interfaces
from . import logs
from . import schedule
from . import shutdown
from . import txn
from . import unloadable
from . import utils
from . import watchdog
from ._registry import clear, get, pop  # noqa: F401  (1.5 names)
from .dispatcheragents import describe_handed_back
from .dispatcherreports import (  # noqa: F401  (1.5 names)
    DEGRADED, RUNNING, STARTING, STOPPED, STUCK, DispatcherReports, PollInfo)
from .dispatcherwakeups import DispatcherWakeUps, hook
from .twist import Failure
from .workers import AgentThreadPool, _utcnow  # noqa: F401
from . import claims
from .workers import job_info

# ------------------------------------------------------------- registry

def stop(timeout=None):
    """Stop the process's dispatcher (see :func:`get`), if any, warmly (see
    :meth:`Dispatcher.stop`), and wait until it has stopped; one running on
    a reactor thread of its own (``thread``, as ``configure.start`` and
    ``ThreadedDispatcherInstaller`` start it) has that reactor stopped too.
    Call it from any thread but the dispatcher's reactor thread.
    """
    dispatcher = get()
    if dispatcher is not None:
        shutdown.stop_and_wait(dispatcher, timeout)


# -------------------------------------------------------------- helpers

def getId(obj):
    """``(integer oid, database name)`` of a stored persistent object."""
    return ZODB.utils.u64(obj._p_oid), obj._p_jar.db().database_name


# ----------------------------------------------------------- the poll

class _PollWork:
    """What a poll found and claimed in the database.

    Built by :meth:`Dispatcher._pollDatabase` (in whatever thread polls),
    applied to the dispatcher's memory by :meth:`Dispatcher._applyPoll` in
    the reactor thread.
    """

    def __init__(self):
        self.info = PollInfo()
        self.sizes = {}  # {(queue name, agent name): agent size}
        # [(queue name, agent name, (oid, db name, info, started))]
        self.claimed = []
        self.saturated = set()  # {(queue name, agent name)}
        self.watched = {}  # {MVCC adapter: set of oids to wake up for}
        self.shares = {}  # {queue name: (rank, count)}: see Dispatcher.shares
        self.waiting = []  # see claims.claim
        self.ticks = []  # the next ticks of the queues' schedules
        self.duration = None  # seconds the database half took

    def watch(self, obj):
        """Wake up when a commit changes the stored object ``obj``."""
        jar = getattr(obj, '_p_jar', None)
        if jar is None or obj._p_oid is None:
            return
        adapter = jar.db()._mvcc_storage
        if hook(adapter) is not None:
            self.watched.setdefault(adapter, set()).add(obj._p_oid)

    def claim(self, queue_name, agent_name, job, started, agent_info):
        """Note a claimed ``job``: a new job info and a work item."""
        jobid = getId(job)
        agent_info['new jobs'].append(jobid)
        info = job_info(job, queue_name, agent_name)
        self.claimed.append(
            (queue_name, agent_name, (job._p_oid, jobid[1], info, started)))


class Dispatcher(DispatcherWakeUps, DispatcherReports):
    """Polls the queues of ``db`` and runs the jobs its agents claim.

    See the module docstring; ``uuid`` defaults to the ``IUUID`` utility,
    ``reactor`` to the global Twisted reactor (looked up on first use).
    """

    activated = False  # False, a naive UTC datetime, or None (stopping)
    conn = None  # the poll connection (direct polls only)
    thread = None  # the reactor thread, set by the threaded installer
    #: Seconds a stop (or the reactor's shutdown) waits for running jobs.
    shutdown_timeout = 30
    stopping = False  # a stop waits for running jobs (see zc.async.shutdown)
    _warm_stop = None  # that stop
    _reactor_thread = None  # the thread that runs the reactor

    def __init__(self, db, reactor=None, poll_interval=5, uuid=None,
                 jobs_size=200, polls_size=400):
        if uuid is None:
            uuid = _registry.default_uuid()
        if uuid in _registry.dispatchers:
            raise ValueError('dispatcher for this UUID is already registered')
        self.db = db
        self._reactor = reactor
        self.poll_interval = poll_interval
        self.UUID = uuid
        self.jobs = utils.RollingMapping()  # {(oid, db name): job info}
        self.jobs.size = jobs_size
        self.polls = utils.RollingSet()  # PollInfo, newest first
        self.polls.size = polls_size
        self.queues = {}  # {queue name: {agent name: AgentThreadPool}}
        self.dead_pools = []  # pools stopped by deactivation or pruning
        self._activated_queues = set()  # ids of queues activated by us
        self._pool_growth = {}  # {db: connections added to its pool}
        self._threaded = False
        self._next_poll = None  # the scheduled heartbeat call
        self._grace_wake = None  # (call, due) of _wakeAfterGrace
        self._tick_wake = None  # (call, due) of _wakeForTick
        self._polling = False  # a threaded poll is running
        self._wake_pending = False  # poll again as soon as it ends
        self._wake_requested = False  # a wake-up is on its way
        self._watched = {}  # {MVCC adapter: frozenset of oids}
        self._own_storages = frozenset()  # MVCC instances of poll conns
        self.listeners = []  # see notify
        # {oid: serial of the claim's commit (None: under way)} of the jobs
        # this process claimed lately (see zc.async.claims).
        self.recent_claims = collections.OrderedDict()
        self.claim_lock = threading.Lock()  # for workers' claims
        # {queue name: (rank, count)}: this process is number ``rank`` of
        # the ``count`` live dispatchers of the queue, as the last poll saw.
        self.shares = {}
        # The jobs this process found it cannot load (zc.async.unloadable).
        self.unloadable = unloadable.Registry(uuid, self._reportUnloadable)
        # Time limits and abort requests of running jobs.
        self.watchdog = watchdog.Watchdog(self)
        _registry.dispatchers[uuid] = self

    @property
    def reactor(self):
        """The reactor; the global Twisted reactor unless one was given."""
        if self._reactor is None:
            import twisted.internet.reactor  # costly: only when needed
            self._reactor = twisted.internet.reactor
        return self._reactor

    # --------------------------------------------------- life cycle

    def activate(self, threaded=False):
        """Start polling when the reactor runs (see IReactor).

        ``threaded``: poll in the reactor's thread pool, with a fresh
        connection each time (for the main Twisted reactor).
        """
        if self.activated:
            raise ValueError('already activated')
        logs.log.info('attempting to activate dispatcher %s', self.UUID)
        self.activated = _utcnow()
        self._activated_queues.clear()
        self.polls.clear()
        self.jobs.clear()
        self._threaded = threaded
        self._growPool(self.db, 1)  # the poll connection
        self.reactor.callWhenRunning(self._startPolling)
        self.reactor.addSystemEventTrigger(
            'before', 'shutdown', self._deactivateOnShutdown)
        shutdown.stop_at_exit()

    def _startPolling(self):
        shutdown.note_reactor_thread(self)
        if self._threaded:
            self.threadedPoll()
        else:
            self.directPoll()

    def stop(self, timeout=None):
        """Stop warmly: claim no more jobs at once, give the jobs that run
        (with their callbacks) up to ``timeout`` seconds (None:
        :attr:`shutdown_timeout`) to finish and commit, then deactivate,
        which hands back the jobs still running (their retry policies
        decide, as after a death).  A later call with a shorter timeout
        shortens the wait; ``stop(0)`` hands back at once.

        In the reactor's thread, returns a Deferred that fires once the
        dispatcher is deactivated; in another thread, waits for that and
        returns None.  The reactor goes on running.  See
        :mod:`zc.async.shutdown`.
        """
        return shutdown.stop(self, timeout)

    def deactivate(self):
        """Stop polling, deactivate this UUID in every queue, stop threads.

        Running jobs are not killed: their daemon threads finish them.
        History is kept for diagnosis.
        """
        if not self.activated:
            raise ValueError('not activated')
        self.activated = None  # in progress
        try:
            self._cancelNextPoll()
            self._watch({})
            self._deactivateRecords()
            self._stopPools()
            for db, growth in self._pool_growth.items():
                db.setPoolSize(db.getPoolSize() - growth)
            self._pool_growth.clear()
            logs.log.info('deactivated dispatcher %s', self.UUID)
        finally:
            self.activated = False

    def _deactivateOnShutdown(self):
        # The reactor waits for the Deferred: running jobs may finish.
        return shutdown.stop_in_reactor(self)

    def _deactivateRecords(self):
        """Deactivate this UUID's records in every queue, committed."""
        conn = self.db.open(transaction_manager=transaction.TransactionManager())
        try:
            tm = conn.transaction_manager
            tm.begin()
            handed_back = self._attempt(
                tm, 'cleanly deactivating UUID %s' % (self.UUID,),
                lambda: self._deactivateIn(conn.root()))
            if isinstance(handed_back, twisted.python.failure.Failure):
                handed_back = ()  # logged
            for name, job, what in handed_back:
                logs.log.info('dispatcher %s handed back %s in queue %r: %s',
                              self.UUID, job, name, what)
        finally:
            conn.close()
            if self.conn is not None:
                self.conn.close()
                self.conn = None

    def _deactivateIn(self, root):
        """Deactivate the records; ``[(queue name, job repr, what)]`` of
        the jobs handed back."""
        handed_back = []
        queues = root.get(interfaces.KEY)
        for queue in ([] if queues is None else queues.values()):
            da = queue.dispatchers.get(self.UUID)
            if da is not None and da.activated:
                handed_back.extend((queue.name, repr(job), what)
                                   for job, what in da.deactivate())
        return handed_back

    def _stopPools(self):
        for pools in self.queues.values():
            for pool in pools.values():
                self._growPool(self.db, pool.setSize(0))
                self.dead_pools.append(pool)
        self.queues.clear()

    def _growPool(self, db, delta):
        if delta:
            db.setPoolSize(db.getPoolSize() + delta)
            self._pool_growth[db] = self._pool_growth.get(db, 0) + delta

    def _openPollConnection(self, tm=None):
        """A connection (and its sub-connections), with a private
        transaction manager unless ``tm`` is given.

        Commits of these connections never wake this dispatcher.
        """
        conn = self.db.open(
            transaction_manager=tm or transaction.TransactionManager())
        for name in self.db.databases:
            conn.get_connection(name)
        self._own_storages = frozenset(
            c._storage for c in conn.connections.values())
        return conn

    # ------------------------------------------------------ polling

    def poll(self):
        """Poll once, now, in this thread, using :attr:`conn`.

        Sync; for each queue: register and activate this dispatcher's
        record if needed, ping it, and for each agent note its size and
        length, then claim until it has no more room; finally resize,
        prune and feed the thread pools and record a :class:`PollInfo`.
        """
        if self.conn is None:
            # Kept for the polls to come, with the transaction manager of
            # the polling thread, as in 1.5: a test running a
            # zc.async.testing.Reactor in its own thread sees what the
            # poll committed, as its own connections share that manager.
            self.conn = self._openPollConnection(transaction.manager.manager)
        self._applyPoll(self._pollDatabase(self.conn))

    def directPoll(self):
        """Poll in the reactor thread, then schedule the next poll."""
        if not self.activated:
            return
        self._cancelNextPoll()
        try:
            self.poll()
        except Exception:
            # An escaping error would end the polling for good.
            logs.log.critical('error while polling', exc_info=True)
        self._scheduleNextPoll()

    def threadedPoll(self):
        """Poll in a reactor pool thread with a fresh connection; then
        schedule the next poll from the reactor thread."""
        if not self.activated:
            return
        self._cancelNextPoll()
        self._polling = True
        self.reactor.callInThread(
            self._pollInThread, self._openPollConnection())

    def _pollInThread(self, conn):
        work = None
        try:
            work = self._pollDatabase(conn)
        except Exception:
            logs.log.critical('error while polling', exc_info=True)
        finally:
            conn.close()
            self.reactor.callFromThread(self._threadedPollDone, work)

    def _threadedPollDone(self, work):
        self._polling = False
        if work is not None:
            self._applyPoll(work)
        if self._wake_pending:
            self._wake_pending = False
            self.threadedPoll()
        else:
            self._scheduleNextPoll()

    def _scheduleNextPoll(self):
        if self.activated:
            self._next_poll = self.reactor.callLater(
                self.poll_interval,
                self.threadedPoll if self._threaded else self.directPoll)

    def _cancelNextPoll(self):
        call, self._next_poll = self._next_poll, None
        if call is not None and call.active():
            call.cancel()

    def _pollDatabase(self, conn):
        """Claim work for this process: the database half of a poll."""
        work = _PollWork()
        started = time.monotonic()
        tm = conn.transaction_manager
        tm.begin()  # sync: see what others committed
        try:
            queues = conn.root().get(interfaces.KEY)
            if queues is None:  # wake up when the queues are installed
                work.watch(conn.get(ZODB.utils.z64))
            for queue in ([] if queues is None else list(queues.values())):
                work.info[queue.name] = self._pollQueue(queue, tm, work)
        finally:
            tm.abort()
        work.duration = time.monotonic() - started
        return work

    def _pollQueue(self, queue, tm, work):
        """Activate, ping and claim in one queue; the queue's poll info."""
        if not self._activateIfNeeded(queue, tm):
            return None
        self._attempt(tm, 'committing ping for UUID %s in queue %r' % (
            self.UUID, queue.name), lambda: queue.dispatchers.ping(self.UUID))
        # Every put, claim and removal changes the queue's length counter.
        work.watch(getattr(queue, '_length', None))
        work.shares[queue.name] = _share(queue, self.UUID)
        self._fireSchedules(queue, tm, work)
        da = queue.dispatchers[self.UUID]
        res = {name: self._pollAgent(queue, name, agent, tm, work)
               for name, agent in list(da.items())}
        if self.unloadable.needs_sync(queue, da):
            self._attempt(tm, 'recording the jobs UUID %s cannot load in '
                          'queue %r' % (self.UUID, queue.name),
                          lambda: self.unloadable.sync(queue, da))
        return res

    def _activateIfNeeded(self, queue, tm):
        """Register and activate this UUID in ``queue`` once per activation.

        False when another live process seems to hold the same UUID.
        """
        queue_id = getId(queue)
        if queue_id in self._activated_queues:
            return True
        activated = self._attempt(
            tm, 'activating dispatcher UUID %s in queue %s (oid %d)' % (
                self.UUID, queue.name, queue_id[0]),
            lambda: self._activateRecord(queue))
        if activated is True:
            self._activated_queues.add(queue_id)
            return True
        return False

    def _activateRecord(self, queue):
        if self.UUID not in queue.dispatchers:
            queue.dispatchers.register(self.UUID)
        da = queue.dispatchers[self.UUID]
        if da.activated:
            dead = da.dead
            if not dead and not instanceuuid.formerLife(da):
                logs.log.error(
                    'UUID %s already activated in queue %s (oid %d): another '
                    'process?  (To stop poll attempts in this process, set '
                    '``zc.asynchronous.dispatcher.get().activated = False``.  '
                    "To stop polls permanently, don't start a "
                    'zc.async.dispatcher!)', self.UUID, queue.name,
                    ZODB.utils.u64(queue._p_oid))
                return False
            # An earlier life of this UUID, dead or ended: clean it.
            handed_back = da.deactivate()
            txn.log_after_commit(
                queue, logging.WARNING,
                'dispatcher %s took over its record in queue %r from %s; its '
                'jobs: %s', self.UUID, queue.name,
                'a former life that is dead' if dead else
                'its former process, which ended without deactivating it '
                '(the UUID file lock was free)',
                describe_handed_back(handed_back))
        da.activate()
        da.instance_lock = instanceuuid.holder(self.UUID)
        return True

    def _fireSchedules(self, queue, tm, work):
        """Put the jobs of the due ticks of ``queue``'s schedules, and
        commit (see :mod:`zc.async.schedule`); note its next tick."""
        due = schedule.next_due(queue)
        if due is not None and due <= clock.now():
            due = self._attempt(
                tm, 'firing the schedules of queue %r' % (queue.name,),
                lambda: schedule.fire_due(queue))
        work.watch(schedule.watched(queue))  # a new schedule may be earlier
        if isinstance(due, datetime.datetime):
            work.ticks.append(due)

    def _pollAgent(self, queue, name, agent, tm, work):
        """Note an agent's size and length and claim for it; its info."""
        # In the order 1.5's poll log showed the keys.
        info = {'active jobs': [], 'error': None, 'new jobs': [],
                'len': None, 'size': None}
        try:
            info['size'] = agent.size
            info['len'] = len(agent)
            info['active jobs'] = [getId(job) for job in agent]
        except txn.EXPLOSIVE_ERRORS:
            raise
        except Exception:
            info['error'] = Failure()
            tm.abort()
            return info
        work.sizes[(queue.name, name)] = info['size']
        if self.stopping:
            return info  # a stopping dispatcher claims nothing
        claimed = self._claim(queue, agent, tm, work.waiting)
        if isinstance(claimed, twisted.python.failure.Failure):
            info['error'] = claimed
            self._attempt(tm, 'stashing failure on agent %s (oid %d)' % (
                name, ZODB.utils.u64(agent._p_oid)),
                lambda: setattr(agent, 'failure', claimed))
            return info
        if getattr(agent, 'failure', None) is not None:  # it recovered
            self._attempt(tm, 'clearing failure on agent %r' % (name,),
                          lambda: setattr(agent, 'failure', None))
        jobs, saturated = claimed
        for job, started in jobs:
            work.claim(queue.name, name, job, started, info)
        if saturated:
            work.saturated.add((queue.name, name))
        return info

    def _claim(self, queue, agent, tm, waiting):
        """Claim jobs for ``agent`` until it has no room, and start them,
        in one commit.

        Returns ``([(job, started)], saturated)``, saturated meaning the
        agent is full while its queue still holds jobs; or a Failure.
        ``waiting``: see ``claims.claim``.
        """
        batch = claims.Batch(self, agent, waiting)

        def claim_all():
            batch.failed()  # when retried: the last attempt did not commit
            jobs = []
            job = batch.claim()
            while job is not None:
                jobs.append((job, claims.start_claimed(job)))
                job = batch.claim()
            return jobs, len(agent) >= agent.size and len(queue) > 0
        description = (
            'getting job for UUID %s from agent %s (oid %d) in queue %s '
            '(oid %d)' % (self.UUID, agent.name, ZODB.utils.u64(agent._p_oid),
                          queue.name, ZODB.utils.u64(queue._p_oid)))
        claimed = self._attempt(tm, description, claim_all)
        if isinstance(claimed, twisted.python.failure.Failure) and (
                self._blame(batch, queue, tm)):
            # The claims pass over the job to blame now: claim the others.
            claimed = self._attempt(tm, description, claim_all)
        if isinstance(claimed, twisted.python.failure.Failure):
            batch.failed()
        else:
            batch.landed()
        return claimed

    def _blame(self, batch, queue, tm):
        """Whether a job that the failed claims of ``batch`` took cannot be
        stored (noted: see ``claims.blame``)."""
        try:
            return batch.blame(queue)
        except Exception:  # the database is away, say: the next poll
            logs.log.exception('cannot look for the job to blame for a '
                               'failed claim')
            return False
        finally:
            tm.abort()

    def _attempt(self, tm, description, call):
        """Run ``call`` and commit as one unit, trying up to five times."""
        def unit():
            tm.get().note('zc.async: %s' % (description,))
            return call()
        return txn.try_five_times(unit, description, tm)

    def _applyPoll(self, work):
        """The memory half of a poll, in the reactor thread."""
        if self.activated:  # a deactivation during a threaded poll wins
            for (queue_name, name), size in work.sizes.items():
                self._resizePool(queue_name, name, size).saturated = (
                    (queue_name, name) in work.saturated)
            self._prunePools(work.info)
            self.shares.update(work.shares)
            if work.waiting:
                self._wakeAfterGrace(min(work.waiting))
            if work.ticks:
                self._wakeForTick(min(work.ticks))
            for queue_name, name, item in work.claimed:
                oid, dbname, info, started = item
                self.jobs[(ZODB.utils.u64(oid), dbname)] = info
                self.queues[queue_name][name].put(item)
            self._watch(work.watched)
        self._recordPoll(work.info, [item[2] for _, _, item in work.claimed])
        self.notify('poll', {'duration': work.duration, 'poll': work.info})
        for queue_name, agents in work.info.items():
            for name, info in (agents or {}).items():
                if info['error'] is not None:
                    self._claimError({'queue': queue_name, 'agent': name,
                                      'reason': 'error'})

    def _resizePool(self, queue_name, name, size):
        pools = self.queues.setdefault(queue_name, {})
        pool = pools.get(name)
        if pool is None:
            pool = pools[name] = AgentThreadPool(self, name, size)
            self._growPool(self.db, size)
        else:
            self._growPool(self.db, pool.setSize(size))
        return pool

    def _prunePools(self, poll_info):
        """Stop the pools of agents and queues that are gone (see A20)."""
        for queue_name, pools in list(self.queues.items()):
            if queue_name in poll_info and poll_info[queue_name] is None:
                continue  # not activated there this poll: no news
            agents = poll_info.get(queue_name) or {}
            for name in [name for name in pools if name not in agents]:
                pool = pools.pop(name)
                self._growPool(self.db, pool.setSize(0))
                self.dead_pools.append(pool)
            if not pools:
                del self.queues[queue_name]


def _share(queue, uuid):
    """``(rank, count)``: this dispatcher's place among the queue's live
    dispatchers (ordered by UUID), and their number."""
    live = sorted(str(key) for key, da in queue.dispatchers.items()
                  if da.activated and not da.dead)
    if str(uuid) not in live:
        return 0, 1
    return live.index(str(uuid)), len(live)


