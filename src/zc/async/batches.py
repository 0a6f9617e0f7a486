"""Opt-in batches: a worker thread runs several small jobs in one commit.

An agent's ``batch_size`` is 1 by default: one transaction per job, as in
1.5 (see :mod:`zc.async.workers`).  With a larger size, a worker thread of
a *plain* agent (see :func:`zc.async.claims.plain`) whose job completed
goes on in batches: it begins a transaction, claims a job of its agent,
starts it, runs it inside a savepoint of its own, and so on, up to
``batch_size`` jobs, then commits once.  The claims, starts, results and
callbacks of the whole batch land in that commit; a batch that claims
nothing ends the batching, and the thread waits for work from the poll
again.  Two rules keep batches from conflicting, as a conflict costs the
whole batch: one thread of an agent batches at a time (the others run
what the poll gives them, one job per transaction), and a batch claims
only its dispatcher's share of the queue when several dispatchers serve
it (see :mod:`zc.async.claims`), even once the other dispatchers' jobs
are past their grace.  What this means:

* **A job that raises** is rolled back to its savepoint (the changes of
  the jobs before it stay), and its retry policy decides as always: it
  fails, is run again at once, or is put back in the queue.
* **A commit of the batch that fails** (a conflict, a disconnect) lands
  nothing: every job of the batch is still queued, as if never claimed,
  and the poll claims and runs them *all again*.  So a job of a batching
  agent may run more than once, but it is recorded as completed once.  The
  thread stops batching until its next job from the poll.
* **A job's own commits and aborts** become savepoint commits and
  rollbacks: the connection the batch runs in has a transaction manager
  that turns them into those (:class:`BatchManager`).  A job must leave the
  thread's transaction to it (no ``transaction.commit()`` of its own) and
  change nothing but the ZODB.
* **Calls for the reactor** that a job makes without waiting for an answer
  (the completion of a job that returned a Deferred, ``setLiveAnnotation``)
  are made once the batch commits, and dropped if it fails (the job runs
  again).
* **Jobs that are not small run alone**: a job with a time limit (its own,
  or its agent's), a job of a class of its own, or a job the claim did not
  start ends the batch; it is claimed and started in the batch's commit and
  then runs in its own transactions, as without batching.
* **Stopping**: a dispatcher that stops (or deactivates) claims no more;
  the batch under way finishes and commits.  A process killed mid-batch
  committed nothing of it: its jobs are still queued and run elsewhere.
* **Reports**: the dispatcher learns of the batch's jobs (``getJobInfo``,
  the ``'job started'`` and ``'job finished'`` events, statistics) once
  it committed.
"""
import threading

import transaction

from . import claims
from . import interfaces
from . import logs
from . import txn
from . import watchdog
from .job import Job
from .threadlocal import local
from .threadlocal import waiting_for_reactor


def batching(agent):
    """Whether worker threads run ``agent``'s jobs in batches."""
    return claims.plain(agent) and agent.batch_size > 1


class BatchManager:
    """The transaction manager of a batch's connection: the thread's own,
    except that while a job of a batch runs, a commit is a savepoint, an
    abort rolls back to the last of these (or to the job's start) and a
    begin goes on in the batch's transaction."""

    def __init__(self, tm):
        self._tm = tm
        self.savepoint = None  # the running job's last, while one runs

    def __getattr__(self, name):
        return getattr(self._tm, name)

    def get(self):
        return self._tm.get()

    def begin(self):
        if self.savepoint is None:
            return self._tm.begin()
        return self._tm.get()

    def commit(self):
        if self.savepoint is None:
            return self._tm.commit()
        self.savepoint = self._tm.savepoint(optimistic=True)

    def abort(self):
        if self.savepoint is None:
            return self._tm.abort()
        self.savepoint.rollback()


class _Held:
    """A reactor whose ``callFromThread`` waits for the batch's commit,
    unless the thread waits for the answer."""

    def __init__(self, reactor, calls):
        self._reactor = reactor
        self._calls = calls

    def __getattr__(self, name):
        return getattr(self._reactor, name)

    def callFromThread(self, call, *args, **kwargs):
        if threading.get_ident() in waiting_for_reactor:
            return self._reactor.callFromThread(call, *args, **kwargs)
        self._calls.append((call, args, kwargs))


class _Dispatcher:
    """``local.dispatcher`` while a batch runs: the dispatcher, with its
    reactor's calls held (see :class:`_Held`)."""

    def __init__(self, dispatcher, calls):
        self._dispatcher = dispatcher
        self.reactor = _Held(dispatcher.reactor, calls)

    def __getattr__(self, name):
        return getattr(self._dispatcher, name)


_lock = threading.Lock()  # see _Runner.run


class _Thread(threading.local):
    runner = None


_thread = _Thread()


def run(pool, agent):
    """Run batches of ``agent``'s jobs in this worker thread of ``pool``
    until one claims nothing (see the module)."""
    runner = _thread.runner
    if runner is None:
        runner = _thread.runner = _Runner(pool)
    runner.run(agent._p_oid, agent._p_jar.db().database_name)


def close():
    """This worker thread ends: close its batch connection, if any."""
    runner, _thread.runner = _thread.runner, None
    if runner is not None:
        runner.conn.close()


