"""A dispatcher's record inside a queue: activation, ping, death, cleanup.

``Queue.dispatchers`` (:class:`Dispatchers`) maps each dispatcher UUID to a
:class:`DispatcherAgents`, the persistent stand-in of a running dispatcher:
a mapping of agent name -> agent plus liveness data.  Dispatchers ping their
record; each ping also checks the next activated sibling and deactivates it
when it is dead, which puts its jobs back in the queue.  The classes are
re-exported by ``zc.async.queue`` and keep 1.5's dotted names.
"""
import datetime
import itertools
import logging

import zope.event
import zope.interface
import zope.minmax

from . import clock
from . import interfaces
from . import logs
from . import txn
from . import utils
from ._mapping import Mapping
from .retry import RetryCommonForever


@zope.interface.implementer(interfaces.IDispatcherAgents)
class DispatcherAgents(utils.Dict):
    """See :class:`zc.async.interfaces.IDispatcherAgents`.

    ``parent`` is the queue.
    """

    __module__ = 'zc.async.queue'

    UUID = activated = None
    instance_lock = None  # see IDispatcherAgents
    ping_interval = datetime.timedelta(seconds=30)
    ping_death_interval = datetime.timedelta(seconds=60)
    # {(db name, oid): first seen} of the jobs this dispatcher cannot load,
    # made when it finds the first (see zc.async.unloadable).
    unloadable = None

    def __init__(self, uuid):
        super().__init__()
        self.UUID = uuid
        # A separate, max-resolving object: concurrent pings never conflict
        # with each other or with changes to the agents.
        self.last_ping = zope.minmax.Maximum()

    @property
    def dead(self):
        times = [t for t in (self.last_ping.value, self.activated)
                 if t is not None]
        if not times:
            return False
        return max(times) + self.ping_death_interval < clock.now()

    def __setitem__(self, key, value):
        if not interfaces.IAgent.providedBy(value):
            raise ValueError('value must be IAgent')
        if len(value):
            raise ValueError('cannot add an agent with active jobs')
        self._check_removable(key)
        super().__setitem__(key, value)

    def pop(self, key, *default):
        self._check_removable(key)
        return super().pop(key, *default)

    def __delitem__(self, key):
        self._check_removable(key)
        super().__delitem__(key)

    def _check_removable(self, key):
        agent = self.get(key)
        if agent is not None and len(agent):
            raise ValueError('cannot remove an agent with active jobs')

    def activate(self):
        """Clean the agents, then mark the record activated."""
        if self.activated:
            raise ValueError('Already activated')
        # Cleaning first is a fail-safe for jobs claimed after deactivation.
        self._clean()
        self.activated = clock.now()
        zope.event.notify(interfaces.DispatcherActivated(self))

    def deactivate(self):
        """Mark the record deactivated, then clean the agents; return what
        the cleaning did (see :meth:`_clean`)."""
        if not self.activated:
            raise ValueError('Not activated')
        self.activated = None
        handed_back = self._clean()
        zope.event.notify(interfaces.DispatcherDeactivated(self))
        return handed_back

    def reactivate(self):
        """Mark the record activated again, without cleaning the agents."""
        self.activated = clock.now()
        zope.event.notify(interfaces.DispatcherReactivated(self))

    def _clean(self):
        """Hand every job held by the agents back to the queue; return
        ``[(job, what)]``, ``what`` being a value of :data:`HANDED_BACK`."""
        handed_back = []
        for agent in self.values():
            while len(agent):
                job = agent.pull()
                handed_back.append((job, _requeue(self.parent, agent, job)))
        return handed_back

    def __repr__(self):
        return '<%s %s>' % (logs.custom_repr(self), self.UUID)


#: What cleaning a record does with a held job, by the job's status.
HANDED_BACK = {
    interfaces.NEW: 'back in the queue',
    interfaces.ACTIVE: 'interrupted: its handleInterrupt is queued',
    interfaces.CALLBACKS: 'its resumeCallbacks is queued',
    interfaces.COMPLETED: 'completed',
}


