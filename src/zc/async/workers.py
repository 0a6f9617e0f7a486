"""Worker threads run one job attempt each, in their own connection, and
report back through the reactor.

An :class:`AgentThreadPool` holds the daemon threads of one agent of a
:class:`zc.async.dispatcher.Dispatcher` (which re-exports it under its 1.5
name, ``zc.async.dispatcher.AgentThreadPool``).  The reactor thread owns
the pool's state; a worker takes ``(oid, database name, info, started)``
items from the pool's queue, loads and calls the job, and hands what
happened to the reactor thread with ``reactor.callFromThread``.

Jobs are started in the commit that claims them (see :mod:`zc.async.claims`),
and the commit that completes a worker's job claims the agent's next one
(:class:`_NextClaimer`): a busy worker costs one commit per job.
"""
import queue as queue_module
import threading
import time

import transaction
import twisted.python.failure
import ZODB.POSException
import ZODB.utils
from transaction._transaction import Status

from . import batches
from . import claims
from . import clock
from . import coroutines
from . import interfaces
from . import logs
from . import txn
from . import utils
from . import watchdog
from .txn import spoiled_commit  # where a transaction is named txn
from .threadlocal import local
from .threadlocal import waiting_for_reactor

RESULT_LIMIT = 10000  # characters of a job info's 'result' kept


def _utcnow():
    """The library clock as a naive UTC datetime (1.5's record format)."""
    return clock.now().replace(tzinfo=None)


_handoff = utils.handoff


class _Commit(threading.local):
    claim_only = False  # the thread's commit under way only claims jobs


_commit = _Commit()


def claim_only_commit():
    """Whether the commit under way in this thread, if any, only claims
    jobs for a worker (see :class:`_NextClaimer`)."""
    return _commit.claim_only


def job_info(job, queue_name, agent_name):
    """A fresh in-memory record of one claimed job (see
    ``Dispatcher.getJobInfo``)."""
    return {'result': None, 'failed': False, 'poll id': None,
            'quota names': tuple(job.quota_names), 'call': repr(job),
            'started': None, 'completed': None, 'thread': None,
            'reassigned': False, 'queue': queue_name, 'agent': agent_name}


def job_outcome(job):
    """The job info entries for how ``job`` ended, now."""
    outcome = _describe_result(job.result)
    outcome['completed'] = _utcnow()
    return outcome


def _describe_result(result):
    """The 'result' and 'failed' entries of a job info for ``result``."""
    failed = isinstance(result, twisted.python.failure.Failure)
    if failed:
        text = result.getTraceback(elideFrameworkCode=True)
    else:
        text = repr(result)
    if len(text) > RESULT_LIMIT:
        text = text[:RESULT_LIMIT] + '\n[...TRUNCATED...]'
    return {'result': text, 'failed': failed}


