"""Which committed state a connection sees, and storages pinned at one.

Every ZODB connection reads one committed state of its database, its
*snapshot*, from the start of its transaction to the end; a snapshot is
named by the id of the last transaction it includes (a *tid*: 8 bytes that
are also a UTC time).  :func:`connection_tid` tells the snapshot of a
connection; a job records the one its callable ran in (``active_snapshot``,
see :class:`zc.async.interfaces.IJob`), so that :mod:`zc.async.ops.sandbox` can
show a failed job the data it saw.

A :class:`Pinned` storage is a read-only view of a storage as it was at one
tid: every object is served as its revision current at that tid, through
the storage's ``loadBefore``, which FileStorage, ZEO's ClientStorage and
history-preserving RelStorage all serve from history.  (A history-free
RelStorage keeps only current revisions, so it can be pinned only at its
latest transaction.)  :func:`packed_after` and :func:`oldest_complete` tell
whether a pack removed revisions a snapshot needs, and from which
transaction on the history is whole again.

:func:`tid_text` and :func:`parse_tid` write and read tids for humans.
"""
import datetime
import re

import zope.interface
import ZODB.Connection
import ZODB.interfaces
import ZODB.mvccadapter
import ZODB.POSException
import ZODB.TimeStamp
from ZODB.utils import p64, u64

#: The status of a transaction record that a pack went over (its revisions
#: that were not current at the pack time are gone).
PACKED = 'p'


# ------------------------------------------------------- a connection's

def connection_tid(conn):
    """The tid of the snapshot ``conn`` reads, or None when it has none.

    ZODB has no public API for it; this is cheap (no server round trip), as
    jobs ask on every call.
    """
    storage = conn._storage
    if isinstance(storage, ZODB.Connection.TmpStore):
        storage = storage._storage  # after a savepoint (zc.async.batches)
    if isinstance(storage, ZODB.mvccadapter.MVCCAdapterInstance):
        # ZODB's MVCC adapter (FileStorage, ZEO, ...) loads "before _start",
        # which is the last transaction it polled, plus one.
        start = storage._start
        return None if start is None else p64(u64(start) - 1)
    if isinstance(storage, ZODB.mvccadapter.HistoricalStorageAdapter):
        return p64(u64(storage._before) - 1)
    # An IMVCCStorage instance (RelStorage): its last poll is its snapshot.
    return storage.lastTransaction()


# ------------------------------------------------------- pinned storages

def storage_instance(db):
    """``(storage, release)``: a storage to read ``db``'s data through, and
    how to give it back (or None).

    A RelStorage database hands each reader an instance of its own, with
    its own database session; other storages are shared, as their loads
    are thread-safe.
    """
    storage = db.storage
    if ZODB.interfaces.IMVCCStorage.providedBy(storage):
        instance = storage.new_instance()
        return instance, instance.release
    return storage, None


def keeps_history(storage):
    """Whether ``storage`` keeps past revisions (not a history-free
    RelStorage)."""
    return getattr(storage, 'keep_history', True) is not False


