"""Instant dispatch on RelStorage with PostgreSQL: NOTIFY and LISTEN.

A ZEO server pushes invalidations to its clients, and a dispatcher wakes
on those of its queues' length counters (see :mod:`zc.async.dispatcher`).
RelStorage pushes nothing: its clients only learn of other commits when
they poll.  On PostgreSQL, this module fills the gap with the server's own
notifications.

Sending.  A transaction that makes work due in a queue (``Queue.put``,
``putBack`` and the requeue of a dead dispatcher's jobs call
:func:`work_due`) joins a small data manager, :class:`_Notice`.  When the
transaction commits, the notice's ``tpc_vote`` runs ``NOTIFY zc_async,
'<oid>'`` (the oid of the queue's length counter) on RelStorage's *store*
connection, inside the very database transaction that stores the put.
PostgreSQL delivers a notification when, and only when, that transaction
commits: never for a put whose commit fails or that is aborted, and never
before the put is visible to other connections.  Notifications of one
transaction with the same payload are folded into one.

Listening.  A dispatcher that watches a queue of such a database (its
poll calls :meth:`Listener.listen`) gets one :class:`Listener` per storage
and process: a daemon thread with a PostgreSQL connection of its own that
runs ``LISTEN zc_async`` and waits on the connection's socket.  Each
notification is handed to the dispatcher as ZEO's invalidations are,
with the length counter's oid: the dispatcher polls at once.  When the
connection breaks, the thread reconnects (after 1, 2, 4 ... up to 30
seconds) and, once listening again, wakes its dispatchers, since
notifications sent meanwhile were lost.  The ``poll_interval`` heartbeat
stays the safety net for all of that.

The notice reaches the store connection through RelStorage's commit
state (``storage._tpc_phase.shared_state.store_connection``), which
RelStorage 3 and 4 have; the listener opens its connection through the
storage's adapter (``connmanager.open()``, a documented RelStorage
interface).  When either is missing (another RelStorage, or a driver
without notifications), a warning is logged once and the dispatchers
poll as before; nothing else changes.  MySQL, Oracle and SQLite
RelStorage keep polling.

Set ``enabled`` to False, or the environment variable
``ZC_ASYNC_PG_NOTIFY`` to ``off`` before zc.async is imported, to send
and listen to nothing.
"""
import os
import select
import threading

import zope.interface
import transaction.interfaces
import ZODB.utils

from . import _watchers
from . import logs

#: The PostgreSQL notification channel.
CHANNEL = 'zc_async'

#: Whether puts notify and dispatchers listen (see the module docstring).
enabled = os.environ.get('ZC_ASYNC_PG_NOTIFY', 'on').strip().lower() not in (
    '0', 'off', 'false', 'no')

# How long a listener waits for a notification before it checks that its
# connection still works; its reconnection delays.
KEEPALIVE = 30
FIRST_BACKOFF = 1
MAX_BACKOFF = 30

_kinds = {}  # {adapter class: whether it is RelStorage's PostgreSQL one}
_warned = set()  # what was already logged once


def postgresql(storage):
    """Whether ``storage`` (a connection's or database's storage) is a
    RelStorage on PostgreSQL."""
    adapter = getattr(storage, '_adapter', None)
    if adapter is None:
        return False
    cls = type(adapter)
    kind = _kinds.get(cls)
    if kind is None:
        kind = _kinds[cls] = any(
            base.__module__.startswith('relstorage.adapters.postgresql')
            for base in cls.__mro__)
    return kind


def _warn_once(what, message, *args):
    if what not in _warned:
        _warned.add(what)
        logs.log.warning(message, *args)


# ------------------------------------------------------------- sending

_NOTICES = object()  # key of {id(connection): _Notice} in a transaction


def work_due(queue):
    """Have the commit of the current transaction of ``queue``'s
    connection notify listeners that ``queue`` has work (when the queue is
    stored on RelStorage with PostgreSQL)."""
    jar = queue._p_jar
    length = getattr(queue, '_length', None)
    if (not enabled or jar is None or length is None
            or length._p_oid is None or not postgresql(jar._storage)):
        return
    txn = jar.transaction_manager.get()
    try:
        notices = txn.data(_NOTICES)
    except KeyError:
        notices = {}
        txn.set_data(_NOTICES, notices)
    notice = notices.get(id(jar))
    if notice is None:
        notice = notices[id(jar)] = _Notice(jar)
        txn.join(notice)
    notice.oids.add(length._p_oid)


def _store_cursor(storage):
    """The cursor of RelStorage's store connection in its commit under
    way, or None."""
    phase = getattr(storage, '_tpc_phase', None)
    shared = getattr(phase, 'shared_state', None)
    connection = getattr(shared, 'store_connection', None)
    return getattr(connection, 'cursor', None)