class AgentThreadPool:
    """The daemon worker threads running the jobs one agent claimed.

    The reactor thread owns the pool's state (``threads``, ``jobids``, the
    size); workers only take ``(oid, database name, info)`` items from
    ``queue`` and report back through ``reactor.callFromThread``.
    """

    initial_backoff = txn.INITIAL_BACKOFF
    incremental_backoff = txn.BACKOFF_INCREMENT
    maximum_backoff = txn.MAX_BACKOFF

    def __init__(self, dispatcher, name, size):
        self.dispatcher = dispatcher
        self.name = name  # the agent's name
        self.queue = queue_module.Queue()  # work items, None = stop a thread
        self.threads = []  # started threads that have not reported their end
        self.jobids = {}  # {thread id: (oid, db name) running, or None}
        self.saturated = False  # the agent was full with work waiting
        self.abandoned = []  # threads given up (see zc.async.watchdog)
        self.batching = set()  # idents of threads in zc.async.batches
        self._size = 0
        self._stopping = 0  # stop sentinels queued and not yet taken
        self.setSize(size)

    def getSize(self):
        """The number of threads the pool aims at."""
        return self._size

    def setSize(self, size=None):
        """Start or stop threads to match ``size`` (default: the current
        size, which tops up threads that died); return the size delta."""
        old = self._size
        if size is not None:
            self._size = size
        missing = self._size - (len(self.threads) - self._stopping)
        for _ in range(missing):
            thread = threading.Thread(
                target=self._work, daemon=True,
                name='zc.async worker %s' % (self.name,))
            self.threads.append(thread)
            thread.start()
        for _ in range(-missing):
            self._stopping += 1
            self.queue.put(None)
        return self._size - old

    def put(self, item):
        """Queue ``(oid, database name, info, started)`` for the next free
        thread; ``started`` is what ``claims.start_claimed`` returned."""
        self.queue.put(item)

    @property
    def full(self):
        """Whether every thread has a job, running or handed off (or runs
        batches)."""
        running = len(self.batching | {
            thread for thread, jobid in self.jobids.items()
            if jobid is not None})
        # Stop sentinels not taken yet are no jobs (subtracting the ones
        # taken already can only make the pool look free: a poll at most).
        waiting = max(0, self.queue.qsize() - self._stopping)
        return running + waiting >= self._size

    @property
    def busy(self):
        """Whether a handed-off item is waiting or being worked on (by a
        thread not blocked until the reactor answers it, nor abandoned)."""
        waiting = sum(1 for thread in list(self.threads)
                      if thread.ident in waiting_for_reactor)
        return self.queue.unfinished_tasks > waiting + len(self.abandoned)

    @property
    def working(self):
        """Whether a handed-off item is waiting or being worked on by a
        thread that was not abandoned."""
        return self.queue.unfinished_tasks > len(self.abandoned)

    def abandon(self, thread):
        """Give up ``thread``, stuck in a job that was told to stop (see
        :mod:`zc.async.watchdog`): another thread takes its place.  The
        stuck thread ends when its job returns, taking no more work."""
        if thread in self.threads:
            self.threads.remove(thread)
            self.jobids.pop(thread.ident, None)
            self.abandoned.append(thread)
            self.setSize()

    # The methods below run in the worker threads.

    def _report(self, method, *args):
        self.dispatcher.reactor.callFromThread(method, *args)

    def _work(self):
        """A worker thread: run items until told to stop or an error."""
        local.dispatcher = self.dispatcher
        local.name = self.name
        me = threading.current_thread()
        conn = self.dispatcher.db.open()
        claimer = _NextClaimer(self)
        transaction.manager.registerSynch(claimer)
        slot = watchdog.Slot(self)
        stopped = False
        try:
            while not (stopped or slot.abandoned):
                item = self.queue.get()
                try:
                    stopped = item is None
                    if not stopped:
                        self._perform(conn, claimer, *item)
                finally:
                    self.queue.task_done()
        except Exception:
            # Jobs handle their own errors: anything else is a surprise
            # that ends this thread (the pool starts another).
            logs.log.critical('unexpected error', exc_info=True)
        finally:
            slot.close()
            transaction.manager.unregisterSynch(claimer)
            txn.abort(transaction.manager, 'ending worker thread',
                      wait=False)
            batches.close()
            conn.close()
            coroutines.close_loop()  # of the thread's async def jobs
            self._report(self._threadEnded, me, stopped)

    def _perform(self, conn, claimer, oid, dbname, info, started):
        """Run one job attempt and report how it went; queue the job that
        its completing commit claimed, if any."""
        thread = threading.get_ident()
        jobid = (ZODB.utils.u64(oid), dbname)
        self._report(self._jobStarted, thread, jobid, info, _utcnow())
        logs.tracelog.info('starting in thread %d: %s', thread, info['call'])
        outcome = {}
        try:
            job = self._load(conn, oid, dbname)
            claimer.watch(job)
            outcome = self._call(job, started)
        finally:
            local.job = None  # the job clears it too; this is a safety net
            claimed, waiting = claimer.take()
            if claimed is not None:
                self._queueClaimed(info, *claimed)
            elif waiting is not None:
                self._report(self.dispatcher._wakeAfterGrace, waiting)
            txn.abort(transaction.manager, 'finishing job %d in db %s'
                      % jobid)
            # Batches that follow the job refill its room too.
            self._report(self._jobFinished, thread, info, outcome,
                         claimed is not None or claimer.batching is not None)
        logs.tracelog.info(
            'completed in thread %d: %s', thread, info['call'])
        if claimer.batching is not None:
            batches.run(self, claimer.batching)

    def _queueClaimed(self, info, job, started):
        """Tell the dispatcher of a job that the commit completing the job
        of ``info`` claimed, and hand it to the pool's threads."""
        jobid = (ZODB.utils.u64(job._p_oid), job._p_jar.db().database_name)
        claimed = job_info(job, info['queue'], info['agent'])
        self._report(self._claimedByWorker, jobid, claimed)
        self.put((job._p_oid, jobid[1], claimed, started))

    def _load(self, conn, oid, dbname):
        """The job, loaded in this thread's connection (retrying)."""
        backoff = self.initial_backoff
        errors = 0
        while True:
            try:
                transaction.begin()  # sync
                job = conn.get_connection(dbname).get(oid)
                job._p_activate()  # load now, inside this retry loop
                return job
            except txn.disconnect_errors():  # ZEO's, RelStorage's
                logs.log.info(
                    'ZEO client disconnected while trying to get job %d in '
                    'db %s; retrying in %d seconds', ZODB.utils.u64(oid),
                    dbname, backoff, exc_info=True)
                time.sleep(backoff)
                backoff = min(self.maximum_backoff,
                              backoff + self.incremental_backoff)
            except ZODB.POSException.TransactionError:
                errors += 1
                if errors == 1 or not errors % 5:
                    logs.log.warning(
                        '%d transaction error(s) while trying to get job %d '
                        'in db %s', errors, ZODB.utils.u64(oid), dbname,
                        exc_info=True)

    def _call(self, job, started):
        """Call ``job`` (started in its claim's commit at ``started``, if
        not None); return the job info entries for how it ended."""
        tm = transaction.manager
        try:
            if started is None:
                job()
            else:
                job._call_claimed(started)
        except interfaces.ReassignedError:
            txn.abort(tm, 'dropping reassigned %r' % (job,))
            return {'reassigned': True}
        except interfaces.BadStatusError:
            txn.abort(tm, 'calling %r' % (job,))
            logs.log.error('job already completed?', exc_info=True)
            _retire(job)
        except Exception:  # unexpected: ends the thread, not the job
            txn.abort(tm, 'calling %r' % (job,))
            _recover(job)
            raise
        except BaseException:  # explosive: the process is going away
            txn.abort(tm, 'calling %r' % (job,), wait=False)
            raise
        return job_outcome(job)

    # The methods below serve zc.async.batches, in a worker thread.

    def _batchedJob(self, job, agent):
        """A job of a batch starts: ``[jobid, info, started, outcome]``
        (the outcome comes from :meth:`_batchedJobRan`)."""
        jobid = (ZODB.utils.u64(job._p_oid), job._p_jar.db().database_name)
        info = job_info(job, agent.queue.name, agent.name)
        return [jobid, info, _utcnow(), None]

    @staticmethod
    def _batchedJobRan(entry, job):
        entry[3] = job_outcome(job)

    @staticmethod
    def _commitBatch(claim_only):
        """Commit a batch; ``claim_only``: see :func:`claim_only_commit`."""
        _commit.claim_only = claim_only
        try:
            transaction.commit()
        finally:
            _commit.claim_only = False

    def _reportBatched(self, entries):
        """Tell the dispatcher of the jobs that a batch of this thread
        claimed, ran and committed."""
        thread = threading.get_ident()
        for jobid, info, started, outcome in entries:
            self._report(self._claimedByWorker, jobid, info)
            self._report(self._jobStarted, thread, jobid, info, started)
            self._report(self._jobFinished, thread, info, outcome, True)

    # The methods below run in the reactor thread.

    @_handoff
    def _claimedByWorker(self, jobid, info):
        self.dispatcher._claimedByWorker(jobid, info)

    @_handoff
    def _jobStarted(self, thread, jobid, info, started):
        self.jobids[thread] = jobid
        info['started'] = started
        info['thread'] = thread
        self.dispatcher.notify('job started', info)

    @_handoff
    def _jobFinished(self, thread, info, outcome, refilled=False):
        self.jobids[thread] = None
        info.update(outcome)
        self.dispatcher.notify('job finished', info)
        # A poll running now may have seen this job still held, and found
        # the agent full: it must be followed by another one -- unless the
        # job's completing commit refilled its room.
        if not refilled:
            self._roomFreed()

    @_handoff
    def _roomFreed(self):
        """A thread freed up (a job finished, batches ended)."""
        if self.saturated or self.dispatcher._polling:
            self.saturated = False
            self.dispatcher._wakeForRoom()

    @_handoff
    def _threadEnded(self, thread, stopped):
        if thread in self.abandoned:
            self.abandoned.remove(thread)
        if thread in self.threads:
            self.threads.remove(thread)
        self.jobids.pop(thread.ident, None)
        if stopped:
            self._stopping -= 1
        elif self.dispatcher.activated:
            self.setSize()  # replace the thread that died


