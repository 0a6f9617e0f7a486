"""How a dispatcher's process claims jobs: which job, and starting it.

Both the dispatcher's polls and its workers' completing commits claim jobs
(see :mod:`zc.async.dispatcher` and :mod:`zc.async.workers`).  For a
*plain* agent (an :class:`zc.async.agent.Agent` without a chooser) they
claim through :func:`claim`, which avoids the two kinds of conflicting
claims a busy queue would otherwise see:

* between threads of this process: a connection's snapshot may predate
  claims of its siblings, so a job this process claimed lately
  (``Dispatcher.recent_claims``) is passed over while the snapshot does not
  show that claim, and claims are made one at a time
  (``Dispatcher.claim_lock``);
* between processes: each of the ``count`` live dispatchers of a queue has
  a rank (``Dispatcher.shares``, by UUID), prefers the jobs whose oid
  modulo ``count`` is its rank among the first :data:`SHARE_WINDOW`, and
  leaves the others' jobs to them for :data:`GRACE` after they are due.

A lone dispatcher claims in queue order, as ``agent.claimJob()`` does.
Agents of other classes, or with a chooser, are asked ``claimJob()``.

Every claim passes over the jobs this process cannot load (see
:mod:`zc.async.unloadable`); should a claim's commit fail all the same,
:meth:`Batch.blame` finds the job that cannot be stored, so that the next
claim passes over it too.
"""
import datetime

import ZODB.utils

from . import interfaces
from . import loadable
from .agent import Agent
from .job import Job

# How many of the first claimable jobs a claim looks at for one of its
# process's share.
SHARE_WINDOW = 8

# How many recent claims a process remembers (see _claimed_since).
RECENT = 64

# How long a job is left to the dispatcher whose share it is, once due.
GRACE = datetime.timedelta(milliseconds=100)


def plain(agent):
    """Whether :func:`claim` may claim for ``agent``."""
    return type(agent) is Agent and agent.chooser is None


def claim(dispatcher, agent, waiting=None, fail_unloadable=False,
          share_only=False):
    """Claim a job for the plain ``agent`` of ``dispatcher``; or None.

    When a job of another dispatcher's share is left to it, the time it was
    due is appended to the list ``waiting``: it is anybody's
    :data:`GRACE` later.  Tell :func:`landed` or :func:`forget` whether the
    claim's commit succeeded.  With ``fail_unloadable``, the claim may be
    of a job that fails a job nobody can load (see
    :mod:`zc.async.unloadable`).  With ``share_only``, the jobs of other
    dispatchers' shares are left to them even after their grace (a batch's
    claims, see :mod:`zc.async.batches`: a conflict would cost the batch).
    """
    recent = dispatcher.recent_claims
    with dispatcher.claim_lock:
        preferences = _preferences(dispatcher, agent.queue, waiting)
        mine = preferences.get('prefer') if share_only else None
        job = agent._claim_passing_over(
            lambda job: _claimed_since(recent, job) or (
                mine is not None and not mine(job)),
            unloadable=dispatcher.unloadable,
            fail_unloadable=fail_unloadable, **preferences)
        if job is not None:
            recent[job._p_oid] = None  # in flight
            while len(recent) > RECENT:
                recent.popitem(last=False)
    return job


def landed(dispatcher, job):
    """Note that the commit of ``job``'s claim succeeded."""
    with dispatcher.claim_lock:
        if job._p_oid in dispatcher.recent_claims:
            dispatcher.recent_claims[job._p_oid] = job._p_serial


def forget(dispatcher, job):
    """Note that the commit of ``job``'s claim failed: it is still queued."""
    with dispatcher.claim_lock:
        dispatcher.recent_claims.pop(job._p_oid, None)


def blame(dispatcher, queue, claimed):
    """After a claim's commit failed, note each job it took from ``queue``
    (see :func:`taken`; the ``claimed`` jobs, aborted since) that cannot be
    stored, so that claims pass over it; return whether one was found.
    Loads the jobs."""
    found = False
    for job in claimed:
        for stored in taken(job):
            error = loadable.unstorable(stored)
            if error is not None:
                dispatcher.unloadable.blame(stored, queue, error)
                found = True
    return found


def taken(job):
    """The stored jobs that claiming ``job`` took from the queue: itself,
    or the job that ``job`` wraps, when a claim made it (to fail a job
    that missed its deadline, say)."""
    if job._p_oid is not None:
        return [job]
    root = getattr(job, '_callable_root', None)
    if interfaces.IJob.providedBy(root) and root._p_oid is not None:
        return [root]
    return []


class Batch:
    """The claims of one commit of a poll for one agent (of any kind)."""

    def __init__(self, dispatcher, agent, waiting=None):
        self.dispatcher = dispatcher
        self.agent = agent
        self.waiting = waiting  # see claim
        self.plain = plain(agent)
        self.jobs = []  # claimed through claim(): see landed and forget
        self.claimed = []  # every job claimed (see blame)

    def claim(self):
        """Claim a job for the agent; or None."""
        if not self.plain:
            job = self.agent.claimJob()
        else:
            job = claim(self.dispatcher, self.agent, self.waiting,
                        fail_unloadable=True)
            if job is not None:
                self.jobs.append(job)
        if job is not None:
            self.claimed.append(job)
        return job

    def landed(self):
        """The commit succeeded."""
        for job in self.jobs:
            landed(self.dispatcher, job)

    def failed(self):
        """The commit failed: the jobs claimed are still queued."""
        for job in self.jobs:
            forget(self.dispatcher, job)
        del self.jobs[:]
        del self.claimed[:]

    def blame(self, queue):
        """After the commit failed (and before the next try): whether one
        of the jobs it claimed cannot be stored (see :func:`blame`)."""
        return blame(self.dispatcher, queue, self.claimed)


def _claimed_since(recent, job):
    """Whether this process claimed ``job`` in a commit that the snapshot
    ``job`` was loaded from predates (or that is under way).

    The claim's commit changed the job: a snapshot that includes it shows
    the job with that commit's serial, or a later one if it was queued
    again since.
    """
    if job._p_oid not in recent:
        return False
    serial = recent[job._p_oid]
    return serial is None or job._p_serial < serial


def _preferences(dispatcher, queue, waiting):
    rank, count = dispatcher.shares.get(queue.name, (0, 1))
    if count < 2:
        return {}
    return {'prefer': lambda job: ZODB.utils.u64(job._p_oid) % count == rank,
            'window': SHARE_WINDOW, 'grace': GRACE, 'waiting': waiting}


def start_claimed(job):
    """Start ``job``, just claimed, in the claim's commit; return its
    ``active_start``, or None when it must be called as in 1.5 (a job
    class with its own ``__call__``).

    This spares each job a commit of its own to go ACTIVE: the dispatcher
    claims only as many jobs as its agents have idle threads, so each one
    runs at once.
    """
    if (isinstance(job, Job) and type(job).__call__ is Job.__call__
            and job.status == interfaces.ASSIGNED):
        return job._start_claimed()
    return None
