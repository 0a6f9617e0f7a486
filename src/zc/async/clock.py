"""The one clock zc.async reads, and the datetime keys that sort newest first.

:func:`now` is the only place the library asks for the time (tests freeze
it through :mod:`zc.async.testing`); :func:`dt_to_long` and
:func:`long_to_dt` encode times as the integer keys of the time-keyed
collections (:mod:`zc.async.utils`) and of the dispatcher's poll history.
``zc.async.utils`` re-exports these names (1.5 defined them there).
"""
import datetime

from . import legacy

UTC = datetime.timezone.utc

_frozen_now = None


# The real class, even while zc.async.testing patches ``datetime.datetime``
# (whose ``now`` reads this clock).
_real_datetime = datetime.datetime


def now():
    """The current time, a timezone-aware UTC datetime (maybe frozen)."""
    if _frozen_now is not None:
        return _frozen_now
    return _real_datetime.now(UTC)


def _set_frozen_now(dt):
    """Freeze :func:`now` at ``dt`` (naive values are UTC); None unfreezes.

    Used only by :mod:`zc.async.testing`.
    """
    global _frozen_now
    _frozen_now = None if dt is None else _as_utc(dt, 'dt')


def _as_utc(dt, argname):
    """``dt`` as an aware UTC datetime; naive values are taken as UTC."""
    if not isinstance(dt, datetime.datetime):
        raise TypeError('%s must be a datetime, not %r' % (argname, dt))
    if dt.tzinfo is None:
        return dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC)


# ------------------------------------------------------- datetime <-> key

_LATEST = datetime.datetime.max.replace(tzinfo=UTC)
_TIE_BITS = 4  # the low bits of a key are free for tie-breaking


def dt_to_long(dt):
    """Encode ``dt`` as an int key; newer datetimes give smaller keys.

    The key counts microseconds back from ``datetime.max``, shifted left by
    four bits so that callers can add 0-15 to break ties.  Every datetime
    from ``datetime.min`` to ``datetime.max`` fits a signed 64-bit key.
    """
    delta = _LATEST - _as_utc(dt, 'dt')
    micros = (delta.days * 86400 + delta.seconds) * 1000000
    return (micros + delta.microseconds) << _TIE_BITS


# The largest key of :func:`dt_to_long`; 1.5's keys (of the same times)
# are larger.
_MAX_KEY = ((_LATEST - datetime.datetime.min.replace(tzinfo=UTC))
            // datetime.timedelta(microseconds=1)) << _TIE_BITS | 15


def long_to_dt(key):
    """Decode a :func:`dt_to_long` key (tie-break bits ignored); aware UTC.

    A larger key is one of 1.5's, which ``zc-async upgrade`` converts (see
    :func:`zc.async.legacy.long_to_dt15`).
    """
    if key > _MAX_KEY:
        return legacy.long_to_dt15(key)
    return _LATEST - datetime.timedelta(microseconds=int(key) >> _TIE_BITS)
