"""The due FIFO of a queue: a two-level composite of jobs whose puts and
claims merge instead of conflicting.

A queue (:mod:`zc.async.queue`) keeps its due jobs, and its put-back
jobs, in a FIFO made here (:func:`new_fifo`); it appends with
:func:`append` and walks and takes jobs with :func:`iter_fifo`.  The
classes keep their pickled paths in :mod:`zc.async.queue`
(``zc.async.queue.DueFIFO``, ...), which re-exports them.

A FIFO of two levels
--------------------

A new queue's FIFO (:class:`DueFIFO`) is a tuple of segments
(``fifo._data``), each segment (:class:`DueSegment`) a tuple of buckets
(``segment._data``), each bucket (:class:`DueBucket`) a tuple of jobs.  A
put appends to the last bucket of the last segment; when that bucket is
full (``fifo.compositeSize`` jobs) it adds a bucket to the last segment,
writing the segment; when the segment is full too (``fifo.segmentSize``
buckets) it adds a segment, writing the FIFO.  A claim, pull or remove
takes a job out of its bucket, and drops what it emptied (below).  So a
put or claim writes a record of at most ``segmentSize`` references once
per bucket, and the FIFO (one reference per ``compositeSize *
segmentSize`` = 960 pending jobs) once per 960 puts or claims: the cost of
a job hardly depends on how many are pending.  With one level, the
composite (one reference per 15 pending jobs) was rewritten, reloaded by
every connection and conflict-resolved once per 15 puts.

Puts that do not conflict with claims
-------------------------------------

When a claim empties a bucket while a concurrent put adds to it, ZODB must
merge the bucket's two states.  zc.queue's ``BucketQueue`` refuses that
merge (ConflictError): the emptying transaction might also have dropped the
bucket, and the added job would then be stored in a bucket nobody
references -- lost.  Dispatchers claim each job right after it is
committed, so producers would hit that refusal all the time.  New queues
therefore use :class:`DueBucket`, whose resolver merges "one side emptied
it, the other added to it", and three rules, at both levels, make that
merge safe.  A *part* is a bucket in its segment, or a segment in the
FIFO; puts only ever write the parts at the end: the last segment, and its
last bucket.

1. Only this module removes jobs from the FIFOs (``_pull``), and it never
   drops the *last* part of a segment or FIFO, even when it is empty.  So
   a put racing a claim adds to a bucket (or segment) that the claim kept:
   the merged part, job included, is still referenced.
2. An emptied part that is *not* last is dropped (so nothing grows without
   bound), and the dropping transaction marks it ``closed`` -- its state
   gains a key; a dropped segment's buckets (all empty, its last one
   included) are marked too.  A put can only add to a closed part if the
   putter's snapshot is stale (the part was at the end then); the
   resolvers refuse states whose keys differ, so that put gets a
   ConflictError and is retried on a fresh snapshot, where it adds at the
   real end.  No job is ever added to a dropped bucket, nor a bucket to a
   dropped segment.
3. A put never appends to a bucket marked closed, nor adds a bucket to a
   segment marked closed (a closed part is never in a consistent FIFO;
   ``append`` checks anyway).

Concurrent puts that each add a bucket, or each add a segment, merge: the
segment or FIFO resolver keeps both additions.  So do a put adding a part
and a claim dropping another part of the same segment or FIFO.  Two claims
of the same job still conflict (the bucket resolver refuses two removals of
one item), and so do two transactions dropping the same part (the segment
or FIFO they drop it from refuses two removals of one part; and closing a
part conflicts with any other change to it).  Empty non-last parts left
behind by merges (two concurrent claims emptying a bucket between them, or
a claim emptying the last bucket while a put starts a new bucket or
segment) are dropped, under rule 2, by the next claim that takes a job
after them.

Segment and FIFO resolvers are zc.queue's merge, keyed by oid, so resolving
n references costs O(n), not O(n**2).

Older FIFOs
-----------

Queues from 1.5 databases keep their one-level FIFOs (a
``zc.queue.CompositeQueue`` of ``zc.queue.BucketQueue``): 1.5 processes may
share the database and they pull with ``CompositeQueue.pull``, which drops
empty last buckets, so only the conservative resolver is safe for them.
Their puts may conflict with claims as in 1.5; the rules above still apply
to them and cost nothing.  Queues stored by zc.async 2 before segments
existed keep their one-level :class:`DueFIFO` of :class:`DueBucket` (the
rules apply to it as a FIFO of one level).
"""
import functools

