"""Upgrading a zc.async 1.5 database to zc.async 2 (docs/upgrading.rst).

With the 1.5 workers stopped and a backup made, two commands do it:

1. ``zodbupdate --convert-py3 --encoding utf-8 --file Data.fs`` rewrites
   every pickle for Python 3.  It reads :data:`RENAMES` through this
   package's ``zodbupdate`` entry point, so the classes of 1.5's gone
   dependencies (zc.twist's ``Failure``, zope.bforest's forest) and
   Python 2's exception names load as zc.async 2's.
2. ``zc-async upgrade DATABASE`` runs :func:`upgrade`: it converts what
   1.5 stored in another layout (each agent's completed-job store and its
   keys, the keys of scheduled jobs), loads every job it can reach, and
   reports what it did and what it could not load.

:func:`upgrade` is idempotent: a second run finds nothing to convert.
"""
import BTrees.OOBTree
import ZODB.broken
import ZODB.utils

from . import clock
from . import interfaces
from . import legacy
from . import logs
from .job import isFailure
from .queue import _scheduled_key

#: The class renames zodbupdate applies (``'module Name'`` strings), read
#: through the ``zodbupdate`` entry point of setup.py.
RENAMES = {
    'zc.twist Failure': 'zc.async.twist Failure',
    'zope.bforest.periodic LOBForest': 'zc.async.legacy PeriodicForest',
}
RENAMES.update(
    ('exceptions %s' % name, '%s %s' % (cls.__module__, cls.__qualname__))
    for name, cls in legacy.python2_exceptions())


# ------------------------------------------------------------- 1.5 keys

def key_from_15(key):
    """The zc.async 2 key of the same time as the 1.5 ``key``; the four
    tie-breaking bits are kept."""
    return clock.dt_to_long(legacy.long_to_dt15(key)) + (key & 15)


# --------------------------------------------------------------- report

UNLOADABLE_HINT = (
    '(What names a module that cannot be imported needs the application '
    'installed here; run zc-async upgrade again then.  Records that cannot '
    'be read at all mean that zodbupdate failed: start again from the '
    'backup, with "zodbupdate --convert-py3 --encoding utf-8".)')


class Report:
    """What :func:`upgrade` found and did, as lines for people.

    ``lines`` describe the database and each conversion; ``unloadable``
    lists what could not be loaded (with why); ``conversions`` counts the
    conversions made (or, with ``check``, needed); ``queues`` the queues
    found.
    """

    def __init__(self, check):
        self.check = check
        self.lines = []
        self.unloadable = []
        self.conversions = 0
        self.queues = 0

    def note(self, text, *args):
        self.lines.append(text % args)

    def converted(self, text, *args):
        self.conversions += 1
        self.note(('would convert: ' if self.check else 'converted: ')
                  + text, *args)

    def as_dict(self):
        return {'check': self.check, 'conversions': self.conversions,
                'queues': self.queues, 'lines': self.lines,
                'unloadable': self.unloadable}

    def text(self):
        lines = list(self.lines)
        if self.unloadable:
            lines.append('could not load:')
            lines.extend('  ' + line for line in self.unloadable)
            lines.append(UNLOADABLE_HINT)
        count = '%d conversion%s' % (
            self.conversions, '' if self.conversions == 1 else 's')
        if not self.conversions:
            lines.append('nothing to convert')
        elif self.check:
            lines.append('%s needed; nothing was committed (--check)'
                         % count)
        else:
            lines.append('%s committed' % count)
        return '\n'.join(lines)


# -------------------------------------------------------------- upgrade

def upgrade(conn, check=False):
    """Convert the 1.5 structures of ``conn``'s database; a :class:`Report`.

    Each conversion is committed with ``conn``'s transaction manager as
    soon as it is made (aborted with ``check``), so an interrupted run
    keeps what it finished and a second run continues.  Reads as much as
    it can: what cannot be loaded goes to ``Report.unloadable``.
    """
    report = Report(check)
    tm = conn.transaction_manager

    def done():
        if check:
            tm.abort()
        else:
            tm.commit()

    try:
        root = conn.root()
        if interfaces.KEY not in root:
            report.note('no zc.async queues in this database (root key %r '
                        'missing)', interfaces.KEY)
            return report
        queues = sorted(root[interfaces.KEY].items())
    except Exception as e:  # zodbupdate failed, say
        tm.abort()
        report.unloadable.append('the queues: %s' % (_error_text(e),))
        return report
    for name, queue in queues:
        try:
            _upgrade_queue(name, queue, report, done)
        except Exception as e:
            tm.abort()
            report.unloadable.append('queue %r: %s' % (name, _error_text(e)))
    return report