def _retire(job):
    """Move a job that could not be called off its agent (committed)."""
    if job.status == interfaces.CALLBACKS:
        job.resumeCallbacks()  # commits, and moves the job off the agent
        return
    count = 0
    while True:
        if job.status == interfaces.COMPLETED:
            if interfaces.IAgent.providedBy(job.parent):
                job.parent.jobCompleted(job)
        else:
            job.fail()
        try:
            transaction.commit()
            return
        except (ZODB.POSException.TransactionError,
                ZODB.POSException.POSError, *txn.disconnect_errors()):
            txn.abort(transaction.manager, 'retiring %r' % (job,))
            count += 1
            if not count % 10:
                logs.log.critical('frequent database errors!  I retry '
                                  'forever...', exc_info=True)
            time.sleep(1)


def _recover(job):
    """Leave ``job``, which an unexpected error took out of the hands of
    this worker thread, as a dead dispatcher would (committed).

    A live dispatcher keeps pinging, so no sibling would ever take over a
    job left ACTIVE in its agent: handle the interruption here instead.
    The retry policy decides (the default puts the job back in its queue,
    first in line; counted in ``policy.data['interruptions']``); a job in
    CALLBACKS gets its callbacks resumed.
    """
    def unit():
        if job.status in (interfaces.ACTIVE, interfaces.CALLBACKS):
            job.handleInterrupt()
    try:
        txn.never_fail(unit, 'recovering %r after an unexpected error'
                       % (job,), transaction.manager)
    except interfaces.ReassignedError:
        pass  # another dispatcher has it now (logged): nothing to recover


