"""Conflict resolution of persistent records that hold tuples of items.

The queue's FIFO parts (see :mod:`zc.async.duefifo`) and an agent's jobs
record (see :mod:`zc.async.agentjobs`) keep tuples of items that
concurrent transactions add to and remove from.  :func:`merge_items`
merges two such changes of one tuple in linear time: what one side
removed and the other did not add is gone, what either added is kept (the
committed side's order first).
"""
import ZODB.ConflictResolution
import ZODB.POSException


def merge_items(old, committed, new, key):
    """The merge of the tuples ``committed`` and ``new``, both changed from
    ``old``; ``key(item)`` identifies an item.  ConflictError when both
    removed, or both added, the same item."""
    old_keys = {key(x) for x in old}
    committed_keys = {key(x) for x in committed}
    new_keys = {key(x): x for x in new}
    new_removed = old_keys - set(new_keys)
    new_added = set(new_keys) - old_keys
    if (new_removed & (old_keys - committed_keys)
            or new_added & (committed_keys - old_keys)):
        raise ZODB.POSException.ConflictError  # the same item both times
    merged = [x for x in committed if key(x) not in new_removed]
    merged.extend(x for x in new if key(x) in new_added)
    return tuple(merged)


def check_only(merged, committedstate, newstate):
    """ConflictError unless the two states differ at most in the
    attributes named in ``merged``."""
    if set(committedstate) != set(newstate) or any(
            value != committedstate[name]
            for name, value in newstate.items() if name not in merged):
        raise ZODB.POSException.ConflictError  # only those merge


def ref_key(item):
    """What a strong persistent reference compares by; TypeError for any
    other item."""
    if (not isinstance(item, ZODB.ConflictResolution.PersistentReference)
            or item.weak or item.oid is None):
        raise TypeError(item)
    return item.database_name, item.oid