import persistent
import zc.queue
import zc.queue._queue

from . import _merge


def new_fifo(factory=None, subfactory=None):
    """A new FIFO holding its first (empty) bucket.

    By default a :class:`DueFIFO`, two levels: its first
    :class:`DueSegment` holding its first :class:`DueBucket`.  Given a
    ``factory`` (a ``zc.queue.CompositeQueue`` class, for a 1.5 queue's
    put-back FIFO), a one-level composite of ``subfactory`` buckets.
    Starting with a bucket spares the first puts a write of the composite
    (and concurrent first puts a bucket each).
    """
    if factory is None:
        fifo = DueFIFO(subfactory=DueBucket)
        fifo._data = (DueSegment([DueBucket()]),)
    else:
        fifo = factory(subfactory=subfactory)
        fifo._data = (subfactory(),)
    return fifo


def _segmented(fifo):
    """Whether ``fifo`` has two levels (segments of buckets).

    The FIFOs of 1.5 queues, and of queues stored before segments existed
    (a :class:`DueFIFO` of :class:`DueBucket`), have one: a tuple of
    buckets.  A two-level FIFO is never without a segment (rule 1).
    """
    data = fifo._data
    return bool(data) and isinstance(data[-1], DueSegment)


def append(fifo, job):
    """Add ``job`` at the end of ``fifo`` (rule 3 in the module doc).

    Writes only the last bucket; also its segment when a bucket is added,
    and the FIFO itself when a segment is added.
    """
    bucket = _last_bucket(fifo)
    if (bucket is None or getattr(bucket, 'closed', False)
            or len(bucket) >= fifo.compositeSize):
        bucket = fifo.subfactory()
        _add_bucket(fifo, bucket)
    bucket.put(job)


def _last_bucket(fifo):
    """The bucket puts append to, or None if a new one is needed."""
    data = fifo._data
    if not data:  # a 1.5 FIFO whose last bucket 1.5 dropped
        return None
    last = data[-1]
    if isinstance(last, DueSegment):
        if last.closed:  # never in a consistent FIFO; checked anyway
            return None
        last = last._data[-1]
    return last


def _add_bucket(fifo, bucket):
    """Make the new, empty ``bucket`` the last one of ``fifo``."""
    data = fifo._data
    if not _segmented(fifo):
        fifo._data = data + (bucket,)
        return
    segment = data[-1]
    if segment.closed or len(segment._data) >= fifo.segmentSize:
        segment = DueSegment()
        fifo._data = data + (segment,)
    segment._data += (bucket,)


def iter_fifo(fifo):
    """Yield ``(job, remove)`` for each job of ``fifo``, in order.

    Walks the buckets directly: ``CompositeQueue.pull`` checks the length
    of every bucket (loading them all), rewrites the composite on each pull
    and drops an emptied last bucket, while removing here rewrites a
    segment or the FIFO only when it drops a bucket or segment that is not
    last.
    """
    if _segmented(fifo):
        for segment in fifo._data:
            yield from _iter_buckets(fifo, segment, segment._data)
    else:
        yield from _iter_buckets(fifo, None, fifo._data)


def _iter_buckets(fifo, segment, buckets):
    for bucket in buckets:
        for ix, job in enumerate(bucket):
            yield job, functools.partial(_pull, fifo, segment, bucket, ix)


def _pull(fifo, segment, bucket, ix):
    """Remove item ``ix`` of ``bucket`` (in ``segment``, None for a
    one-level FIFO), then drop what is empty up to it, except what is last
    (rules 1 and 2 in the module doc): buckets from their segment (or
    one-level FIFO), then segments from the FIFO.

    What comes before ``bucket`` was loaded by the walk that found it.
    """
    bucket.pull(ix)
    if segment is None:
        _drop_empty(fifo, bucket, _is_empty_bucket, _close_bucket)
    else:
        _drop_empty(segment, bucket, _is_empty_bucket, _close_bucket)
        _drop_empty(fifo, segment, _is_empty_segment, _close_segment)


def _drop_empty(composite, upto, is_empty, close):
    """Drop and close the empty parts of ``composite._data`` up to
    ``upto``, except the last part."""
    data = composite._data
    end = next(i for i, part in enumerate(data) if part is upto) + 1
    last = data[-1]
    dropped = [p for p in data[:end] if p is not last and is_empty(p)]
    if dropped:
        for part in dropped:
            close(part)
        ids = {id(part) for part in dropped}
        composite._data = tuple(p for p in data if id(p) not in ids)