def _requeue(queue, agent, job):
    """Put ``job``, just pulled from ``agent``, where it can finish; return
    what was done (a value of :data:`HANDED_BACK`)."""
    status = job.status
    if status in (interfaces.PENDING, interfaces.ASSIGNED):
        logs.log.warning(
            'unexpected job status %s for %r; treating as NEW', status, job)
        job.parent = None
        status = interfaces.NEW
    if status == interfaces.NEW:
        queue._requeue(job)
    elif status == interfaces.ACTIVE:
        _put_housekeeping(queue, job.handleInterrupt)
    elif status == interfaces.CALLBACKS:
        _put_housekeeping(queue, job.resumeCallbacks)
    else:  # COMPLETED: its agent never heard of it
        job.parent = agent
        agent.completed.add(job)
        logs.log.warning(
            'unexpectedly had to inform agent of completion of %r', job)
    return HANDED_BACK[status]


def describe_handed_back(handed_back):
    """One line's worth of text for what ``deactivate`` returned."""
    if not handed_back:
        return 'no jobs'
    return '; '.join('%r: %s' % (job, what) for job, what in handed_back)


def _put_housekeeping(queue, method):
    """Queue ``method`` of an interrupted job, retried until it works."""
    queue.put(method, retry_policy_factory=RetryCommonForever,
              failure_log_level=logging.CRITICAL)


@zope.interface.implementer(interfaces.IDispatchers)
class Dispatchers(Mapping):
    """A queue's dispatcher records by UUID; see ``IDispatchers``.

    ``__parent__`` is the queue, which is also each record's ``parent``.
    """

    __module__ = 'zc.async.queue'

    def register(self, uuid):
        """Create the record of dispatcher ``uuid``."""
        if uuid in self:
            raise ValueError('UUID already registered')
        agents = DispatcherAgents(uuid)
        agents.parent = self.__parent__
        self._set(uuid, agents)
        zope.event.notify(interfaces.DispatcherRegistered(agents))

    def unregister(self, uuid):
        """Remove the record of a deactivated dispatcher ``uuid``."""
        agents = self[uuid]
        if agents.activated:
            raise ValueError('UUID is activated.')
        self._pop(uuid)
        zope.event.notify(interfaces.DispatcherUnregistered(agents))
        agents.parent = None

    def ping(self, uuid):
        """Record that dispatcher ``uuid`` is alive; check on a sibling."""
        agents = self[uuid]
        if not agents.activated:
            # 1.5's words (which alerts match), then what else we know.
            logs.log.critical(
                "Dispatcher %r not activated prior to ping. This can indicate "
                "that the dispatcher's ping_death_interval is set too short, "
                "or that some transactions in the system are taking too long "
                "to commit. Activating, to correct the current problem, but "
                "if the dispatcher was inappropriately viewed as ``dead`` and "
                "deactivated, you should investigate the cause.  (Queue %r; "
                "the clocks of the machines may also be out of sync.)",
                uuid, self.__parent__.name)
            agents.reactivate()
        now = clock.now()
        last = agents.last_ping.value
        # At most one ping write per ping_interval: less write churn.
        if last is None or last + agents.ping_interval <= now:
            agents.last_ping.value = now
        sibling = self._next_activated(uuid)
        if sibling is not None and sibling.dead:
            last = max(t for t in (sibling.last_ping.value, sibling.activated)
                       if t is not None)
            handed_back = sibling.deactivate()
            txn.log_after_commit(
                self, logging.WARNING,
                'dispatcher %s in queue %r is dead (no ping since %s; death '
                'interval %s): dispatcher %s deactivated it; its jobs: %s',
                sibling.UUID, self.__parent__.name, last,
                sibling.ping_death_interval, uuid,
                describe_handed_back(handed_back))

    def _next_activated(self, uuid):
        """The next activated record after ``uuid``, wrapping around."""
        after = self._data.values(min=uuid, excludemin=True)
        before = self._data.values(max=uuid, excludemax=True)
        for agents in itertools.chain(after, before):
            if agents.activated:
                return agents
        return None
