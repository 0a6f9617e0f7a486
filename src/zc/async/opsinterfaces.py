"""The interfaces of the features for operating zc.async: recurring
schedules, sandboxed replays and dry-runs, and the monitor's commands.

:mod:`zc.async.interfaces`, the map, re-exports every name here
(``zc.async.interfaces.ISchedule``, ...); their exceptions are there.
"""
import zope.interface
import zope.interface.common.mapping


class IMonitorPlugin(zope.interface.Interface):
    """A command of the monitor line server (``async``, ``asyncdb``).

    ``dispatcher.zcml`` registers zc.async's commands as named utilities
    providing this interface, as 1.5 did with zc.monitor's interface of
    the same name.
    """

    def __call__(connection, cmd=None, *raw):
        """Run tool ``cmd`` with the modifier words ``raw``; write the
        answer to ``connection`` (anything with a ``write(text)`` method).
        """


class ISandboxReport(zope.interface.Interface):
    """What a replay or dry-run did (see zc.async.ops.sandbox)."""

    kind = zope.interface.Attribute("'replay' or 'dry-run'.")

    job = zope.interface.Attribute('The repr of the job run (in the sandbox).')

    job_id = zope.interface.Attribute(
        '(integer oid, database name) of the job; None for a plain '
        'callable.')

    at = zope.interface.Attribute(
        'The tid (8 bytes) of the database state the sandbox showed.')

    at_source = zope.interface.Attribute(
        'Why that state, in words (the recorded snapshot, as asked, the '
        'latest).')

    failed = zope.interface.Attribute('Whether the call raised.')

    result = zope.interface.Attribute(
        'What the callable returned (its persistent objects belong to the '
        'closed sandbox: use ``result_repr``).')

    result_repr = zope.interface.Attribute('A short repr of the result.')

    error = zope.interface.Attribute('The exception raised, or None.')

    traceback = zope.interface.Attribute(
        'The formatted traceback of the error, or None.')

    seconds = zope.interface.Attribute(
        'How long the call and its commit took.')

    added = zope.interface.Attribute(
        'Changes (oid, database, class_name) of the objects the run added; '
        'their oids are the sandbox\'s.')

    changed = zope.interface.Attribute(
        'Changes of the objects the run changed; ``differences`` lists '
        'their changed attributes, cut short.')

    removed = zope.interface.Attribute(
        'Changes of the objects that the changed objects no longer refer '
        'to (unreachable, unless other objects refer to them).')

    missing = zope.interface.Attribute(
        'Oids whose revisions the run needed but a pack removed.')

    def text():
        """The report for humans."""

    def as_dict():
        """The report as JSON-ready data."""


class ISchedule(zope.interface.Interface):
    """A recurring job: a template job put in its queue at each tick of a
    rule (see :mod:`zc.async.schedule`).

    Made as ``Schedule(callable, *args, cron=None, every=None,
    timezone=None, start=None, catch_up='once', overlap=True, **kwargs)``
    with exactly one of ``cron`` (an expression matched in ``timezone``: an
    IANA name or tzinfo, UTC by default) and ``every`` (a positive
    timedelta).  ``callable`` may also be a new job, whose settings are
    copied too.  Bad values raise ValueError or TypeError there.
    """

    name = zope.interface.Attribute('The name in ``queue.schedules``.')

    job = zope.interface.Attribute(
        'The template IJob, never run: each tick puts a copy.')

    cron = zope.interface.Attribute('The cron expression, or None.')

    every = zope.interface.Attribute('The interval (timedelta), or None.')

    timezone = zope.interface.Attribute(
        'The tzinfo ``cron`` is read in (UTC for ``every``).')

    start = zope.interface.Attribute(
        'The aware datetime given as ``start``, or None.  No tick is '
        'before it; ``every`` ticks fall on ``start + k * every`` (by '
        'default the first one is an interval after the schedule is made).')

    catch_up = zope.interface.Attribute(
        "What due ticks put after a downtime: 'once' (one job), 'all' "
        "(one job each, at most ``max_catch_up``) or 'skip' (none, but "
        "the latest may still fire if at most ``grace`` late).")

    overlap = zope.interface.Attribute(
        'False: a tick puts no job while the last one is pending, running '
        'or in its callbacks.')

    grace = zope.interface.Attribute(
        "How late the latest due tick may fire under catch_up='skip' (a "
        'timedelta, one minute; a class attribute an instance may set).')

    max_catch_up = zope.interface.Attribute(
        "The most jobs catch_up='all' puts at once (100; a class "
        'attribute an instance may set).')

    rule = zope.interface.Attribute('The rule in words.')

    next_run = zope.interface.Attribute(
        'The first tick not fired yet (aware UTC).')

    last_run = zope.interface.Attribute(
        'The tick of the last job put (aware UTC), or None.')

    last_job = zope.interface.Attribute('The last job put, or None.')

    def nextTick(after):
        """The first tick strictly after the aware datetime ``after``."""

    def lastTick(until):
        """The last tick at or before the aware datetime ``until``."""

    def newJob():
        """A new job copied from the template."""


class ISchedules(zope.interface.common.mapping.IEnumerableMapping):
    """A queue's schedules by name; values must be ISchedule.

    Adding one sets its ``name`` and ``parent``; ``del`` removes it.
    """

    earliest = zope.interface.Attribute(
        'No schedule\'s ``next_run`` is before this datetime (None: no '
        'schedule was ever added).')
