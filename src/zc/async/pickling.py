"""What pickling tells about a value before, or apart from, a commit.

ZODB pickles what a commit stores, and a value that cannot be pickled fails
the commit, far from the code that put it there.  These functions pickle
ahead of time, each treating persistent objects as its question needs:

* :func:`pickling_problem`: why a value cannot be stored, as a commit
  would store it (jobs put in a queue, the time zones of schedules);
* :func:`pickled_size`: how large a value's pickle is, persistent objects
  counted as references (which arguments a job keeps in its own record);
* :func:`stores_alone`: whether objects pickle and load back without a
  database (the exception a failure keeps);
* :func:`same_state`: whether two states read by conflict resolution are
  equal.
"""
import io
import pickle

import persistent
import ZODB.ConflictResolution

_PROTOCOL = 3  # ZODB's


def _pickle(pickler, value):
    """The pickle of ``value`` made by ``pickler``, a Pickler subclass
    writing to ``pickler.file``."""
    pickler.dump(value)
    return pickler.file.getvalue()


class _Pickler(pickle.Pickler):
    """A pickler into memory, with ZODB's protocol."""

    def __init__(self):
        self.file = io.BytesIO()
        super().__init__(self.file, _PROTOCOL)


# ------------------------------------------------------ can it be stored?

class _CheckingPickler(_Pickler):
    """Pickles as a ZODB commit would: persistent objects are references;
    new ones (not in a database yet) are collected to be checked too."""

    def __init__(self, new_objects, seen):
        super().__init__()
        self.new_objects = new_objects
        self.seen = seen

    def persistent_id(self, obj):
        if not isinstance(obj, persistent.Persistent):
            return None
        if obj._p_jar is None and id(obj) not in self.seen:
            self.seen.add(id(obj))
            self.new_objects.append(obj)
        return id(obj)


def pickling_problem(value):
    """Why ``value`` cannot be stored in a ZODB, or None if it can."""
    new_objects, seen = [], set()
    pending = [value]
    while pending:
        obj = pending.pop()
        try:
            _pickle(_CheckingPickler(new_objects, seen), obj)
        except Exception as e:  # pickling fails in many ways
            return '%s: %s' % (type(e).__name__, e)
        # The state of each new persistent object met: the commit stores it.
        pending.extend(ob.__getstate__() for ob in new_objects)
        del new_objects[:]
    return None


# --------------------------------------------------------- how large?

class _SizingPickler(_Pickler):
    """Pickles as a commit would, persistent objects as references."""

    def persistent_id(self, obj):
        if isinstance(obj, persistent.Persistent):
            return b'\0' * 8  # about an oid
        return None


def pickled_size(value):
    """The size in bytes of ``value``'s pickle, a persistent object
    counting as a reference; None if it cannot be pickled."""
    try:
        return len(_pickle(_SizingPickler(), value))
    except Exception:  # pickling fails in many ways
        return None


# ---------------------------------------------- without the database?

class _NoPersistentPickler(_Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, persistent.Persistent):
            raise pickle.PicklingError('refers to a persistent object')
        return None


def stores_alone(*objects):
    """Whether ``objects`` pickle and unpickle without database objects."""
    try:
        pickle.loads(_pickle(_NoPersistentPickler(), objects))
    except Exception:
        return False
    return True


# ------------------------------------------------------- equal states?

class _ComparingPickler(_Pickler):
    """Pickles a state read by conflict resolution, so that equal pickles
    mean equal states: references by their data, and the stand-ins for
    globals the resolving process cannot import (say, a job's callable on
    a ZEO server without the application) by their names."""

    def persistent_id(self, obj):
        if isinstance(obj, ZODB.ConflictResolution.PersistentReference):
            return repr(obj.data)
        if isinstance(obj, ZODB.ConflictResolution.BadClass):
            return ('global',) + obj.args
        return None


def same_state(a, b):
    """Whether two states pickle alike (unpicklable: not known, so no)."""
    try:
        return _pickle(_ComparingPickler(), a) == _pickle(
            _ComparingPickler(), b)
    except Exception:  # pickling fails in many ways
        return False
