"""How a dispatcher polls at once when there is work, between beats.

Besides the ``poll_interval`` heartbeat, a dispatcher watches the ZODB
invalidations of every queue's ``_length`` counter (which changes with
each put, claim and removal), and of the root while it has no queues.
When another connection commits a change to one, the dispatcher polls at
once instead of at the next beat; the beat then follows ``poll_interval``
after that poll.  Commits of this process's workers that only claim do
not wake it.  A worker that finishes a job of an agent that was full,
without claiming the next one, also wakes a poll, so queued work flows
on; so do a job that a claim left to another dispatcher becoming
anybody's, and a schedule's next tick.  Wake-ups coalesce: never two
polls at once.  A reactor whose ``instant_dispatch`` attribute is false
(the virtual-time :class:`zc.async.testing.Reactor`) gets only the
heartbeat, as in 1.5.

:class:`DispatcherWakeUps` is a base class of
:class:`zc.async.dispatcher.Dispatcher`; :func:`hook` chooses what tells
of a storage's commits (ZODB's invalidations, through
:class:`_InvalidationHook`, or PostgreSQL's notifications, through
:mod:`zc.async.pgnotify`).
"""
import ZODB.mvccadapter

from . import _watchers
from . import claims
from . import clock
from . import pgnotify
from .workers import _handoff, claim_only_commit


class _InvalidationHook(_watchers.Watcher):
    """Tells listeners which oids were committed, for one MVCC adapter.

    It shadows the adapter's two invalidation entry points with instance
    attributes: ``invalidate(tid, oids)`` (commits of other processes, from
    ZEO) and ``_invalidate_finish(tid, oids, committing_instance)`` (commits
    of this process).  Listeners (``listen(adapter, listener)``) are
    called as ``listener(adapter, oids, committing_instance)`` in the
    committing thread, after the original.  The hook removes itself when
    its last listener leaves (``unlisten``).
    """

    def start(self):
        self.source.invalidate = self.invalidate
        self.source._invalidate_finish = self._invalidate_finish

    def stop(self):
        vars(self.source).pop('invalidate', None)
        vars(self.source).pop('_invalidate_finish', None)

    def invalidate(self, tid, oids):
        type(self.source).invalidate(self.source, tid, oids)
        self._tell(oids, None)

    def _invalidate_finish(self, tid, oids, committing_instance):
        type(self.source)._invalidate_finish(
            self.source, tid, oids, committing_instance)
        self._tell(oids, committing_instance)


def hook(adapter):
    """What tells of commits to a database's storage (its MVCC adapter or
    RelStorage): ZODB's invalidations, PostgreSQL's notifications (see
    :mod:`zc.async.pgnotify`), or None (the dispatcher only polls)."""
    if isinstance(adapter, ZODB.mvccadapter.MVCCAdapter):
        return _InvalidationHook
    if pgnotify.enabled and pgnotify.postgresql(adapter):
        return pgnotify.Listener
    return None


class DispatcherWakeUps:
    """The instant dispatch of :class:`zc.async.dispatcher.Dispatcher`,
    which polls (``threadedPoll``/``directPoll``) when woken."""

    @property
    def _instant(self):
        return getattr(self.reactor, 'instant_dispatch', True)

    def _watch(self, watched):
        """Listen to the invalidations of ``{adapter: oids}`` only."""
        if not self._instant:
            return
        old, self._watched = self._watched, {
            adapter: frozenset(oids) for adapter, oids in watched.items()}
        for adapter in set(old) - set(watched):
            hook(adapter).unlisten(adapter, self._invalidated)
        for adapter in set(watched) - set(old):
            hook(adapter).listen(adapter, self._invalidated)

    def _invalidated(self, adapter, oids, committing_instance):
        """In a committing thread (or a listener's): wake if a watched
        queue changed (``oids`` None: it may have)."""
        if oids is not None:
            self.watchdog.invalidated(oids)  # an abort request?
        if committing_instance in self._own_storages or claim_only_commit():
            return  # our own claims
        watched = self._watched.get(adapter)
        if (watched and (oids is None or not watched.isdisjoint(oids))
                and self.activated):
            if not self._wake_requested:
                self._wake_requested = True
                self.reactor.callFromThread(self._wake)

    def _wake(self, tick=False):
        """Poll now (coalesced with a running poll); the beat follows.

        ``tick``: for a schedule's tick, which fires even when every
        thread is busy.
        """
        self._wake_requested = False
        if not self.activated or self.stopping:
            return
        if self._polling:
            self._wake_pending = True
        elif self._busy() and not tick:
            # A poll would find no room to claim in: the next thread that
            # frees up without claiming a job itself wakes one instead.
            for pool in self._livePools():
                pool.saturated = True
        elif self._threaded:
            self.threadedPoll()
        else:
            self.directPoll()

    def _busy(self):
        """Whether every thread of every pool has a job (there is a pool)."""
        pools = self._livePools()
        return bool(pools) and all(pool.full for pool in pools)

    def _livePools(self):
        return [pool for pools in self.queues.values()
                for pool in pools.values()]

    def _wakeForRoom(self):
        """A full agent finished a job: poll soon for its queued work.

        Jobs whose reports the reactor runs in the same turn share one poll
        (a wake-up already on its way serves them too).
        """
        if self._instant and not self._wake_requested:
            self._wake_requested = True
            self.reactor.callFromThread(self._wakeAfterReports)

    @_handoff  # the tail of a worker's report (see zc.async.testing)
    def _wakeAfterReports(self):
        self._wake()

    @_handoff
    def _wakeAfterGrace(self, due):
        """Poll when a job that a claim left to another dispatcher, due at
        ``due``, becomes anybody's (see ``zc.async.claims``)."""
        if not self._instant or not self.activated:
            return
        call, at = self._grace_wake or (None, None)
        if call is not None and call.active():
            if at <= due:
                return  # an earlier one serves
            call.cancel()
        delay = max(0.0, (due + claims.GRACE - clock.now()).total_seconds())
        self._grace_wake = self.reactor.callLater(delay, self._wake), due

    def _wakeForTick(self, due):
        """Poll when the next tick of a schedule is due, at ``due``.

        Not for a tick already due: it could not fire (its schedule is
        logged), and the heartbeat retries it.
        """
        call, at = self._tick_wake or (None, None)
        if call is not None and call.active():
            if at <= due:
                return  # an earlier one serves: its poll looks again
            call.cancel()
        delay = (due - clock.now()).total_seconds()
        if delay > 0:
            self._tick_wake = (
                self.reactor.callLater(delay, self._wake, True), due)
