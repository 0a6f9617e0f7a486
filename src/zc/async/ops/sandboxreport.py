"""What a run in a sandbox did: its report, and the objects it wrote.

A :class:`Report` (see :class:`zc.async.interfaces.ISandboxReport`) tells
the outcome of one replay or dry-run (:mod:`zc.async.ops.sandbox`): the result
or the error and its traceback, the time it took, and what the run wrote to
the sandbox, as :class:`Change` records, found by :func:`changes`: objects
added, objects changed (with the differences of their attributes), and
objects that the changed ones no longer refer to.

Stored states are read without loading the objects they refer to: a
reference is shown as ``module.Class (oid N, db 'name')``, as
:func:`zc.async.logs.custom_repr` shows a persistent object.  Long values,
long lists of differences and long lists of objects are cut short.
"""
import io
import pickle
import reprlib

import zope.interface
import ZODB.POSException
import ZODB.serialize
from ZODB.utils import u64

from .. import interfaces
from .. import snapshot

#: How many differences of one object a report keeps.
MAX_DIFFERENCES = 10
#: How many objects of each kind (added, changed, removed) a report shows.
MAX_OBJECTS = 100
#: How many characters of one difference (or result) a report keeps.
MAX_LINE = 200
#: How deep the differences go into dictionaries in a state.
MAX_DEPTH = 3

ELLIPSIS = '...'


def cut(text, limit=MAX_LINE):
    """``text``, cut to ``limit`` characters."""
    return text if len(text) <= limit else text[:limit - 3] + ELLIPSIS


# ----------------------------------------------------------- references

class Ref:
    """A reference found in a stored state, not loaded."""

    __slots__ = ('oid', 'database', 'class_name')

    def __init__(self, oid, database, klass=None):
        if isinstance(oid, str):  # a Python 2 pickle's oid
            oid = oid.encode('latin-1')
        self.oid = oid
        self.database = database
        self.class_name = _class_name(klass) if klass is not None else '?'

    def __eq__(self, other):
        return (isinstance(other, Ref) and other.oid == self.oid
                and other.database == self.database)

    def __hash__(self):
        return hash((self.oid, self.database))

    def __repr__(self):
        return '%s (oid %d, db %r)' % (self.class_name, u64(self.oid),
                                       self.database)

    def __reduce__(self):  # compared by pickle (see _same)
        return Ref, (self.oid, self.database)


def _class_name(klass):
    if isinstance(klass, tuple):  # (module, name) of an old record
        return '%s.%s' % klass
    return '%s.%s' % (getattr(klass, '__module__', '?'),
                      getattr(klass, '__name__', repr(klass)))


def _persistent_load(database):
    """How references of a record of ``database`` are read (see
    :mod:`ZODB.serialize` for their forms)."""
    def load(reference):
        if isinstance(reference, tuple):
            return Ref(reference[0], database, reference[1])
        if isinstance(reference, (bytes, str)):
            return Ref(reference, database)
        if len(reference) == 1:  # [oid]: a weak reference
            return Ref(reference[0], database)
        kind, args = reference
        if kind in ('m', 'n'):  # another database's object
            return Ref(args[1], args[0], *args[2:])
        return Ref(args[0], args[1] if len(args) > 1 else database)  # 'w'
    return load


class Record:
    """One stored revision of an object: its class name and state."""

    def __init__(self, data, database, find_global):
        unpickler = ZODB.serialize.PersistentUnpickler(
            find_global, _persistent_load(database), io.BytesIO(data))
        klass = unpickler.load()
        if isinstance(klass, tuple):
            klass = klass[0]
        self.class_name = _class_name(klass)
        try:
            self.state = unpickler.load()
            self.problem = None
        except Exception as e:  # an application class gone, or broken
            self.state = None
            self.problem = '%s: %s' % (type(e).__name__, e)
        self.references = set(ZODB.serialize.referencesf(data))


# ---------------------------------------------------------- differences

