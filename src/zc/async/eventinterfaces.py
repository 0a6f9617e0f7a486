"""The events zc.async notifies, and the one it subscribes to.

A queue's dispatcher records notify (``zope.event``) the dispatcher
events below as they are registered, activated, ...; the installers
notify :class:`ObjectAdded` for the queues they add.  The ZCML and the
worker subscribe to the database-opened event (zope.app.appsetup's).
:mod:`zc.async.interfaces`, the map, re-exports every name here: their
1.5 dotted names are ``zc.async.interfaces.IDispatcherActivated``, ...
"""
import zope.interface
import zope.interface.interfaces


class IObjectEvent(zope.interface.interfaces.IObjectEvent):
    """An event about ``object``."""


@zope.interface.implementer(IObjectEvent)
class AbstractObjectEvent:

    def __init__(self, object):
        self.object = object


class IDispatcherRegistered(IObjectEvent):
    """A dispatcher's record in a queue
    (:class:`~zc.async.interfaces.IDispatcherAgents`) was created."""


@zope.interface.implementer(IDispatcherRegistered)
class DispatcherRegistered(AbstractObjectEvent):
    pass


class IDispatcherUnregistered(IObjectEvent):
    """A dispatcher's record in a queue
    (:class:`~zc.async.interfaces.IDispatcherAgents`) was removed."""


@zope.interface.implementer(IDispatcherUnregistered)
class DispatcherUnregistered(AbstractObjectEvent):
    pass


class IDispatcherActivated(IObjectEvent):
    """A dispatcher's record in a queue was activated (agents may be added).
    """


@zope.interface.implementer(IDispatcherActivated)
class DispatcherActivated(AbstractObjectEvent):
    pass


class IDispatcherDeactivated(IObjectEvent):
    """A dispatcher's record in a queue was deactivated and cleaned."""


@zope.interface.implementer(IDispatcherDeactivated)
class DispatcherDeactivated(AbstractObjectEvent):
    pass


class IDispatcherReactivated(IObjectEvent):
    """A dispatcher whose record had been (wrongly) deactivated pinged again.
    """


@zope.interface.implementer(IDispatcherReactivated)
class DispatcherReactivated(AbstractObjectEvent):
    pass


class IObjectAdded(IObjectEvent):
    """An installer added ``object`` to ``parent`` under ``name``."""

    parent = zope.interface.Attribute('the container')
    name = zope.interface.Attribute('the key in the container')


@zope.interface.implementer(IObjectAdded)
class ObjectAdded(AbstractObjectEvent):

    def __init__(self, object, parent, name):
        super().__init__(object)
        self.parent = parent
        self.name = name


try:
    from zope.app.appsetup.interfaces import IDatabaseOpenedEvent
    from zope.app.appsetup.interfaces import DatabaseOpened
except ImportError:  # pragma: no cover - zope.app.appsetup is a dependency
    class IDatabaseOpenedEvent(zope.interface.Interface):
        """The main database has been opened."""

        database = zope.interface.Attribute('the database')

    @zope.interface.implementer(IDatabaseOpenedEvent)
    class DatabaseOpened:

        def __init__(self, database):
            self.database = database
