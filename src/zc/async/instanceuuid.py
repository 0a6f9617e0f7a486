"""Find or create this instance's UUID, on request.

Every process that runs a dispatcher needs a UUID of its own: it names the
dispatcher's records (``DispatcherAgents``) inside every queue, and it is
registered as the :class:`~zc.async.interfaces.IUUID` utility by
:func:`zc.async.configure.minimal`.  The UUID is kept in a small text file
whose first line is the UUID; the path comes from the ``ZC_ASYNC_UUID``
environment variable, else ``uuid.txt`` in the current working directory.

Importing this module does nothing.  :data:`UUID` keeps its zc.async 1.5
name but is read (or the file created) on first access, not at import.

A process may also hold an exclusive lock on its UUID file (an
:class:`InstanceLock`, taken with :func:`lock`; ``zc-async worker`` does),
which the operating system releases when the process ends, however it
ends.  A dispatcher records the lock's holder in the records it activates
(``IDispatcherAgents.instance_lock``); a later process of the same instance
that finds such a record still activated but can take the lock knows that
the record's process is gone (:func:`formerLife`), and cleans up after it
at once instead of waiting for the record's death interval.  Where the lock
cannot be taken (no ``fcntl`` module, a file system without locks) nothing
of this happens, as in 1.5.
"""
import os
import socket
import threading
import uuid

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

import zope.interface

from .interfaces import IUUID

key = 'ZC_ASYNC_UUID'

msg = """
------------------------------------------------------------------------
The value above (and this file) is created and used by the zc.async
package.  It is intended to uniquely identify this software instance when
it is used to start a zc.async dispatcher.  This allows multiple
dispatchers, each in its own software instance, to connect to a single
database to do work.

In order to decide where to look for this file (or to create it, if
necessary), the module looks in ``os.environ['ZC_ASYNC_UUID']`` for a file
name.

If you are using zdaemon (zdaemon.conf) you can set this in an
<environment> section of the configuration file; with supervisor, use the
``environment`` setting of the program section.

If the environment variable is not set, ``uuid.txt`` in the process's
current working directory is used.

Each process that runs a dispatcher needs its own file: use separate
working directories, or give each process its own ZC_ASYNC_UUID value.

If you delete this file, a new one (with a new UUID) is created the next
time the instance starts, and the instance gets a new identity.
------------------------------------------------------------------------
"""

_lock = threading.Lock()


@zope.interface.implementer(IUUID)
class InstanceUUID(uuid.UUID):
    """A :class:`uuid.UUID` that provides :class:`IUUID`.

    1.5 declared that every ``uuid.UUID`` implements ``IUUID``; this
    subclass gives the instance UUID that interface without touching the
    standard library class.  It equals, hashes, prints and pickles as the
    plain ``uuid.UUID`` of the same value.
    """

    def __repr__(self):
        return 'UUID(%r)' % str(self)

    def __reduce__(self):
        return (uuid.UUID, (str(self),))

    def __reduce_ex__(self, protocol):
        return self.__reduce__()


def getUUID(path=None):
    """Return the instance UUID stored at ``path``; create the file if absent.

    ``path`` defaults to ``os.environ['ZC_ASYNC_UUID']``, else
    ``<cwd>/uuid.txt``.  A new file holds a fresh :func:`uuid.uuid1` on its
    first line followed by :data:`msg`.  An existing file whose first line is
    not a UUID raises ``ValueError`` naming the file.
    """
    path = getPath(path)
    try:
        return _read(path)
    except FileNotFoundError:
        pass
    try:
        return _create(path)
    except FileExistsError:
        # Another process created it between our read and our create.
        return _read(path)


def getPath(path=None):
    """``path``, or by default ``os.environ['ZC_ASYNC_UUID']``, else
    ``<cwd>/uuid.txt``: the UUID file :func:`getUUID` reads."""
    if path is None:
        path = os.environ.get(key) or os.path.join(os.getcwd(), 'uuid.txt')
    return path


def _read(path):
    with open(path, encoding='ascii', errors='replace') as f:
        line = f.readline().strip()
    try:
        return InstanceUUID(line)
    except ValueError:
        raise ValueError(
            'instance UUID file %r should start with a UUID line, found %r;'
            ' repair it, or delete it to give this instance a new UUID'
            ' (see the %s environment variable)' % (path, line, key)
        ) from None


def _create(path):
    value = InstanceUUID(int=uuid.uuid1().int)
    # O_EXCL: never overwrite a file another process has just written.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    with os.fdopen(fd, 'w', encoding='ascii') as f:
        f.write(str(value) + msg)
    return value


# ------------------------------------------------------------ the lock

class InstanceLock:
    """An exclusive lock (``flock``) on an instance UUID file.

    Held from :meth:`acquire` until :meth:`release` or the end of the
    process.  ``path`` is the file's real path.
    """

    def __init__(self, path):
        self.path = os.path.realpath(path)
        self._file = None

    @property
    def held(self):
        """Whether this process holds the lock."""
        return self._file is not None

    def acquire(self):
        """Take the lock if no other process holds it; return :attr:`held`.
        """
        if self._file is None and fcntl is not None:
            f = open(self.path, 'rb')
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:  # held elsewhere, or no locks on this system
                f.close()
            else:
                self._file = f
        return self.held

    def release(self):
        """Let the lock go (closing the file releases it)."""
        f, self._file = self._file, None
        if f is not None:
            f.close()

    def holder(self):
        """``(host name, path, process id)``: this process, as the holder of
        this lock (see ``IDispatcherAgents.instance_lock``)."""
        return (socket.gethostname(), self.path, os.getpid())


_locks = {}  # {UUID: InstanceLock}


def lock(uuid, path=None):
    """Try to lock the UUID file at ``path`` (see :func:`getPath`), which
    holds ``uuid``, for the rest of this process; return the
    :class:`InstanceLock` (its ``held`` says whether it is ours).

    Dispatchers of ``uuid`` in this process then record and recognise the
    lock (:func:`holder`, :func:`formerLife`).
    """
    with _lock:
        found = _locks.get(uuid)
        if found is None:
            found = _locks[uuid] = InstanceLock(getPath(path))
    found.acquire()
    return found


def holder(uuid):
    """What a record of ``uuid`` activated by this process stores as its
    ``instance_lock``: :meth:`InstanceLock.holder`, or None without the
    lock (which is taken now if it has become free: the process that held
    it, with the same UUID, has ended)."""
    found = _locks.get(uuid)
    return found.holder() if found is not None and found.acquire() else None


def formerLife(record):
    """Whether the activated ``record`` (an ``IDispatcherAgents``) was left
    by an earlier process of this instance that has ended.

    True when the record was activated by another process holding the lock
    of this very UUID file on this host, and this process can take that
    lock now (which it then keeps).
    """
    found = _locks.get(record.UUID)
    left = record.instance_lock
    if found is None or left is None:
        return False
    host, path, pid = left
    mine = found.holder()
    return (host, path) == mine[:2] and pid != mine[2] and found.acquire()


def __getattr__(name):
    """Compute :data:`UUID` on first access and keep it for the process."""
    if name != 'UUID':
        raise AttributeError(
            'module %r has no attribute %r' % (__name__, name))
    with _lock:
        value = globals().get('UUID')
        if value is None:
            value = globals()['UUID'] = getUUID()
    return value
