"""The loggers of zc.async, and the short descriptions its messages use.

``zc.async.events`` (:data:`log`) is for operators, ``zc.async.trace``
(:data:`tracelog`) for detail.  Messages name objects with
:func:`custom_repr`, and values that may be large with
:func:`bounded_repr`; a :class:`Lazy` text is formatted only if a message
shows it.  ``zc.async.utils`` re-exports the 1.5 names
(``log``, ``tracelog``, ``custom_repr``).
"""
import logging
import types

import persistent.interfaces
import ZODB.utils

log = logging.getLogger('zc.async.events')
tracelog = logging.getLogger('zc.async.trace')


def custom_repr(obj):
    """A short, stable description of ``obj`` for logs and reports.

    Persistent objects: ``module.Class (oid <int|?>, db <'name'|?>)``;
    functions and builtins: ``module.name``; anything else: ``repr``.
    """
    if persistent.interfaces.IPersistent.providedBy(obj):
        oid = '?' if obj._p_oid is None else ZODB.utils.u64(obj._p_oid)
        db = '?'
        if obj._p_jar is not None:
            db = repr(obj._p_jar.db().database_name)
        cls = obj.__class__
        return '%s.%s (oid %s, db %s)' % (
            cls.__module__, cls.__name__, oid, db)
    if isinstance(obj, (types.FunctionType, types.BuiltinFunctionType)):
        return '%s.%s' % (obj.__module__, obj.__name__)
    return repr(obj)


#: Characters of a value's repr that :func:`bounded_repr` keeps.
REPR_LIMIT = 200


def bounded_repr(obj, limit=REPR_LIMIT):
    """:func:`custom_repr` of ``obj``, cut to ``limit`` characters (then
    ``...`` and the full length follow): for the arguments and results in
    job reprs, logs and reports, which a large value must not swamp."""
    text = custom_repr(obj)
    if len(text) <= limit:
        return text
    return '%s...(%d characters)' % (text[:limit], len(text))


class BoundedRepr:
    """Stands for ``obj`` in a log call: its repr is
    :func:`bounded_repr`, computed only if the message is written."""

    __slots__ = ('obj',)

    def __init__(self, obj):
        self.obj = obj

    def __repr__(self):
        return bounded_repr(self.obj)

    __str__ = __repr__


class Lazy:
    """``text % args``, formatted only when a log message prints it.

    The retry loops describe what they do only when they log an error,
    and a job's repr loads its arguments: passing a ``Lazy`` keeps that
    cost off every successful call.
    """

    __slots__ = ('text', 'args')

    def __init__(self, text, *args):
        self.text = text
        self.args = args

    def __str__(self):
        try:
            return self.text % self.args
        except Exception:
            # Formatted late, maybe while the database is unreachable and a
            # job's repr cannot load its arguments: name objects by oid.
            return self.text.replace('%r', '%s') % tuple(
                custom_repr(arg) for arg in self.args)