def _error_text(error):
    """``error``'s class and message, and those of its cause."""
    text = '%s: %s' % (type(error).__name__, error)
    cause = error.__cause__ or error.__context__
    if cause is not None:
        text += ' (%s: %s)' % (type(cause).__name__, cause)
    return text


def _upgrade_queue(name, queue, report, done):
    report.queues += 1
    pending, _ = _checked_jobs(
        queue, report, 'pending in queue %r' % (name,))
    report.note('queue %r: %d pending jobs', name, pending)
    if _rekey_scheduled(queue):
        report.converted('queue %r: the keys of its scheduled jobs (1.5 '
                         'oids that became text)', name)
    done()
    for uuid, agents in sorted(queue.dispatchers.items(),
                               key=lambda item: str(item[0])):
        _describe_dispatcher(name, uuid, agents, report)
        for agent_name, agent in sorted(agents.items()):
            where = 'agent %r of dispatcher %s in queue %r' % (
                agent_name, uuid, name)
            _checked_jobs(agent, report, 'held by ' + where)
            _describe_held(agent, where, report)
            converted = _convert_completed(
                agent.completed, report, 'completed by ' + where)
            if converted is not None:
                moved, left = converted
                report.converted(
                    "%s: 1.5's completed-job store, %d jobs re-keyed%s",
                    where, moved, '' if not left else
                    ' (%d that cannot be loaded stay in the 1.5 store, '
                    'unread, until a run that can load them)' % (left,))
            completed, failed = _checked_jobs(
                agent.completed, report, 'completed by ' + where)
            report.note('%s: %d completed jobs (%d failed)', where,
                        completed, failed)
            done()  # after reading: --check reads the converted store


def _describe_dispatcher(name, uuid, agents, report):
    ping = agents.last_ping.value
    report.note(
        'dispatcher %s in queue %r: %s, last ping %s%s', uuid, name,
        'activated %s' % _when(agents.activated) if agents.activated
        else 'not activated', _when(ping),
        ', dead' if agents.activated and agents.dead else '')


def _describe_held(agent, where, report):
    for job in agent:
        if job.status == interfaces.ACTIVE:
            fate = ('its retry policy decides (1.5 retries an interrupted '
                    'job) when a worker finds this dispatcher dead or '
                    'reuses its UUID')
        else:
            fate = 'a worker gives it back when it finds this dispatcher dead'
        report.note('%s holds %s (%s): %s', where, _job_name(job),
                    job.status, fate)


def _when(dt):
    return 'never' if dt is None else dt.astimezone(clock.UTC).isoformat()


# -------------------------------------------------------- conversions

def _rekey_scheduled(queue):
    """Give ``queue``'s scheduled jobs the keys zc.async 2 looks up.

    Their keys hold the job's oid, a Python 2 string: zodbupdate makes
    the UTF-8-decodable ones text, not bytes.  The tree is built anew,
    since text and bytes keys cannot be compared.  Returns whether a key
    changed.
    """
    held = queue._held
    items = list(held.items())
    if all(key == _scheduled_key(job) for key, job in items):
        return False
    fresh = BTrees.OOBTree.OOBTree()
    for key, job in items:
        fresh[_scheduled_key(job)] = job
    queue._held = fresh
    return True