class _Repr(reprlib.Repr):
    def __init__(self):
        super().__init__()
        self.maxstring = self.maxother = 80
        self.maxlist = self.maxtuple = self.maxdict = self.maxset = 6
        self.maxlevel = 3


short = _Repr().repr


def _same(old, new):
    """Whether two values of states are the same (by their pickles, so
    that objects without ``__eq__`` compare by content)."""
    try:
        return pickle.dumps(old, 3) == pickle.dumps(new, 3)
    except Exception:
        try:
            return bool(old == new)
        except Exception:
            return False


def _attributes(state):
    """The attributes of a state, if it is a dict (or a dict and slots)."""
    if isinstance(state, dict):
        return state
    if (isinstance(state, tuple) and len(state) == 2
            and all(part is None or isinstance(part, dict)
                    for part in state)):
        res = dict(state[0] or {})
        res.update(state[1] or {})
        return res
    return None


def _name(prefix, key):
    if not prefix and isinstance(key, str):
        return key
    return '%s[%s]' % (prefix, short(key))


def _dict_differences(old, new, prefix, depth):
    for key in sorted(set(old).union(new), key=repr):
        name = _name(prefix, key)
        if key not in new:
            yield '%s: removed (was %s)' % (name, short(old[key]))
        elif key not in old:
            yield '%s: added %s' % (name, short(new[key]))
        elif (isinstance(old[key], dict) and isinstance(new[key], dict)
              and depth < MAX_DEPTH):
            yield from _dict_differences(old[key], new[key], name, depth + 1)
        elif not _same(old[key], new[key]):
            yield '%s: %s -> %s' % (name, short(old[key]), short(new[key]))


def differences(old, new):
    """The differences between two :class:`Record` of one object, as
    lines (at most :data:`MAX_DIFFERENCES`, and a line saying how many
    more)."""
    if old.problem or new.problem:
        lines = ['state not readable: %s' % (new.problem or old.problem,)]
    elif old.class_name != new.class_name:
        lines = ['class: %s -> %s' % (old.class_name, new.class_name)]
    else:
        before, after = _attributes(old.state), _attributes(new.state)
        if before is not None and after is not None:
            lines = list(_dict_differences(before, after, '', 1))
        elif _same(old.state, new.state):
            lines = []
        else:
            lines = ['state: %s -> %s' % (short(old.state), short(new.state))]
    if len(lines) > MAX_DIFFERENCES:
        more = len(lines) - MAX_DIFFERENCES
        lines = lines[:MAX_DIFFERENCES] + ['%d more differences' % more]
    return [cut(line) for line in lines]


class Change:
    """An object a sandbox run added, changed, or no longer refers to.

    ``oid`` (an integer), ``database`` (its name), ``class_name`` (dotted)
    and ``differences`` (lines; for changed objects).
    """

    def __init__(self, oid, database, class_name, differences=()):
        self.oid = u64(oid)
        self.database = database
        self.class_name = class_name
        self.differences = list(differences)

    def __repr__(self):
        return '<Change %s (oid %d, db %r)>' % (
            self.class_name, self.oid, self.database)

    def as_dict(self):
        return {'oid': self.oid, 'database': self.database,
                'class': self.class_name, 'differences': self.differences}


def changes(demo, base, database, find_global):
    """``(added, changed, removed)`` :class:`Change` lists: what the commits
    to the DemoStorage ``demo`` wrote over its :class:`Pinned` ``base``.

    *Removed* objects are those the old states of the changed objects
    referred to and no state written refers to any more: unreachable now,
    unless an object not written refers to them too.
    """
    written = {}  # oid -> the last data stored
    for transaction in demo.changes.iterator():
        for record in transaction:
            written[record.oid] = record.data
    added, changed = [], []
    dropped, kept = set(), set()
    for oid, data in sorted(written.items()):
        new = Record(data, database, find_global)
        kept.update(new.references)
        old_data = _base_data(base, oid)
        if old_data is None:
            added.append(Change(oid, database, new.class_name))
            continue
        old = Record(old_data, database, find_global)
        dropped.update(old.references)
        changed.append(Change(oid, database, new.class_name,
                              differences(old, new)))
    removed = []
    for oid in sorted(dropped - kept - set(written)):
        old_data = _base_data(base, oid)
        if old_data is not None:
            removed.append(Change(oid, database, Record(
                old_data, database, find_global).class_name))
    return added, changed, removed


