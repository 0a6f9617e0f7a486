"""Find or create this instance's UUID, on request.

Every process that runs a dispatcher needs a UUID of its own: it names the
dispatcher's records (``DispatcherAgents``) inside every queue, and it is
registered as the :class:`~zc.async.interfaces.IUUID` utility by
:func:`zc.async.configure.minimal`.  The UUID is kept in a small text file
whose first line is the UUID; the path comes from the ``ZC_ASYNC_UUID``
environment variable, else ``uuid.txt`` in the current working directory.

Importing this module does nothing.  :data:`UUID` keeps its zc.async 1.5
name but is read (or the file created) on first access, not at import.
"""
import os
import threading
import uuid

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
    if path is None:
        path = os.environ.get(key) or os.path.join(os.getcwd(), 'uuid.txt')
    try:
        return _read(path)
    except FileNotFoundError:
        pass
    try:
        return _create(path)
    except FileExistsError:
        # Another process created it between our read and our create.
        return _read(path)


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
