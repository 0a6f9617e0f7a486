"""A job's settings, checked as they are set, and what it records as it runs.

:class:`JobSettings` is a base class of :class:`zc.async.job.Job`: the
callable (a bound method is stored as its object and the method's name),
``begin_after``, ``begin_by``, ``time_limit`` and ``quota_names``, each
refused with a clear error when the job's status or the value does not
allow it; and the ``result``, ``active_start``, ``active_end``,
``active_snapshot`` and ``initial_callbacks_end`` it records.
"""
import datetime
import types

from . import clock
from . import interfaces
from . import watchdog
from .interfaces import NEW, PENDING


class JobSettings:
    """The settings of a job; mixed into :class:`zc.async.job.Job`, whose
    ``_require_status`` checks them."""

    @property
    def callable(self):
        if self._callable_name is None:
            return self._callable_root
        return getattr(self._callable_root, self._callable_name)

    @callable.setter
    def callable(self, value):
        self._require_status(
            (NEW,), 'can only set callable when a job has NEW, PENDING, or '
            'ASSIGNED status')  # 1.5's text; only NEW is allowed (A8)
        if not callable(value):
            raise TypeError('a job needs a callable, not %r' % (value,))
        owner = _bound_owner(value)
        if owner is None:
            self._callable_root, self._callable_name = value, None
        else:
            # Bound methods do not pickle; their owner and name do.
            self._callable_root, self._callable_name = owner, value.__name__
        root = self._callable_root
        if (interfaces.IJob.providedBy(root) and root is not self
                and root.parent is None):
            # Wrapper jobs (handleInterrupt, resumeCallbacks, fail) adopt
            # their job, so that it can still find its queue and agent.
            root.parent = self

    @property
    def result(self):
        return self._result

    @property
    def begin_after(self):
        return self._begin_after

    @begin_after.setter
    def begin_after(self, value):
        self._require_status(
            (NEW,), 'can only set begin_after when a job has NEW status')
        if value is not None:
            value = _aware_utc(value, 'begin_after')
        self._begin_after = value

    @property
    def begin_by(self):
        return self._begin_by

    @begin_by.setter
    def begin_by(self, value):
        self._require_status(
            (NEW, PENDING),
            'can only set begin_by when a job has NEW or PENDING status')
        if value is not None:
            if not isinstance(value, datetime.timedelta):
                raise TypeError('begin_by must be a timedelta or None, not %r'
                                % (value,))
            if value < datetime.timedelta(0):
                raise ValueError('negative values are not allowed '
                                 '(begin_by=%r)' % (value,))
        self._begin_by = value

    @property
    def time_limit(self):
        return self._time_limit

    @time_limit.setter
    def time_limit(self, value):
        self._require_status(
            (NEW, PENDING),
            'can only set time_limit when a job has NEW or PENDING status')
        self._time_limit = watchdog.check_time_limit(value)

    @property
    def quota_names(self):
        return self._quota_names

    @quota_names.setter
    def quota_names(self, value):
        if isinstance(value, (str, bytes)):
            raise TypeError('provide an iterable of names, not the '
                            'string %r' % (value,))
        names = tuple(value)
        self._require_status(
            (NEW, PENDING),
            'can only set quota_names when a job has NEW or PENDING status')
        if self.status == PENDING:
            quotas = self.queue.quotas
            for name in names:
                if name not in quotas:
                    raise ValueError('unknown quota name', name)
        self._quota_names = names

    @property
    def active_start(self):
        return self._active_start

    @property
    def active_end(self):
        return self._active_end

    @property
    def active_snapshot(self):
        return self._active_snapshot

    @property
    def initial_callbacks_end(self):
        if self.key is None:
            return None
        return clock.long_to_dt(self.key)


# ------------------------------------------------------------ helpers

def _bound_owner(value):
    """The object a bound method, method-wrapper or builtin method is
    bound to; None for other callables."""
    if isinstance(value, (types.MethodType, types.MethodWrapperType,
                          types.BuiltinMethodType)):
        owner = getattr(value, '__self__', None)
        # Builtin functions such as ``len`` are "bound" to their module.
        if owner is not None and not isinstance(owner, types.ModuleType):
            return owner
    return None


def _aware_utc(value, argname):
    """``value`` in UTC; it must be a timezone-aware datetime."""
    if not isinstance(value, datetime.datetime):
        raise TypeError('%s must be a datetime, not %r' % (argname, value))
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(
            'cannot use timezone-naive values (%s=%r); give a tzinfo, such '
            'as datetime.timezone.utc' % (argname, value))
    return value.astimezone(datetime.timezone.utc)
