"""An agent's held jobs and its newest completed jobs, in one record.

Each job an agent runs changes the agent's bookkeeping twice: the claim
adds it to the held jobs, the completion moves it from there to the
``completed`` collection (a rotating set of BTrees with a length
counter, :class:`zc.async.utils.Periodic`).  Kept apart, that is three
records written per job: the held jobs, a BTree bucket (with up to 60
entries) and the counter.  The commit that completes a worker's job also
claims its next one (see :mod:`zc.async.workers`), so one record can
take all of it.

:class:`AgentJobs` is the held jobs of an agent created by zc.async 2
(``agent._data``).  It also keeps, in the same record, the agent's last
completed jobs (at most :data:`MOVE_AFTER`) with their keys; the
completion that reaches that number moves them into the ``completed``
collection in one go.  So a job's completion and the next claim write
this record alone, and the BTree bucket and the counter are written once
per :data:`MOVE_AFTER` jobs.  The completed collection reads the jobs
still waiting here as its newest ones (``Periodic._recent``): its
iteration, length, ``first`` and ``last`` are as if they had been added
one by one.

Two threads of one agent write this record concurrently all the time; its
resolver merges the held jobs and the completed jobs as the queue's FIFO
buckets merge their jobs (see :mod:`zc.async._merge`).  Two commits that
move the same completed jobs conflict: one of them is retried, which
never runs a job again (only result commits complete jobs).

Agents of 1.5 databases, and of zc.async 2 databases from before this
record existed, keep a ``zc.queue.Queue`` of held jobs and add each
completed job to their collection directly.
"""
import persistent

from . import _merge
from . import utils

#: How many completed jobs wait in the record before they are moved to
#: the completed collection.
MOVE_AFTER = 10


class AgentJobs(utils.SequenceReads, persistent.Persistent):
    """The held jobs of an agent (a sequence, in claim order) and its
    last completed jobs."""

    __module__ = 'zc.async.agentjobs'

    def __init__(self):
        self._data = ()  # held jobs
        self._done = ()  # ((key, job), ...) completed, not yet moved

    # The held jobs: the part of zc.queue's API an agent uses.

    def put(self, job):
        self._data += (job,)

    def pull(self, index=0):
        """Remove and return the held job at ``index``."""
        data = self._data
        job = data[index]
        position = index % len(data)
        self._data = data[:position] + data[position + 1:]
        return job


    # The completed jobs waiting to be moved.

    def complete(self, job, key):
        """Stop holding ``job`` (by identity) and keep it as completed
        with ``key``; return whether the waiting jobs should be moved."""
        self._data = tuple(held for held in self._data if held is not job)
        self._done += ((key, job),)
        return len(self._done) >= MOVE_AFTER

    def take_done(self):
        """Remove and return the waiting ``(key, job)`` pairs."""
        done = self._done
        if done:  # else leave the record unchanged
            self._done = ()
        return done

    def done_items(self, low=None, high=None):
        """The waiting ``(key, job)`` pairs with ``low <= key <= high``,
        by key (newest first)."""
        return sorted((pair for pair in self._done
                       if (low is None or pair[0] >= low)
                       and (high is None or pair[0] <= high)),
                      key=_done_key)

    def done_count(self):
        return len(self._done)

    def _p_resolveConflict(self, oldstate, committedstate, newstate):
        states = (oldstate, committedstate, newstate)
        _merge.check_only(('_data', '_done'), committedstate, newstate)
        committedstate['_data'] = _merge.merge_items(
            *(state['_data'] for state in states), _merge.ref_key)
        committedstate['_done'] = _merge.merge_items(
            *(state['_done'] for state in states), _done_key)
        return committedstate


def _done_key(pair):
    return pair[0]  # keys are unique in an agent's completed jobs
