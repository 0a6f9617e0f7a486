"""The status a job stores, and the statuses it derives from where it is.

A job stores one of four status ids, as 1.5 did: NEW, ACTIVE, CALLBACKS or
COMPLETED.  While the id is NEW, the status says where the job is: PENDING
in a queue, ASSIGNED when an agent holds it (or the job it is a callback
of).  The transitions of :mod:`zc.async.job` change the id; this module
only reads.
"""
from . import interfaces
from .interfaces import NEW, PENDING, ASSIGNED, ACTIVE, CALLBACKS, COMPLETED

# The raw status ids stored on jobs (as in 1.5); PENDING and ASSIGNED are
# derived from ``parent`` while the id is NEW.
_NEW, _ACTIVE, _CALLBACKS, _COMPLETED = range(4)
_STATUSES = {_NEW: NEW, _ACTIVE: ACTIVE, _CALLBACKS: CALLBACKS,
             _COMPLETED: COMPLETED}
_STATUS_NAMES = {NEW: 'NEW', PENDING: 'PENDING', ASSIGNED: 'ASSIGNED',
                 ACTIVE: 'ACTIVE', CALLBACKS: 'CALLBACKS',
                 COMPLETED: 'COMPLETED'}


def _skip_jobs(ob):
    """The nearest of ``ob`` and its parents that is not a job or proxy."""
    while ob is not None and interfaces.IAbstractJob.providedBy(ob):
        ob = ob.parent
    return ob


def _passes_to_queue(ob):
    """Whether a walk from a job to its queue goes on through ``ob``."""
    return (interfaces.IAbstractJob.providedBy(ob)
            or interfaces.IAgent.providedBy(ob)
            or interfaces.IDispatcherAgents.providedBy(ob))


def _derived_status(parent):
    """NEW, PENDING or ASSIGNED, from the nearest non-job container."""
    ob = _skip_jobs(parent)
    if interfaces.IAgent.providedBy(ob):
        return ASSIGNED
    if interfaces.IQueue.providedBy(ob):
        return PENDING
    return NEW
