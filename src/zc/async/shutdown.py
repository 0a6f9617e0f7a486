"""Warm shutdown: a dispatcher stops claiming, lets its running jobs finish,
then deactivates.

A stop (:meth:`zc.async.dispatcher.Dispatcher.stop`) claims no more jobs
from the moment it starts; the dispatcher goes on polling, for its pings
only.  The jobs its threads run, with their callbacks, get up to a timeout
to finish and commit; then the dispatcher deactivates its records, which
hands back whatever still runs (its ``handleInterrupt`` is queued, and its
retry policy decides, as when a dispatcher dies: 1.5's C5), each logged as
one INFO line.  The late outcome of a job handed back is dropped quietly.
A second stop with a shorter timeout shortens the wait; ``stop(0)`` stops
at once.

What stops a dispatcher so:

* stopping its reactor (a "before shutdown" trigger; the reactor waits),
  with the dispatcher's ``shutdown_timeout`` (30 seconds by default);
* SIGTERM or SIGINT, in ``zc-async worker`` (``--shutdown-timeout``) and in
  a process whose dispatcher ``ThreadedDispatcherInstaller`` started in the
  main thread; a second signal stops at once;
* :func:`zc.async.dispatcher.stop` and :func:`zc.async.configure.stop`;
* the end of the interpreter: a dispatcher still running on a reactor
  thread of its own gets :data:`EXIT_TIMEOUT` seconds.
"""
import atexit
import threading
import time

import twisted.internet.defer
import twisted.internet.error
import twisted.internet.threads

from . import _registry
from . import logs

#: Seconds that the end of the interpreter gives a dispatcher's jobs.
EXIT_TIMEOUT = 5

#: Seconds a reactor thread gets beyond its stop's timeout to end (to
#: deactivate, commit and shut its reactor down).
MARGIN = 5

#: Seconds worker threads get to end once their dispatcher has stopped.
THREADS_TIMEOUT = 1


class WarmStop:
    """A stop of a dispatcher under way, in its reactor thread."""

    recheck = 0.05  # seconds between looks at threads finishing up

    def __init__(self, dispatcher):
        self.dispatcher = dispatcher
        self.waiters = []  # Deferreds fired when the stop is done
        self.finished = False
        self._timers = []
        self._rechecking = None

    @property
    def reactor(self):
        return self.dispatcher.reactor

    def start(self, timeout):
        """Stop claiming; wait at most ``timeout`` seconds for the jobs."""
        d = self.dispatcher
        d.stopping = True
        d.listeners.append(self._notified)
        if self._busy() and timeout > 0:
            running = d.getActiveJobIds()
            logs.log.info(
                'stopping dispatcher %s: claiming no more jobs, and waiting '
                'up to %s seconds for %d running job(s): %s', d.UUID,
                timeout, len(running), self._names(running))
        self.wait(timeout)

    def wait(self, timeout):
        """Wait at most ``timeout`` more seconds (the shortest wait wins)."""
        if self.finished:
            return
        if not self._busy():
            self._finish()
        elif timeout <= 0:
            logs.log.info('stopping dispatcher %s at once',
                          self.dispatcher.UUID)
            self._finish()
        else:
            self._timers.append(
                self.reactor.callLater(timeout, self._timedOut, timeout))

    def _busy(self):
        d = self.dispatcher
        return d._polling or any(pool.working for pool in d._livePools())

    def _names(self, jobids):
        return ', '.join(self.dispatcher.watchdog._name(jobid)
                         for jobid in jobids) or 'none started yet'

    def _notified(self, event, info):
        if event in ('job finished', 'poll'):
            self._check()

    def _check(self):
        if self.finished:
            return
        if not self._busy():
            self._finish()
        elif (not self.dispatcher.getActiveJobIds()
              and self._rechecking is None):
            # A thread between its report and its next item: look again.
            self._rechecking = self.reactor.callLater(
                self.recheck, self._recheck)

    def _recheck(self):
        self._rechecking = None
        self._check()

    def _timedOut(self, timeout):
        if not self.finished:
            logs.log.info(
                'stopping dispatcher %s: %s seconds have passed; handing back '
                'the jobs still running', self.dispatcher.UUID, timeout)
            self._finish()

    def _finish(self):
        self.finished = True
        for call in self._timers + [self._rechecking]:
            if call is not None and call.active():
                call.cancel()
        d = self.dispatcher
        if self._notified in d.listeners:
            d.listeners.remove(self._notified)
        d.watchdog.handed_back.update(d.getActiveJobIds())
        try:
            if d.activated:
                d.deactivate()
        finally:
            d.stopping = False
            d._warm_stop = None
            waiters, self.waiters = self.waiters, []
            for waiter in waiters:
                waiter.callback(None)


