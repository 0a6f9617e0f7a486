"""Older name of the default-queue adapter, kept for configurations."""
import persistent.interfaces
import zope.component
import zope.interface

from . import interfaces


@zope.component.adapter(persistent.interfaces.IPersistent)
@zope.interface.implementer(interfaces.IQueue)
def defaultQueueAdapter(obj):
    """The default queue of ``obj``'s database: see ``queue.getDefaultQueue``.
    """
    from .queue import getDefaultQueue  # queue imports much; load on use
    return getDefaultQueue(obj)
