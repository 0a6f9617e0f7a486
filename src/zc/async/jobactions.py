"""Acting on one job, whether or not this process can load its code.

``zc-async remove|fail|retry|requeue|abort`` (:mod:`zc.async.ops.clijobs`), the
dashboard's cancel, retry and abort and the failing of unloadable jobs
(:func:`zc.async.unloadable.fail_unloadable`) run these on a job loaded in
a tolerant connection (:func:`zc.async.tolerant.connection`): a job whose
callable or arguments cannot be imported here is handled like any other,
and keeps them for the processes that can.

Each function first checks that it applies to the job, and raises
:class:`Refused` (having changed nothing) if not; then it acts and
returns a sentence saying what it did.  The caller commits, or aborts on
error.  A dispatcher is *live* when its record in the queue is activated
and not dead; a job held by the agent of a dispatcher that is not live is
*stranded*.
"""
import ZODB.broken
import ZODB.utils

from . import interfaces
from .job import isFailure
from .loadable import callable_name, status_word, unstorable


class Refused(ValueError):
    """The action does not apply to the job (nothing was changed)."""


def describe(job):
    """``job N (callable)`` for the sentences."""
    return 'job %d (%s)' % (_oid(job), callable_name(job) or '?')


def _oid(job):
    return ZODB.utils.u64(job._p_oid)


def _broken(job):
    """Whether ``job``'s class is missing here."""
    return isinstance(job, ZODB.broken.Broken)


def unchangeable(job):
    """Why ``job`` cannot be changed here (a text), or None: its class is
    missing, or it cannot be stored (even by a tolerant connection)."""
    if _broken(job):
        return 'its class %s.%s cannot be imported here' % (
            type(job).__module__, type(job).__name__)
    return unstorable(job)


def _status(job, action):
    """The status word of ``job``; Refused for a job that cannot be
    changed here (only ``remove`` can act on it)."""
    why = unchangeable(job)
    if why is not None:
        raise Refused('cannot %s %s: %s (such a job can only be removed '
                      'from its queue)' % (action, describe(job), why))
    return status_word(job)


# ----------------------------------------------------------------- remove

def remove(job):
    """Take the pending ``job`` out of its queue (as ``queue.remove``); it
    is never run.  A job that cannot be changed here is taken out of the
    queue and its record left as it is."""
    why = unchangeable(job)
    if why is not None:
        queue = job.__getstate__().get('parent')
        if not interfaces.IQueue.providedBy(queue) or not queue._discard(
                job):
            raise Refused('cannot remove %s: it is in no queue'
                          % (describe(job),))
        return ('removed %s from queue %r (its record is left as it is: '
                '%s)' % (describe(job), queue.name, why))
    status = status_word(job)
    if status != 'pending':
        raise Refused('cannot remove %s: only pending jobs can be removed '
                      'from their queue, and it is %s'
                      % (describe(job), status))
    queue = job.queue
    queue.remove(job)
    return 'removed %s from queue %r' % (describe(job), queue.name)


# ------------------------------------------------------------------- fail

def fail(job, reason=None):
    """Complete the pending or stranded ``job`` as failed, with an
    AbortedError saying ``reason``; its callbacks run here."""
    status = _status(job, 'fail')
    error = interfaces.AbortedError(
        'failed by an operator: %s' % (reason or 'zc-async fail',))
    if status == 'pending':
        name = job.queue.name
        fail_pending(job, error)
        return 'failed %s, taken out of queue %r' % (describe(job), name)
    if status in ('assigned', 'active'):
        _require_stranded(job, 'fail')
        if status == 'active':
            job._abort(error)
        else:
            job.fail(error)
        return 'failed %s, which a stopped dispatcher held' % (
            describe(job),)
    raise Refused('cannot fail %s: only pending jobs and jobs held by a '
                  'dispatcher that is not live can be failed, and it is %s'
                  % (describe(job), status))


def fail_pending(job, error, agent=None):
    """Take the pending ``job`` out of its queue and fail it with
    ``error`` (an exception), running its callbacks; return whether it
    was pending.

    With ``agent``, the job is held by that agent while it fails, and ends
    in its completed jobs; without, it keeps its queue as ``parent`` (it
    can be retried there), out of the queue's pending jobs.  A job found
    performing callbacks (an earlier try stored its failure) gets its
    callbacks resumed.
    """
    status = _status(job, 'fail')
    if status == 'callbacks':
        job.fail()  # resumes the callbacks
        return True
    if status != 'pending':
        return False
    job._fail_pending(error, agent)
    return True


# ------------------------------------------------------------------ retry

def retry(job, queue=None):
    """Put a new job, a copy of the failed ``job``, in ``queue`` (by
    default the failed job's); return what was done and the new job."""
    status = _status(job, 'retry')
    if status != 'completed' or not isFailure(job.result):
        raise Refused('cannot retry %s: only failed jobs can be retried, '
                      'and it is %s' % (describe(job), status))
    if queue is None:
        queue = job.queue
        if queue is None:
            raise Refused('cannot retry %s: it is in no queue (name one '
                          'with --queue)'
                          % (describe(job),))
    copy = job._replica()
    queue._p_jar.add(copy)  # gives the new job its oid now
    queue.put(copy)
    return 'retried %s as job %d in queue %r' % (
        describe(job), _oid(copy), queue.name), copy


# ---------------------------------------------------------------- requeue

def requeue(job):
    """Put the stranded ``job`` back in its queue, first in line, to run
    again from the start (an active one is reset: the retry policy is not
    asked)."""
    status = _status(job, 'requeue')
    agent = job.parent
    if status not in ('assigned', 'active') or not (
            interfaces.IAgent.providedBy(agent)):
        raise Refused('cannot requeue %s: only jobs that an agent holds, '
                      'assigned or active, can be put back, and it is %s'
                      % (describe(job), status))
    _require_stranded(job, 'requeue')
    queue = agent.queue
    if status == 'active':
        job._reset()
    agent.pull(agent.index(job))
    queue.putBack(job)
    return 'put %s back in queue %r, first in line' % (
        describe(job), queue.name)


# ------------------------------------------------------------------ abort

def abort(job):
    """Ask for the abort of the pending or running ``job``
    (``job.requestAbort()``): a pending one fails at once with
    AbortRequested (keeping its queue, as ``fail`` leaves it); the
    dispatcher running one stops it (see :mod:`zc.async.watchdog`)."""
    status = _status(job, 'abort')
    if status not in ('pending', 'assigned', 'active'):
        raise Refused('cannot abort %s: only pending or running jobs can be '
                      'aborted, and it is %s' % (describe(job), status))
    job.requestAbort()
    if status == 'pending':
        return 'failed %s with AbortRequested: it had not started' % (
            describe(job),)
    return 'asked for the abort of %s: the dispatcher running it stops it' % (
        describe(job),)


def _require_stranded(job, action):
    """Refused unless ``job``'s dispatcher is not live."""
    agent = job.agent
    dispatcher = None if agent is None else agent.parent
    if dispatcher is not None and dispatcher.activated and not (
            dispatcher.dead):
        raise Refused(
            'cannot %s %s: dispatcher %s, which holds it, is live (stop it '
            'first, or wait until its siblings find it dead)'
            % (action, describe(job), dispatcher.UUID))