def _base_data(base, oid):
    """The data of ``oid`` in the pinned ``base``, or None (a new oid)."""
    try:
        return base.load(oid)[0]
    except ZODB.POSException.POSKeyError:
        return None


# --------------------------------------------------------------- report

@zope.interface.implementer(interfaces.ISandboxReport)
class Report:
    """See :class:`zc.async.interfaces.ISandboxReport`.

    ``note`` (optional) ends the text's last line, such as what became of
    the job.
    """

    result = None
    error = None
    traceback = None
    seconds = None

    def __init__(self, kind, job, job_id, at, at_source, note=None):
        self.kind = kind
        self.job = job
        self.job_id = job_id
        self.at = at
        self.at_source = at_source
        self.note = note
        self.result_repr = None
        self.added, self.changed, self.removed = [], [], []
        self.missing = []

    @property
    def failed(self):
        return self.error is not None

    def outcome_text(self):
        if self.failed:
            return 'failed after %.3f seconds:\n%s' % (
                self.seconds, self.traceback.rstrip('\n'))
        return 'succeeded after %.3f seconds; result: %s' % (
            self.seconds, self.result_repr)

    def text(self):
        """The report for humans (what ``zc-async replay`` and ``dry-run``
        print)."""
        lines = ['%s of %s' % (self.kind, self.job),
                 'against the data at %s (%s)' % (
                     snapshot.tid_text(self.at), self.at_source)]
        lines.extend(self.outcome_text().splitlines())
        if self.missing:
            lines.append(
                'WARNING: revisions it read are gone from the storage (packed '
                'away; in a history-free storage, changed since): oids %s'
                % ', '.join(
                    str(u64(oid)) for oid in self.missing[:10]))
        for title, found in (('added', self.added),
                             ('changed', self.changed),
                             ('no longer referenced (removed)', self.removed)):
            lines.append('%s: %s' % (title, _count(found)))
            for change in found[:MAX_OBJECTS]:
                lines.append('  %s (oid %d, db %r)' % (
                    change.class_name, change.oid, change.database))
                lines.extend('    ' + line for line in change.differences)
            if len(found) > MAX_OBJECTS:
                lines.append('  ... and %d more' % (len(found) - MAX_OBJECTS))
        lines.append('nothing was written to the database'
                     + ('' if self.note is None else '; ' + self.note))
        return '\n'.join(lines)

    __str__ = text

    def as_dict(self):
        """The report as JSON-ready data (``--json``, the dashboard)."""
        return {
            'kind': self.kind, 'job': self.job,
            'id': None if self.job_id is None else list(self.job_id),
            'at': '0x%016x' % u64(self.at), 'at time': snapshot.tid_time(
                self.at), 'at source': self.at_source,
            'failed': self.failed, 'seconds': self.seconds,
            'result': self.result_repr, 'traceback': self.traceback,
            'missing': [u64(oid) for oid in self.missing],
            'added': [change.as_dict() for change in self.added[:MAX_OBJECTS]],
            'changed': [change.as_dict()
                        for change in self.changed[:MAX_OBJECTS]],
            'removed': [change.as_dict()
                        for change in self.removed[:MAX_OBJECTS]],
            'counts': {'added': len(self.added), 'changed': len(self.changed),
                       'removed': len(self.removed)},
            'text': self.text(),
        }


def _count(found):
    if not found:
        return 'nothing'
    return '%d object%s' % (len(found), '' if len(found) == 1 else 's')