def _convert_completed(store, report, where):
    """Move the jobs of a 1.5 completed-job store into its buckets.

    The 1.5 store keeps a :class:`zc.async.legacy.PeriodicForest` in
    ``_data``; the jobs of each of its trees go to the bucket of the same
    age, re-keyed (their ``key`` too).  A job that cannot be loaded (so
    not stored again) stays in the forest, and is reported.  Returns the
    numbers of jobs moved and left, or None for a store that is not 1.5's.
    """
    store._p_activate()  # its __dict__ is read
    forest = store.__dict__.get('_data')
    if not isinstance(forest, legacy.PeriodicForest):
        return None
    trees = list(forest.buckets)
    if not store._buckets:  # no job completed since the upgrade
        store._start(max(len(trees), 2))
        if forest.last_rotation is not None:
            store._rotated = forest.last_rotation
    if forest._period:
        store.period = forest._period
    if '__parent__' in store.__dict__:  # 1.5's attribute
        store.parent = store.__dict__.pop('__parent__')
    moved = left = 0
    for age, tree in enumerate(trees):
        bucket = store._buckets[min(age, len(store._buckets) - 1)]
        for key, job in list(tree.items()):
            problems = _problems(job, set())
            if problems:
                report.unloadable.extend(
                    '%s: %s' % (where, problem) for problem in problems)
                left += 1
                continue
            new = key_from_15(key)
            while any(new in other for other in store._buckets):
                new -= 1  # taken: sort as added just after
            del tree[key]
            bucket[new] = job
            job.key = new
            moved += 1
    store._len.change(moved)
    if not left:
        del store._data
    return moved, left


# ------------------------------------------------------------ loading

def _checked_jobs(jobs, report, where):
    """Load each job of ``jobs`` and its parts; report what is broken.

    Returns how many jobs there are, and how many of them failed.
    """
    count = failed = 0
    try:
        for job in jobs:
            count += 1
            problems = _problems(job, set())
            report.unloadable.extend(
                '%s: %s' % (where, problem) for problem in problems)
            if not problems and isFailure(job.result):
                failed += 1
    except Exception as e:  # a store that cannot even be iterated
        report.unloadable.append('%s: after %d jobs: %s' % (
            where, count, _error_text(e)))
    return count, failed


def _problems(job, seen):
    """Descriptions of what cannot be loaded in ``job``, its callable,
    arguments, result, callbacks and sub-jobs."""
    if id(job) in seen:
        return []
    seen.add(id(job))
    name = _job_name(job)
    try:
        job._p_activate()
        parts = [('callable', job.callable), ('result', job.result)]
        parts += [('argument %d' % ix, arg)
                  for ix, arg in enumerate(job.args)]
        parts += [('argument %s' % key, value)
                  for key, value in job.kwargs.items()]
        callbacks = list(job.callbacks)
    except Exception as e:
        return ['%s: %s' % (name, _error_text(e))]
    problems = ['%s: %s is %s' % (name, what, broken)
                for what, value in parts
                for broken in _broken(value)]
    for value in [value for what, value in parts] + callbacks:
        for sub in _jobs_in(value):
            problems += _problems(sub, seen)
    return problems


def _broken(value, depth=3):
    """Descriptions of the broken objects in ``value`` (a class or an
    instance whose class cannot be imported), looking ``depth`` levels
    into lists, tuples, sets and dicts."""
    if isinstance(value, ZODB.broken.Broken) or (
            isinstance(value, type) and
            issubclass(value, ZODB.broken.Broken)):
        cls = value if isinstance(value, type) else type(value)
        return ['%s.%s, which cannot be imported' % (
            cls.__module__, cls.__name__)]
    if depth and isinstance(value, dict):
        value = list(value.keys()) + list(value.values())
    if depth and isinstance(value, (list, tuple, set, frozenset)):
        return [found for item in value for found in _broken(item, depth - 1)]
    return []


def _jobs_in(value):
    """The jobs in a job's part: a job, a callback proxy's jobs, the jobs
    of a composite's arguments."""
    if interfaces.IJob.providedBy(value):
        return [value]
    return [job for job in (getattr(value, 'success', None),
                            getattr(value, 'failure', None))
            if interfaces.IJob.providedBy(job)]


def _job_name(job):
    oid = job._p_oid
    if oid is None:
        return 'job %s' % logs.custom_repr(job)
    return 'job %d (%s)' % (ZODB.utils.u64(oid), ZODB.utils.oid_repr(oid))