def stop_in_reactor(dispatcher, timeout=None):
    """Stop ``dispatcher`` warmly (in its reactor thread); a Deferred that
    fires once it is deactivated."""
    waiter = twisted.internet.defer.Deferred()
    if not dispatcher.activated:
        waiter.callback(None)
        return waiter
    if timeout is None:
        timeout = dispatcher.shutdown_timeout
    warm = dispatcher._warm_stop
    if warm is None:
        warm = dispatcher._warm_stop = WarmStop(dispatcher)
        warm.waiters.append(waiter)
        warm.start(timeout)
    else:
        warm.waiters.append(waiter)
        warm.wait(timeout)
    return waiter


def stop(dispatcher, timeout=None):
    """See :meth:`zc.async.dispatcher.Dispatcher.stop`."""
    if dispatcher._reactor_thread is threading.current_thread():
        return stop_in_reactor(dispatcher, timeout)
    if not dispatcher.activated:
        return None
    thread = dispatcher._reactor_thread
    if (thread is None or not thread.is_alive()
            or not getattr(dispatcher.reactor, 'running', True)):
        dispatcher.deactivate()  # no reactor: nothing runs, nothing to wait
        return None
    twisted.internet.threads.blockingCallFromThread(
        dispatcher.reactor, stop_in_reactor, dispatcher, timeout)
    return None


def note_reactor_thread(dispatcher):
    """Remember the thread that runs ``dispatcher``'s reactor (called in
    it when the reactor runs)."""
    dispatcher._reactor_thread = threading.current_thread()


def stop_reactor_thread(dispatcher, timeout=None):
    """Stop ``dispatcher`` warmly, then its reactor, which runs in a thread
    of its own (``dispatcher.thread``); wait for that thread (the timeout,
    plus :data:`MARGIN`).  Returns whether the thread ended."""
    thread = dispatcher.thread
    if thread is None or not thread.is_alive():
        return True
    dispatcher.reactor.callFromThread(_stop_then_end, dispatcher, timeout)
    seconds = dispatcher.shutdown_timeout if timeout is None else timeout
    thread.join(seconds + MARGIN)
    return not thread.is_alive()


def _stop_then_end(dispatcher, timeout):
    reactor = dispatcher.reactor
    stop_in_reactor(dispatcher, timeout).addBoth(
        lambda ignored: end_reactor(reactor))


def end_reactor(reactor):
    """Stop ``reactor`` unless it is stopping already."""
    try:
        reactor.stop()
    except twisted.internet.error.ReactorNotRunning:
        pass


def stop_and_wait(dispatcher, timeout=None):
    """Stop ``dispatcher`` warmly from outside its reactor thread; wait for
    it, for its reactor thread when it has one of its own (that reactor is
    stopped too), then for its worker threads until the same deadline (the
    threads of jobs handed back may go on: they are daemon threads).
    Returns the threads still alive."""
    seconds = dispatcher.shutdown_timeout if timeout is None else timeout
    deadline = time.monotonic() + seconds
    if dispatcher.thread is not None:
        stop_reactor_thread(dispatcher, timeout)
    else:
        stop(dispatcher, timeout)
    # Threads whose jobs finished end at once; those of jobs handed back
    # go on, and are not waited for beyond the deadline.
    deadline = max(deadline, time.monotonic() + THREADS_TIMEOUT)
    threads = [dispatcher.thread] if dispatcher.thread is not None else []
    for pool in dispatcher._pools():
        threads.extend(pool.threads)
    for thread in threads:
        thread.join(max(0, deadline - time.monotonic()))
    return [thread for thread in threads if thread.is_alive()]


# ------------------------------------------------------ interpreter exit

_exit_registered = []


def stop_at_exit():
    """Stop, at the end of the interpreter, the dispatchers still running
    on reactor threads of their own (register once)."""
    if not _exit_registered:
        _exit_registered.append(True)
        atexit.register(_stop_all)


def _stop_all():
    for dispatcher in list(_registry.dispatchers.values()):
        thread = dispatcher.thread
        if dispatcher.activated and thread is not None and thread.is_alive():
            try:
                stop_reactor_thread(dispatcher, EXIT_TIMEOUT)
            except Exception:  # the process is ending: tell, go on
                logs.log.exception('could not stop dispatcher %s at exit',
                                   dispatcher.UUID)