class _Runner:
    """One worker thread's batches, in a connection of their own."""

    def __init__(self, pool):
        self.pool = pool
        # The thread's own manager (not the thread-local proxy): a close of
        # the connection from another thread (a closing database's) must
        # unregister it from the manager it registered with.
        self.tm = BatchManager(transaction.manager.manager)
        db = pool.dispatcher.db
        # One more open connection than the dispatcher planned for: grow
        # the pool (undone when the dispatcher deactivates) so that ZODB
        # does not warn of too many.
        pool._report(pool.dispatcher._growPool, db, 1)
        self.conn = db.open(self.tm)

    def run(self, oid, dbname):
        pool = self.pool
        dispatcher = pool.dispatcher
        me = threading.get_ident()
        with _lock:
            # One thread of an agent batches at a time: two would conflict
            # on the agent's record at most of their commits.
            if pool.batching:
                return
            pool.batching.add(me)  # the pool is full for the poll meanwhile
        try:
            # Jobs the poll handed to this thread meanwhile come first.
            while pool.queue.empty() and self._go_on(dispatcher):
                if not _Batch(self, oid, dbname).run():
                    return
        finally:
            pool.batching.discard(me)
            pool._report(pool._roomFreed)

    @staticmethod
    def _go_on(dispatcher):
        return (dispatcher.activated and not dispatcher.stopping
                and not watchdog.abandoned())


class _Batch:
    """The jobs of one batch's transaction."""

    def __init__(self, runner, oid, dbname):
        self.runner = runner
        self.pool = runner.pool
        self.dispatcher = runner.pool.dispatcher
        self.oid, self.dbname = oid, dbname
        self.ran = []  # (job, report entry): see pool._batchedJob
        self.alone = None  # (job, started): claimed, to run on its own
        self.calls = []  # held reactor calls (see _Held)
        self.waiting = []  # see claims.claim

    def run(self):
        """Claim, run and commit one batch; whether to run another."""
        try:
            transaction.begin()
            agent = self.runner.conn.get_connection(self.dbname).get(
                self.oid)
            full = self._claim_and_run(agent)
        except interfaces.ReassignedError:
            # Its thread was abandoned, or its dispatcher handed it back.
            logs.tracelog.info('dropping a batch', exc_info=True)
            self._drop('dropping a batch')
            return False
        except Exception:
            # A disconnect, say: nothing of the batch lands, the poll goes
            # on (and claims its jobs again).
            logs.log.warning('a batch failed; its jobs are queued again',
                              exc_info=True)
            self._drop('running a batch')
            return False
        except BaseException:
            self._drop('running a batch')
            raise
        claimed = self._claimed()
        if not claimed:
            txn.abort(transaction.manager, 'empty batch')
            if self.waiting:
                self.pool._report(self.dispatcher._wakeAfterGrace,
                                  min(self.waiting))
            return False
        try:
            # A full batch is followed by another, which claims what its
            # jobs put: its commit need not wake this process's dispatcher.
            self.pool._commitBatch(claim_only=full)
        except Exception:
            logs.log.info('the commit of a batch of %d job(s) failed; '
                           'its jobs are queued again', len(claimed),
                           exc_info=True)
            self._drop('committing a batch')
            claims.blame(self.dispatcher, agent.queue, claimed)
            txn.abort(transaction.manager, 'blaming a batch')
            return False
        self._landed(claimed, agent)
        return full

    def _claim_and_run(self, agent):
        """Claim and run up to ``batch_size`` jobs; whether it did."""
        tm = self.runner.tm
        for _ in range(agent.batch_size):
            if not self.runner._go_on(self.dispatcher):
                return False
            job = claims.claim(self.dispatcher, agent, self.waiting,
                               share_only=True)
            if job is None:
                return False
            started = claims.start_claimed(job)
            if started is None or not _small(job, agent):
                self.alone = (job, started)
                return False
            entry = self.pool._batchedJob(job, agent)
            tm.savepoint = transaction.savepoint(optimistic=True)
            previous, local.dispatcher = local.dispatcher, _Dispatcher(
                self.dispatcher, self.calls)
            try:
                job._call_claimed(started)
            finally:
                local.dispatcher = previous
                local.job = None
                tm.savepoint = None
            self.pool._batchedJobRan(entry, job)
            self.ran.append((job, entry))
        return True

    def _drop(self, identifier):
        """Nothing of the batch lands: its jobs stay queued."""
        txn.abort(transaction.manager, identifier)
        for job in self._claimed():
            claims.forget(self.dispatcher, job)

    def _claimed(self):
        jobs = [job for job, _ in self.ran]
        return jobs + ([self.alone[0]] if self.alone is not None else [])

    def _landed(self, claimed, agent):
        for job in claimed:
            claims.landed(self.dispatcher, job)
        reactor = self.dispatcher.reactor
        for call, args, kwargs in self.calls:
            reactor.callFromThread(call, *args, **kwargs)
        self.pool._reportBatched([entry for _, entry in self.ran])
        if self.alone is not None:
            job, started = self.alone
            self.pool._queueClaimed({'queue': agent.queue.name,
                                     'agent': agent.name}, job, started)


def _small(job, agent):
    """Whether ``job`` may run in a batch (see the module)."""
    return (type(job) is Job and job.time_limit is None
            and agent.time_limit is None)
