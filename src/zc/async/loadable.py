"""Whether this process can load a job, and what it can tell of one it cannot.

The claims of dispatchers (through :mod:`zc.async.unloadable`), the job
actions (:mod:`zc.async.jobactions`) and the reports for operators read
jobs whose code may be missing in this process.  These functions look at
such a job without trusting its code: :func:`check` says why it cannot run
here, :func:`unstorable` why it cannot be stored again,
:func:`callable_name` and :func:`status_word` describe it from its record.

What is noticed, and what is not
--------------------------------

:func:`check` loads the job (claims load it anyway) and looks for what
cannot work here: a failed load; a job whose class is missing; a
callable, or an argument (searched into plain lists, tuples, sets and
dicts, :data:`SCAN_LIMIT` items at most), that ZODB could only load as a
``Broken`` stand-in.  Arguments too large to be kept in the job's own
record are in a record of their own, which the check loads (the worker
would load it anyway); other persistent objects are not loaded, only
their classes looked at.  Anything deeper that makes the claim's commit fail
is found after the failure: see :func:`unstorable`, which the claims use
to pick out the job to blame.  A job whose own class is missing cannot
be failed (nothing can store it): it is passed over, and ``zc-async
remove`` takes it out of its queue.
"""
import datetime
import sys
import weakref

import ZODB.broken
import ZODB.POSException
import ZODB.serialize
import ZODB.utils

from . import interfaces
from . import tolerant

#: How many items of the arguments' plain containers :func:`check` looks
#: at, at most.
SCAN_LIMIT = 100

_EARLIEST = datetime.datetime.min.replace(tzinfo=datetime.timezone.utc)

# {database: {oid: why}} of the job records this process failed to load:
# not loaded again (ZODB logs each failed load at ERROR).
_unreadable = weakref.WeakKeyDictionary()


# ------------------------------------------------------------- checking

def job_key(job):
    """``(database name, oid)`` of a stored job."""
    return job._p_jar.db().database_name, job._p_oid


def check(job):
    """Why this process cannot run ``job`` (a text), or None.

    Loads the job.  Errors of the database (conflicts, disconnects)
    propagate.
    """
    unreadable = _unreadable.setdefault(job._p_jar.db(), {})
    if job._p_oid in unreadable:
        return unreadable[job._p_oid]
    try:
        job._p_activate()
    except Exception as e:
        if tolerant.is_transient(e):
            raise
        why = unreadable[job._p_oid] = 'its record cannot be loaded: %s' % (
            _error_text(e),)
        return why
    if isinstance(job, ZODB.broken.Broken):
        return 'its class %s' % (_missing_text(job),)
    if tolerant.is_missing(job._callable_root):
        return 'its callable %s' % (_missing_text(job._callable_root),)
    try:
        found = _first_missing(job)
    except Exception as e:  # an argument record that cannot be loaded
        if tolerant.is_transient(e):
            raise
        return 'its arguments cannot be loaded: %s' % (_error_text(e),)
    if found is not None:
        return 'its arguments hold %s' % (_missing_text(found),)
    return None


def due_time(job):
    """``job.begin_after``; the earliest time for a job whose record (or
    class) cannot be loaded here: claims meet it first, and pass over it.
    """
    if job._p_oid in _unreadable.get(job._p_jar.db(), ()):
        return _EARLIEST
    try:
        return job.begin_after
    except Exception as e:
        if tolerant.is_transient(e):
            raise
        return _EARLIEST


def _first_missing(job):
    """The first missing global (or instance of one) among the arguments
    of ``job`` and in the plain containers they are, looking at
    :data:`SCAN_LIMIT` items at most; or None.

    Loads the arguments' own records (large ones are kept in a
    PersistentList and a PersistentMapping), not other persistent objects.
    """
    pending = [*job._args, *job._kwargs.values()]
    seen = 0
    while pending and seen < SCAN_LIMIT:
        value = pending.pop()
        seen += 1
        if tolerant.is_missing(value):
            return value
        if isinstance(value, dict):
            pending.extend(value.keys())
            pending.extend(value.values())
        elif isinstance(value, (list, tuple, set, frozenset)):
            pending.extend(value)
    return None


