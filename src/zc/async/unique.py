"""Unique jobs: at most one pending or running job per key in a queue.

``queue.put(callable, unique_key='invoice-42')`` looks the key up in the
queue's index (``queue._unique_jobs``, an OOBTree of key -> job).  While
the job filed there is pending, assigned, active or running its callbacks
in that queue, ``put`` returns it (or raises
:class:`zc.async.interfaces.DuplicateJobError`) instead of adding another;
otherwise the new job is filed under the key, in the put's transaction.
The job keeps the key as ``job.unique_key``.

Why this is safe under concurrency: two transactions putting the same key
both insert it into the same BTree bucket, which BTrees refuse to merge,
so the second commit raises ConflictError; its retry sees the first one's
job and returns it.  Puts of different keys insert different keys, which
BTrees merge (unless a bucket splits meanwhile), and puts without a key
never read or write the index.

The key is released when the job completes (``Job._finish``), and when it
leaves the queue unrun (``pull``, ``remove``, or a claim finding it past
its ``begin_by`` deadline): the entry is deleted, in commits that zc.async
retries without calling the job again.  An entry
whose job is no longer live in the queue (say, released by a process that
does not know unique keys) counts as free.

Queues stored before unique keys existed (and 1.5's) get their index on
their first put with a key.
"""
import BTrees.OOBTree

from . import interfaces

#: The values of ``put``'s ``on_duplicate``: return the job holding the
#: key, or raise DuplicateJobError.
ON_DUPLICATE = ('return', 'raise')

# The statuses of a job that holds its key.
_LIVE = (interfaces.PENDING, interfaces.ASSIGNED, interfaces.ACTIVE,
         interfaces.CALLBACKS)


def check(job, unique_key, on_duplicate):
    """The key ``job`` is to be put under (None: no key), after checking
    ``put``'s arguments."""
    if on_duplicate not in ON_DUPLICATE:
        raise ValueError('on_duplicate must be %s, not %r' % (
            ' or '.join(repr(value) for value in ON_DUPLICATE),
            on_duplicate))
    if unique_key is None:
        return job.unique_key
    if not isinstance(unique_key, str) or not unique_key:
        raise TypeError('unique_key must be a non-empty string, not %r'
                        % (unique_key,))
    if job.unique_key not in (None, unique_key):
        raise ValueError('%r already has the unique key %r, not %r'
                         % (job, job.unique_key, unique_key))
    return unique_key


def holder(queue, key):
    """The job holding ``key`` in ``queue``, or None if the key is free."""
    index = queue._unique_jobs
    job = None if index is None else index.get(key)
    if job is not None and job.status in _LIVE and job.queue is queue:
        return job
    return None


def duplicate(queue, key, job, on_duplicate):
    """What ``put`` answers when ``job`` holds ``key`` already."""
    if on_duplicate == 'raise':
        raise interfaces.DuplicateJobError(
            'a job with unique key %r is already pending or running in '
            'queue %r: %r' % (key, queue.name, job), key, job)
    return job


def register(queue, key, job):
    """File ``job`` under ``key`` (free, or held by ``job`` itself)."""
    if queue._unique_jobs is None:
        queue._unique_jobs = BTrees.OOBTree.OOBTree()
    index = queue._unique_jobs
    if index.get(key) is not job:  # a rescheduled job is filed already
        index[key] = job
    job.unique_key = key


def release(queue, job):
    """Free the key of ``job`` in ``queue`` (if it holds one there)."""
    index = None if queue is None else queue._unique_jobs
    if index is not None and index.get(job.unique_key) is job:
        del index[job.unique_key]