class Pinned:
    """A read-only view of ``storage`` as it was at transaction ``tid``.

    Meant as the base of a :class:`ZODB.DemoStorage.DemoStorage`, whose
    changes it never sees (a base must not change): every load, whatever
    the tid asked for, is served as of ``tid``.  A revision that was there
    at ``tid`` but is gone now (packed away) is answered as missing, and its
    oid noted in :attr:`missing`.  ``release`` (optional) is called on
    :meth:`close`; the storage itself stays open.
    """

    def __init__(self, storage, tid, release=None):
        self._storage = storage
        self.tid = tid
        self._before = p64(u64(tid) + 1)
        self._release = release
        self.missing = []
        if ZODB.interfaces.IBlobStorage.providedBy(storage):
            zope.interface.alsoProvides(self, ZODB.interfaces.IBlobStorage)

    def getName(self):
        return '%s at %s' % (self._storage.getName(), tid_text(self.tid))

    sortKey = getName

    def getSize(self):
        return self._storage.getSize()

    def __len__(self):
        return len(self._storage)

    def isReadOnly(self):
        return True

    def supportsUndo(self):
        return False

    def lastTransaction(self):
        return self.tid

    def loadBefore(self, oid, tid):
        res = self._storage.loadBefore(oid, self._before)
        if res is None:
            self.missing.append(oid)
            return None
        data, serial, _ = res
        return data, serial, None  # current, as far as this view goes

    def load(self, oid, version=''):
        res = self.loadBefore(oid, self._before)
        if res is None:
            raise ZODB.POSException.POSKeyError(oid)
        return res[:2]

    def loadSerial(self, oid, serial):
        return self._storage.loadSerial(oid, serial)

    def loadBlob(self, oid, serial):
        return self._storage.loadBlob(oid, serial)

    def openCommittedBlobFile(self, oid, serial, blob=None):
        return self._storage.openCommittedBlobFile(oid, serial, blob)

    def new_oid(self, *args):
        raise ZODB.POSException.ReadOnlyError()

    store = tpc_begin = new_oid

    def cleanup(self):
        pass

    def close(self):
        release, self._release = self._release, None
        if release is not None:
            release()


# ------------------------------------------------------------------ packs

def _statuses(storage, after):
    """The statuses of the transaction records of ``storage`` after tid
    ``after``, with their tids (nothing for a storage that cannot list
    them)."""
    iterate = getattr(storage, 'iterator', None)
    if iterate is None:
        return
    records = iterate(p64(u64(after) + 1))
    try:
        # (``yield from`` RelStorage's iterator crashes CPython 3.11.)
        for record in records:
            yield record.status, record.tid
    finally:
        close = getattr(records, 'close', None)
        if close is not None:
            close()


def packed_after(storage, tid):
    """Whether ``storage`` was packed to a time after ``tid``, so that
    revisions current at ``tid`` may be gone.

    A pack marks the transaction records before its pack time as packed;
    if the first one after ``tid`` is, the pack time is later.
    """
    for status, _ in _statuses(storage, tid):
        return status == PACKED
    return False


def oldest_complete(storage, tid):
    """The oldest tid after ``tid`` at which ``storage`` still holds every
    revision: the last transaction a pack went over (as the snapshot of the
    pack time it is whole).  None if no pack went past ``tid``."""
    res = None
    for status, record_tid in _statuses(storage, tid):
        if status != PACKED:
            break
        res = record_tid
    return res


# ------------------------------------------------------------- tid text

_HEX = re.compile(r'^(0x)?[0-9a-f]{1,16}$', re.IGNORECASE)


def tid_time(tid):
    """The UTC datetime of ``tid``."""
    return datetime.datetime.fromtimestamp(
        ZODB.TimeStamp.TimeStamp(tid).timeTime(), datetime.timezone.utc)


def tid_text(tid):
    """``tid`` for humans: ``0x`` and 16 hex digits, and its UTC time."""
    return '0x%016x (%s)' % (
        u64(tid), tid_time(tid).strftime('%Y-%m-%d %H:%M:%S.%f UTC'))


def parse_tid(text):
    """The tid that ``text`` names: hexadecimal (``0x03e9...``, as
    :func:`tid_text` writes it), or an ISO 8601 time (naive means UTC),
    which names the last transaction committed at or before it."""
    text = text.strip()
    if _HEX.match(text):
        return p64(int(text, 16))
    try:
        when = datetime.datetime.fromisoformat(text.replace('Z', '+00:00'))
    except ValueError:
        raise ValueError(
            'not a transaction id: %r (give 0x and up to 16 hex digits, or '
            'an ISO time such as 2026-01-31T12:00:00Z)' % (text,)) from None
    if when.tzinfo is not None:
        when = when.astimezone(datetime.timezone.utc)
    seconds = when.second + when.microsecond / 1e6
    stamp = ZODB.TimeStamp.TimeStamp(
        when.year, when.month, when.day, when.hour, when.minute, seconds)
    return stamp.raw()