def _error_text(error):
    # ZODB wraps what __setstate__ raised in a StateLoadError.
    cause = error.__cause__
    if isinstance(error, ZODB.POSException.StateLoadError) and cause:
        error = cause
    return '%s: %s' % (type(error).__name__, error)


def _missing_text(obj):
    """``module.name cannot be imported: why`` of a missing global."""
    cls = obj if isinstance(obj, type) else type(obj)
    why = getattr(cls, '__Missing_error__', None)
    if why is None:  # one of ZODB's Broken classes: ask again
        why = _import_error(cls.__module__, cls.__name__)
    return '%s, which cannot be imported: %s' % (
        tolerant.dotted_name(cls), why)


def _import_error(module, name):
    try:
        __import__(module)
        getattr(sys.modules[module], name)
    except Exception as e:
        return '%s: %s' % (type(e).__name__, e)
    return 'it was missing when the job was loaded'


def callable_name(job):
    """The dotted name of ``job``'s callable (with the oid of a persistent
    owner), read without loading what it names; None if unknown."""
    try:
        state = job.__getstate__()
    except Exception:  # a ghost that cannot be loaded, a broken job
        state = None
    if not isinstance(state, dict) or '_callable_root' not in state:
        try:
            state = tolerant.record_state(job._p_jar, job._p_oid)
        except Exception:
            return None
        if not isinstance(state, dict):
            return None
    root, name = state.get('_callable_root'), state.get('_callable_name')
    oid = getattr(root, '_p_oid', None)
    if isinstance(root, tolerant.Reference):
        oid, cls = root.oid, root.cls
    else:
        cls = type(root) if oid is not None else root
    text = tolerant.dotted_name(cls) or repr(cls)
    if isinstance(oid, bytes) and len(oid) == 8:
        text += ' (oid %d)' % ZODB.utils.u64(oid)
    return text if name is None else '%s.%s' % (text, name)


def unstorable(job):
    """What keeps ``job`` (loaded) from being stored again, or None.

    The claims ask this of the jobs a failed claim commit took, to find
    the one to blame.
    """
    writer = ZODB.serialize.ObjectWriter(job)
    try:
        writer.serialize(job)
    except Exception as e:
        if tolerant.is_transient(e):
            raise
        return 'it cannot be stored here: %s' % (_error_text(e),)
    finally:
        # The writer gave the new persistent objects it met (a job's first
        # annotation, say) an oid and the connection, as a commit does: the
        # commit to come would take them for stored objects and skip them.
        for obj in writer._stack:
            if obj is not job:
                obj._p_jar = obj._p_oid = None
    return None


# ------------------------------------------------------------ status words

#: The lower-case word of each job status.
STATUS_WORDS = {
    interfaces.NEW: 'new', interfaces.PENDING: 'pending',
    interfaces.ASSIGNED: 'assigned', interfaces.ACTIVE: 'active',
    interfaces.CALLBACKS: 'callbacks', interfaces.COMPLETED: 'completed'}

# The words of the status ids that jobs store (see zc.async.job), for a job
# whose class is missing here: only its record tells.
_RECORDED_STATUS_WORDS = {1: 'active', 2: 'callbacks', 3: 'completed'}


def status_word(job):
    """``job``'s status as a lower-case word (``'pending'``, ...)."""
    if isinstance(job, ZODB.broken.Broken):
        return _recorded_status_word(job.__getstate__() or {})
    return STATUS_WORDS[job.status]


def _recorded_status_word(state):
    """The status word of a job's state (a NEW job's is its parent's)."""
    word = _RECORDED_STATUS_WORDS.get(state.get('_status_id'))
    if word is not None:
        return word
    parent = state.get('parent')
    if interfaces.IQueue.providedBy(parent):
        return 'pending'
    if interfaces.IAgent.providedBy(parent):
        return 'assigned'
    return 'new'
