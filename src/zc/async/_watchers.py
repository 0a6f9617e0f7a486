"""A registry of callbacks per source, shared by the ways a dispatcher
learns of commits (see :mod:`zc.async.dispatcher` and
:mod:`zc.async.pgnotify`).

A subclass watches one source per instance: :meth:`Watcher.listen` makes
the instance (and calls its ``start``) when a source gets its first
callback, :meth:`Watcher.unlisten` calls ``stop`` and forgets it after the
last one.  Each subclass has a registry of its own.
"""
import threading

from . import logs


class Watcher:

    callbacks = ()

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        cls._lock = threading.Lock()
        cls._watchers = {}  # {source: instance}

    def __init__(self, source):
        self.source = source

    def start(self):
        """Begin watching (the source's first callback arrived)."""

    def stop(self):
        """End watching (its last callback left)."""

    @classmethod
    def listen(cls, source, callback):
        """Call ``callback`` for what ``source`` tells."""
        with cls._lock:
            watcher = cls._watchers.get(source)
            if watcher is None:
                watcher = cls._watchers[source] = cls(source)
                watcher.start()
            watcher.callbacks += (callback,)

    @classmethod
    def unlisten(cls, source, callback):
        """Stop calling ``callback``; stop watching after the last one."""
        with cls._lock:
            watcher = cls._watchers.get(source)
            if watcher is None or callback not in watcher.callbacks:
                return
            watcher.callbacks = tuple(
                other for other in watcher.callbacks if other != callback)
            if not watcher.callbacks:
                del cls._watchers[source]
                watcher.stop()

    def _tell(self, *args):
        """Call each callback as ``callback(source, *args)``."""
        for callback in self.callbacks:
            try:
                callback(self.source, *args)
            except Exception:
                # Never let a callback break the commit (or thread) that
                # tells it.
                logs.log.exception('error in a %s callback',
                                   type(self).__name__)

    @classmethod
    def get(cls, source):
        """The watcher of ``source`` in this process, or None."""
        return cls._watchers.get(source)