class _NextClaimer:
    """Claims the next job of a worker's agent in the commit that completes
    the worker's job: a synchronizer of the worker thread's transactions.

    Completing a job frees its thread, so the same commit takes the agent's
    next job from the queue and starts it (see :mod:`zc.async.claims`), sparing
    that job a claim commit of the poll and the hand-off to a thread.  Only
    commits that are retried without calling the job again complete a job
    (the result-only commit, the final commit of ``resumeCallbacks``), so a
    conflict the claim adds costs a retry of that commit, never a second
    run.  Agents with a chooser, or classes of their own, are left to the
    poll, and so is everything when the dispatcher is not activated.

    A claim never costs the completed job its outcome: any error of a
    commit with a claim is retried at once (see
    ``zc.async.txn.spoiled_commit``); the retry first blames the job
    claimed last if it cannot be stored (so the claims pass over it), and
    after :data:`CLAIM_TRIES` failed commits the job's commits claim no
    more (the poll does).
    """

    #: Commits of one job that may carry a claim.
    CLAIM_TRIES = 3

    def __init__(self, pool):
        self.pool = pool
        self.job = self.agent = None
        self.pending = None  # (job, started) claimed by the commit under way
        self.claimed = None  # (job, started) claimed by a commit that landed
        self.suspect = None  # the job claimed by a commit that failed
        self.failures = 0  # commits with a claim that failed, for this job
        self.waiting = []  # see claims.claim
        self.batching = None  # the agent whose batches follow the job

    def watch(self, job):
        """Claim when ``job`` completes (if its agent is a plain one);
        or note that batches follow it (see :mod:`zc.async.batches`)."""
        agent = job.parent
        plain = (claims.plain(agent) and agent.name == self.pool.name
                 and self.pool.dispatcher._instant)
        self.batching = agent if plain and batches.batching(agent) else None
        if self.batching is not None:
            plain = False
        self.job, self.agent = job, agent if plain else None
        self.pending = self.claimed = self.suspect = None
        self.failures = 0
        del self.waiting[:]

    def take(self):
        """``(job, started)`` claimed for this pool (or None), and when the
        first job left to another dispatcher was due (or None); once."""
        claimed, self.claimed = self.claimed, None
        waiting = min(self.waiting) if self.waiting else None
        self.job = self.agent = None
        del self.waiting[:]
        return claimed, waiting

    def newTransaction(self, txn):
        spoiled_commit(False)

    def beforeCompletion(self, txn):
        job, agent = self.job, self.agent
        # A commit (not an abort after a failed one) that completes the job.
        if (agent is None or self.pending is not None
                or txn.status is not Status.ACTIVE
                or not job._p_changed or job.status != interfaces.COMPLETED
                or not self.pool.dispatcher.activated
                or self.pool.dispatcher.stopping):
            return
        length = getattr(agent.queue, '_length', None)
        quiet = not getattr(length, '_p_changed', True)  # the job put none
        dispatcher = self.pool.dispatcher
        try:
            suspect, self.suspect = self.suspect, None
            if suspect is not None:
                claims.blame(dispatcher, agent.queue, [suspect])
            claimed = claims.claim(dispatcher, agent, self.waiting)
            if claimed is not None:
                self.pending = (claimed, claims.start_claimed(claimed))
                # A commit that only claims brings no new work: it need not
                # wake this process's dispatcher (see dispatcher._invalidated).
                _commit.claim_only = quiet
        except Exception:
            # Never fail the commit of a job's outcome: the poll claims.
            logs.log.warning('could not claim the next job for agent %r',
                             agent.name, exc_info=True)
            self.agent = None
            dispatcher.reactor.callFromThread(dispatcher._claimError, {
                'queue': agent.queue.name, 'agent': agent.name,
                'reason': 'error'})

    def afterCompletion(self, txn):
        _commit.claim_only = False
        if self.pending is not None:
            if txn.status is Status.COMMITTED:
                self.claimed = self.pending
                self.agent = None  # one claim per job
                claims.landed(self.pool.dispatcher, self.claimed[0])
            else:  # still queued: let the next claim have it
                claims.forget(self.pool.dispatcher, self.pending[0])
                spoiled_commit(True)
                self.suspect = self.pending[0]
                self.failures += 1
                if self.failures >= self.CLAIM_TRIES:
                    self.agent = None
            self.pending = None
