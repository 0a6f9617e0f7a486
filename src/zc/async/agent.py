"""An agent chooses which jobs one dispatcher takes from a queue.

An :class:`Agent` lives in a dispatcher's ``DispatcherAgents`` under a name
(``'main'`` by default).  Each poll, the dispatcher asks it to
:meth:`~Agent.claimJob`: the agent takes the first due job that its
``filter`` accepts (or lets a legacy ``chooser`` pick one), holds it until
the job completes, then keeps it for about a week in ``completed``.
"""
import datetime

import zope.component
import zope.interface

from . import interfaces
from . import logs
from . import utils
from . import watchdog
from .agentjobs import AgentJobs
from .legacy import chooseFirst  # noqa: F401  (1.5 name, deprecated)


def check_batch_size(value):
    """``value`` if it is a batch size (a positive int); TypeError or
    ValueError otherwise."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError('batch_size must be an int, not %r' % (value,))
    if value < 1:
        raise ValueError('batch_size must be at least 1, not %r' % (value,))
    return value


@zope.interface.implementer(interfaces.IAgent)
class Agent(utils.SequenceReads, utils.Base):
    """See :class:`zc.async.interfaces.IAgent` and ``IFilterAgent``.

    The agent provides ``IFilterAgent`` exactly when it has no chooser.
    """

    __module__ = 'zc.async.agent'

    name = None
    _chooser = _filter = None
    _time_limit = None
    _batch_size = 1  # 1.5 agents and older pickles: one job per commit

    def __init__(self, chooser=None, filter=None, size=3, time_limit=None,
                 batch_size=1):
        if chooser is not None and filter is not None:
            raise ValueError('cannot set both chooser and filter to non-None')
        # Held jobs (assigned, active, running callbacks), and the last
        # completed ones, in one resolving record: the dispatcher's claims
        # and the workers' completions do not conflict, and a completion
        # writes no BTree bucket or counter (see zc.async.agentjobs).
        self._data = AgentJobs()
        self.completed = utils.Periodic(datetime.timedelta(days=7), 7)
        self.completed.parent = self
        self.completed._recent = self._data
        self.size = size
        self._filter = filter
        self.chooser = chooser
        if time_limit is not None:
            self.time_limit = time_limit
        if batch_size != 1:
            self.batch_size = batch_size

    @property
    def time_limit(self):
        """The time limit of the jobs it claims that have none (see
        IAgent)."""
        return self._time_limit

    @time_limit.setter
    def time_limit(self, value):
        self._time_limit = watchdog.check_time_limit(value)

    @property
    def batch_size(self):
        """How many small jobs a worker thread runs in one transaction
        (see IAgent and zc.async.batches)."""
        return self._batch_size

    @batch_size.setter
    def batch_size(self, value):
        self._batch_size = check_batch_size(value)

    # ----------------------------------------------------- choice policy

    @property
    def chooser(self):
        """A callable agent -> job or None that claims from the queue."""
        return self._chooser

    @chooser.setter
    def chooser(self, value):
        if value is not None and self._filter is not None:
            raise ValueError('cannot set both chooser and filter to non-None')
        self._chooser = value
        if value is None:
            zope.interface.alsoProvides(self, interfaces.IFilterAgent)
        elif interfaces.IFilterAgent in zope.interface.directlyProvidedBy(
                self):
            zope.interface.noLongerProvides(self, interfaces.IFilterAgent)

    @property
    def filter(self):
        """A predicate job -> bool, or None to accept every job."""
        return self._filter

    @filter.setter
    def filter(self, value):
        if value is not None and self._chooser is not None:
            raise ValueError('cannot set both chooser and filter to non-None')
        self._filter = value

    @property
    def queue(self):
        """The queue of this agent's dispatcher record, or None."""
        if self.parent is None:
            return None
        return self.parent.parent

    # -------------------------------------------------------- claiming

    def claimJob(self):
        """Claim a job for the dispatcher and hold it; None if none."""
        return self._claim_with(self._choose)

    def _claim_passing_over(self, passed_over, **preferences):
        """``claimJob`` of an agent with no chooser, passing over the jobs
        for which ``passed_over(job)`` is true (see ``zc.async.claims``).
        ``preferences``: see ``Queue._claim``."""
        def choose():
            return self.queue._claim(
                lambda job: not passed_over(job) and (
                    self._filter is None or self._filter(job)),
                **preferences)
        return self._claim_with(choose)

    def _claim_with(self, choose):
        if not self.parent.activated or self.parent.dead:
            return None
        if len(self._data) >= self.size:
            return None
        job = choose()
        if job is not None:
            job.parent = self
            self._data.put(job)
        return job

    get = claimJob  # IAgent declares ``get``; dispatchers call ``claimJob``

    def _choose(self):
        """Claim one job from the queue; a hook for subclasses."""
        if self._chooser is not None:
            return self._chooser(self)
        return self.queue.claim(self._filter)

    def jobCompleted(self, job):
        """Move a completed ``job`` from the held jobs to ``completed``."""
        completed = self.completed
        if getattr(completed, '_recent', None) is not self._data:
            # Older agents: a zc.queue.Queue of held jobs
            self.remove(job)
            completed.add(job)
            return
        self.index(job)  # ValueError if not held
        completed._rotate()
        key = completed._new_key()
        if self._data.complete(job, key):
            completed._move_recent()
        completed._adopt(job, key)

    # ----------------------------------------------------- held jobs

    def index(self, item):
        """The position of ``item`` (by identity) among the held jobs."""
        for ix, job in enumerate(self._data):
            if job is item:
                return ix
        raise ValueError('%r not in agent' % (item,))

    def remove(self, item):
        """Stop holding ``item`` (its ``parent`` is left alone)."""
        del self[self.index(item)]

    def __delitem__(self, index):
        self._data.pull(index)

    def pull(self, index=0):
        """Stop holding the job at ``index``; return it without a parent."""
        job = self._data.pull(index)
        job.parent = None
        return job


    def __bool__(self):
        return bool(len(self._data))

    __nonzero__ = __bool__

    def __repr__(self):
        return '<%s %r>' % (logs.custom_repr(self), self.name)


@zope.component.adapter(interfaces.IDispatcherActivated)
def addMainAgentActivationHandler(event):
    """Give a newly activated dispatcher a default agent named ``'main'``."""
    agents = event.object
    if 'main' not in agents:
        agents['main'] = Agent()