@zope.interface.implementer(transaction.interfaces.ISavepointDataManager)
class _Notice:
    """Sends ``NOTIFY`` in the database transaction of a commit."""

    def __init__(self, jar):
        self.jar = jar
        self.transaction_manager = jar.transaction_manager
        self.oids = set()

    def sortKey(self):
        # Right after the connection: its storage has voted (taken its
        # locks, resolved its conflicts) when this notice votes.
        return '%s~zc.async.notify' % (self.jar.sortKey(),)

    def tpc_vote(self, txn):
        cursor = _store_cursor(self.jar._storage)
        if cursor is None:
            _warn_once('store', 'cannot send PostgreSQL notifications through'
                       ' this RelStorage (%s): dispatchers find new jobs'
                       ' when they poll', type(self.jar._storage))
            return
        for oid in sorted(self.oids):
            # Both are ours: a fixed name and an integer.
            cursor.execute("NOTIFY %s, '%d'" % (CHANNEL, ZODB.utils.u64(oid)))

    def abort(self, txn):
        pass

    def tpc_begin(self, txn):
        pass

    def commit(self, txn):
        pass

    def tpc_finish(self, txn):
        pass

    def tpc_abort(self, txn):
        pass  # the database transaction is rolled back, NOTIFY with it

    def savepoint(self):
        # A put rolled back to a savepoint leaves a notification that
        # wakes a dispatcher for nothing: a poll, no harm.
        return _NoRollback()


class _NoRollback:

    def rollback(self):
        pass


# ----------------------------------------------------------- listening

class Listener(_watchers.Watcher):
    """A thread that LISTENs for one storage's notifications and tells its
    callbacks (``listen(storage, callback)``), as ``callback(storage,
    oids, None)``; ``oids`` is None when notifications may have been
    missed (the thread just connected).
    """

    def __init__(self, storage):
        super().__init__(storage)
        self.stopped = False
        self.listening = threading.Event()  # for tests and diagnosis
        self._stop_read, self._stop_write = os.pipe()  # wakes the thread
        self._pipe_lock = threading.Lock()
        self._pipe_open = True
        self.thread = threading.Thread(
            target=self._run, daemon=True,
            name='zc.async LISTEN %s' % (CHANNEL,))

    def start(self):
        self.thread.start()

    def stop(self):
        with self._pipe_lock:
            self.stopped = True
            if self._pipe_open:
                os.write(self._stop_write, b'x')

    def _close_pipe(self):
        with self._pipe_lock:
            self._pipe_open = False
            os.close(self._stop_read)
            os.close(self._stop_write)

    def _run(self):
        backoff = FIRST_BACKOFF
        try:
            while not self.stopped:
                connection = None
                try:
                    connection = self._connect()
                    if connection is None:
                        return  # unsupported: logged; polling it is
                    backoff = FIRST_BACKOFF
                    self._receive(connection)
                except Exception:
                    self.listening.clear()
                    logs.log.warning(
                        'lost the PostgreSQL notification connection;'
                        ' reconnecting in %d s (polls go on meanwhile)',
                        backoff, exc_info=True)
                    if self._stopped_within(backoff):
                        return
                    backoff = min(MAX_BACKOFF, 2 * backoff)
                finally:
                    if connection is not None:
                        _close(connection)
        finally:
            self.listening.clear()
            self._close_pipe()

    def _connect(self):
        """A connection LISTENing to the channel, or None if the driver
        cannot deliver notifications."""
        connection, cursor = self.source._adapter.connmanager.open(
            application_name='zc.async listener')
        if not all(hasattr(connection, name)
                   for name in ('poll', 'notifies', 'fileno', 'autocommit')):
            _close(connection)
            _warn_once('driver', 'the PostgreSQL driver of this RelStorage'
                       ' (%s) does not deliver notifications: dispatchers'
                       ' find new jobs when they poll', type(connection))
            return None
        connection.rollback()
        connection.autocommit = True
        cursor.execute('LISTEN %s' % (CHANNEL,))
        self.cursor = cursor
        self.listening.set()
        logs.tracelog.debug('listening to PostgreSQL channel %s', CHANNEL)
        self._tell(None, None)  # what was committed before: look once
        return connection

    def _receive(self, connection):
        """Tell the callbacks of each batch of notifications, until
        stopped or the connection fails (an exception)."""
        while not self.stopped:
            ready, _, _ = select.select(
                [connection, self._stop_read], [], [], KEEPALIVE)
            if self._stop_read in ready:
                return
            if not ready:
                self.cursor.execute('SELECT 1')  # is the server still there?
            connection.poll()
            oids = set()
            while connection.notifies:
                notification = connection.notifies.pop(0)
                try:
                    oids.add(ZODB.utils.p64(int(notification.payload)))
                except ValueError:
                    pass  # not one of ours
            if oids:
                self._tell(oids, None)

    def _stopped_within(self, seconds):
        """Wait ``seconds`` or until stopped; whether stopped."""
        ready, _, _ = select.select([self._stop_read], [], [], seconds)
        return bool(ready) or self.stopped


def _close(connection):
    try:
        connection.close()
    except Exception:
        pass  # already broken
