"""This process's dispatchers, by UUID: what ``zc.async.dispatcher.get``
finds.

A :class:`zc.async.dispatcher.Dispatcher` registers itself in
:data:`dispatchers` when it is made.  The modules it uses look it up
here too (the warm shutdown at the end of the interpreter, the claims of
jobs that cannot be loaded), so they need not import the dispatcher's
module.  ``zc.async.dispatcher``
re-exports :func:`get`, :func:`pop` and :func:`clear` (1.5's names).
"""
import zope.component

from . import interfaces

dispatchers = {}  # {UUID: Dispatcher}


def default_uuid():
    """The instance UUID (the ``IUUID`` utility)."""
    return zope.component.getUtility(interfaces.IUUID)


def get(uuid=None, default=None):
    """The dispatcher registered for ``uuid`` (the instance UUID by default).
    """
    if uuid is None:
        uuid = zope.component.queryUtility(interfaces.IUUID)
    return dispatchers.get(uuid, default)


def pop(uuid=None):
    """Unregister and return the dispatcher for ``uuid``; KeyError if none."""
    if uuid is None:
        uuid = default_uuid()
    return dispatchers.pop(uuid)


def forget(dispatcher):
    """Unregister ``dispatcher`` if it is the one registered for its UUID."""
    if dispatchers.get(dispatcher.UUID) is dispatcher:
        del dispatchers[dispatcher.UUID]


def clear():
    """Forget every registered dispatcher (for tests)."""
    dispatchers.clear()