def _is_empty_bucket(bucket):
    return not len(bucket)


def _is_empty_segment(segment):
    # Stops at the first bucket holding a job: usually the first one.
    return not any(len(bucket) for bucket in segment._data)


def _close_bucket(bucket):
    bucket.closed = True  # a concurrent put into it must conflict


def _close_segment(segment):
    """Close a dropped segment and the (empty) buckets it still holds: a
    stale put may see any of them as the FIFO's last."""
    segment.closed = True
    for bucket in segment._data:
        _close_bucket(bucket)


class DueBucket(zc.queue._queue.BucketQueue):
    """A FIFO bucket whose resolver merges a put with a claim emptying it.

    Safe only because of the module's rules: see its docstring.
    ``closed`` is set (and so becomes part of the state) when the bucket is
    dropped from its segment or composite, or its segment is dropped.
    """

    __module__ = 'zc.async.queue'

    closed = False

    def _p_resolveConflict(self, oldstate, committedstate, newstate):
        return _resolve_fifo_conflict(oldstate, committedstate, newstate)


class DueSegment(persistent.Persistent):
    """The middle level of a :class:`DueFIFO`: a run of consecutive
    :class:`DueBucket` buckets (``_data``, a tuple, never empty).

    ``closed`` is set (and so becomes part of the state) when the segment
    is dropped from its FIFO.  Its resolver merges as the FIFO's does.
    """

    __module__ = 'zc.async.queue'

    closed = False

    def __init__(self, buckets=()):
        self._data = tuple(buckets)

    def __len__(self):
        return sum(len(bucket) for bucket in self._data)

    def __iter__(self):
        for bucket in self._data:
            yield from bucket

    def _p_resolveConflict(self, oldstate, committedstate, newstate):
        return _resolve_fifo_conflict(oldstate, committedstate, newstate)


class DueFIFO(zc.queue.CompositeQueue):
    """The due FIFO (and put-back FIFO) of a new queue: a tuple of
    :class:`DueSegment` segments, each a tuple of ``segmentSize``
    :class:`DueBucket` buckets of ``compositeSize`` jobs (merges of
    concurrent puts may make either a little larger).

    Queues stored before segments existed have a one-level DueFIFO (a
    tuple of DueBucket); they keep working as they are.  ``put`` and
    ``pull`` follow the module's rules; the rest of the ``zc.queue`` API is
    CompositeQueue's.  The resolver is zc.queue's merge, keyed by oid, so
    resolving a composite of n parts costs O(n), not O(n**2).
    """

    __module__ = 'zc.async.queue'

    #: Buckets per segment: 960 jobs.  A put writes a segment (of at most
    #: this many references) once per bucket, and the FIFO once per
    #: segment.
    segmentSize = 64

    def put(self, item):
        append(self, item)

    def pull(self, index=0):
        position = index + len(self) if index < 0 else index
        if position >= 0:
            for ix, (item, remove) in enumerate(iter_fifo(self)):
                if ix == position:
                    remove()
                    return item
        raise IndexError(index)

    def _p_resolveConflict(self, oldstate, committedstate, newstate):
        return _resolve_fifo_conflict(oldstate, committedstate, newstate)


def _resolve_fifo_conflict(oldstate, committedstate, newstate):
    """``zc.queue``'s ``resolveQueueConflict`` (``bucket=False``) in linear
    time.

    Resolves buckets, segments and FIFOs.  zc.queue wraps each persistent
    reference in a proxy whose hash is constant, so its set operations
    compare every pair of items: a tuple of n references costs O(n**2) to
    resolve.  Here items are keyed
    by (database name, oid), which is how references compare.  Any other
    item (none is ever stored by this module) falls back to zc.queue.
    """
    states = (oldstate, committedstate, newstate)
    try:
        for state in states:
            for item in state['_data']:
                _merge.ref_key(item)
    except TypeError:  # not only strong persistent references
        return zc.queue._queue.resolveQueueConflict(*states, bucket=False)
    _merge.check_only(('_data',), committedstate, newstate)
    committedstate['_data'] = _merge.merge_items(
        *(state['_data'] for state in states), _merge.ref_key)
    return committedstate
