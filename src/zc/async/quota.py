"""Named, queue-wide concurrency limits.

A queue's :class:`Quotas` maps names to :class:`Quota` objects.  A job lists
the names it counts against in ``quota_names``; ``Queue.claim`` does not hand
it out while any of those quotas is full.  The classes are re-exported by
``zc.async.queue`` and keep 1.5's dotted names (``zc.async.queue.Quota``), so
1.5 pickles load.
"""
import zope.interface

from . import clock
from . import interfaces
from . import logs
from . import utils
from ._mapping import Mapping


@zope.interface.implementer(interfaces.IQuota)
class Quota(utils.SequenceReads, utils.Base):
    """A named limit on how many of a queue's jobs may be active at once.

    See :class:`zc.async.interfaces.IQuota`.  The jobs are kept in a tuple on
    the quota itself, so two transactions that change the same quota
    conflict: a quota is a strict maximum, never merged past its size.
    """

    __module__ = 'zc.async.queue'

    _data = ()  # (job, ...) claimed jobs counting against the quota

    def __init__(self, name, size):
        self.name = name
        self.size = size

    def clean(self):
        """Drop jobs that no longer count: see ``IQuota.clean``."""
        now = clock.now()
        kept = tuple(job for job in self._data if _counts(job, now))
        if len(kept) != len(self._data):
            # Write only on change: an idle clean must not conflict.
            self._data = kept

    @property
    def filled(self):
        return len(self._data) >= self.size

    def add(self, item):
        """Count ``item`` against the quota (a no-op if it already counts)."""
        if not interfaces.IJob.providedBy(item):
            raise ValueError('must be IJob')
        if self.name not in item.quota_names:
            raise ValueError('quota name must be in quota_names')
        if item in self:
            return
        if self.filled:
            raise ValueError('Quota is filled')
        self._data = tuple(self._data) + (item,)

    def __contains__(self, item):
        return any(job is item for job in self._data)


    def __bool__(self):
        return bool(self._data)

    __nonzero__ = __bool__

    def get(self, index, default=None):
        """The job at ``index``, or ``default`` when there is none."""
        try:
            return self._data[index]
        except IndexError:
            return default

    def __repr__(self):
        return '<%s %r (%d/%d)>' % (
            logs.custom_repr(self), self.name, len(self._data), self.size)


def _counts(job, now):
    """Whether ``job`` still holds a quota slot at ``now``."""
    status = job.status
    if status in (interfaces.CALLBACKS, interfaces.COMPLETED):
        return False
    # A PENDING job due in the future was rescheduled by its retry policy; it
    # gives its slot back until it is claimed again.
    return not (status == interfaces.PENDING and job.begin_after > now)


class Quotas(Mapping):
    """A queue's quotas by name; change it with ``create`` and ``remove``.

    ``__parent__`` is the queue.
    """

    __module__ = 'zc.async.queue'

    def create(self, name, size=1):
        """Add a new quota ``name`` holding at most ``size`` jobs."""
        if name in self:
            raise ValueError('quota %r already exists' % (name,))
        quota = Quota(name, size)
        quota.parent = self
        self._set(name, quota)

    def remove(self, name):
        """Remove quota ``name``; jobs that name it simply ignore it."""
        quota = self._pop(name)
        quota.parent = None
