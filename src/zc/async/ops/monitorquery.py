"""Which jobs an ``asyncdb`` request means: states, filters and their order.

A :class:`JobQuery` is built from the words of a request (states such as
``pending`` or ``failed``, and filters such as ``queue:*`` or
``start:since1H``) and walks the database for the matching jobs, in the
order of reference 2.14: pending jobs by ``begin_after`` (merged across
queues), then jobs held by agents by ``active_start`` (jobs not started yet
last), then completed jobs, newest first.  It reads only the stores of the
states asked for, and the completed stores only within the
``callbacks_completed`` range, lazily, so the first match costs little.
"""
import fnmatch
import itertools
import re
import types

from .. import clock
from .. import interfaces
from .. import loadable
from .. import utils
from ..job import isFailure
from ..loadable import status_word
from ..monitor import parse_interval, parse_uuid

STATES = ('pending', 'assigned', 'active', 'callbacks', 'completed',
          'succeeded', 'failed')
COMPLETED_STATES = ('completed', 'succeeded', 'failed')
HELD_STATES = ('assigned', 'active', 'callbacks')

#: Duration filters -> the job attribute each one reads.
DATE_FILTERS = {'requested_start': 'begin_after', 'start': 'active_start',
                'end': 'active_end',
                'callbacks_completed': 'initial_callbacks_end'}

FILTERS = ('callable', 'queue', 'agent', 'uuid') + tuple(DATE_FILTERS)


def parse_states(states, default=()):
    """The set of state words in ``states`` (``default`` if none)."""
    states = frozenset(states or default)
    unknown = states.difference(STATES)
    if unknown:
        raise ValueError('Available states are %s (unknown: %s)' % (
            ', '.join(STATES), ', '.join(sorted(unknown))))
    if not states:
        raise ValueError('Available states are %s (give at least one)'
                         % (', '.join(STATES),))
    if len(states.intersection(COMPLETED_STATES)) > 1:
        raise ValueError('can only include zero or one of "completed", '
                         '"succeeded," or "failed" states.')
    return states


def parse_date_filter(name, value):
    """``(since, before)`` datetimes (or None) of a duration filter.

    ``value`` is ``sinceINTERVAL``, ``beforeINTERVAL`` or both, joined by a
    comma in any order; INTERVAL means that long ago (see
    :func:`zc.async.monitor.parse_interval`).
    """
    bounds = {}
    for part in value.split(','):
        word = next((word for word in ('since', 'before')
                     if part.lower().startswith(word)), None)
        try:
            if word is None or word in bounds:
                raise ValueError()
            bounds[word] = clock.now() - parse_interval(part[len(word):])
        except ValueError:
            raise ValueError(
                'bad value for filter "%s": %r (use sinceINTERVAL, '
                'beforeINTERVAL or both, comma-separated, where INTERVAL is '
                'like 1D2H3M4S)' % (name, value)) from None
    return bounds.get('since'), bounds.get('before')


def callable_name(call, dotted):
    """The bare name of ``call``, or its dotted name (module, class, name).
    """
    name = getattr(call, '__name__', None) or type(call).__name__
    if not dotted:
        return name
    owner = getattr(call, '__self__', None)
    if owner is not None and not isinstance(owner, types.ModuleType):
        cls = owner if isinstance(owner, type) else type(owner)
        return '%s.%s.%s' % (cls.__module__, cls.__qualname__, name)
    module = getattr(call, '__module__', None) or type(call).__module__
    return '%s.%s' % (module, getattr(call, '__qualname__', name))


def _callable_test(pattern):
    """A glob on the callable: its bare name, or dotted if ``pattern`` has
    a dot."""
    regex = re.compile(fnmatch.translate(pattern))
    dotted = '.' in pattern
    return lambda job: regex.match(
        callable_name(job.callable, dotted)) is not None


def _date_test(attribute, since, before):
    def test(job):
        value = getattr(job, attribute)
        return (value is not None
                and (since is None or value > since)
                and (before is None or value < before))
    return test


def glob_test(pattern):
    """A test of names by the glob ``pattern`` (None: every name)."""
    if pattern is None:
        return lambda name: True
    regex = re.compile(fnmatch.translate(pattern))
    return lambda name: regex.match(name) is not None


def queues(conn, pattern=None):
    """The queues of ``conn``'s database whose names match ``pattern``."""
    found = conn.root().get(interfaces.KEY)
    matches = glob_test(pattern)
    return [queue for name, queue in ([] if found is None else found.items())
            if matches(name)]


def _accepted(jobs, accepts):
    """The ``jobs`` that one of the predicates ``accepts`` accepts."""
    return (job for job in jobs if any(accept(job) for accept in accepts))


class JobQuery:
    """The jobs in ``states`` that pass the filters (see reference 2.14).

    ``callable``, ``queue`` and ``agent`` are globs; ``uuid`` is a
    dispatcher UUID or ``THIS``; the duration filters (:data:`DATE_FILTERS`)
    take ``sinceINTERVAL``, ``beforeINTERVAL`` or both.  ``agent`` and
    ``uuid`` choose the agents: agent-held and completed jobs must be
    theirs, and pending jobs must be accepted by the filter of one of them
    in the job's queue.
    """

    def __init__(self, states, callable=None, queue=None, agent=None,
                 uuid=None, **dates):
        self.states = parse_states(states)
        self.queue = queue
        self._agent_name = glob_test(agent)
        self._by_agent = agent is not None or uuid is not None
        self.uuid = None if uuid is None else parse_uuid(uuid)
        self._tests = []  # predicates every job must pass
        if callable is not None:
            self._tests.append(_callable_test(callable))
        self._completed_range = (None, None)  # (newest, oldest)
        for name, value in sorted(dates.items()):
            if name not in DATE_FILTERS:
                raise ValueError('unknown filter %r (filters: %s)'
                                 % (name, ', '.join(FILTERS)))
            since, before = parse_date_filter(name, value)
            self._tests.append(_date_test(DATE_FILTERS[name], since, before))
            if name == 'callbacks_completed':
                self._completed_range = (before, since)

    def jobs(self, conn):
        """An iterator over the matching jobs of ``conn``'s database."""
        found = queues(conn, self.queue)
        sources = []
        if 'pending' in self.states:
            sources.append(self._pending(found))
        held = self.states.intersection(HELD_STATES)
        if held:
            sources.append(self._held(found, held))
        if self.states.intersection(COMPLETED_STATES):
            sources.append(self._completed(found))
        return (job for job in itertools.chain(*sources)
                if all(test(job) for test in self._tests))

    def _agents(self, queue):
        """The agents of ``queue`` that the agent and uuid filters choose.
        """
        for uuid, agents in queue.dispatchers.items():
            if self.uuid is None or uuid == self.uuid:
                for name, agent in agents.items():
                    if self._agent_name(name):
                        yield agent

    def _pending(self, queues):
        sources = []
        for queue in queues:
            jobs = iter(queue)
            if self._by_agent:
                jobs = _accepted(jobs, self._acceptors(queue))
            sources.append(jobs)
        # Jobs that cannot be loaded here come first (see zc.async.unloadable).
        return utils.sortedmerge(sources, key=loadable.due_time)

    def _acceptors(self, queue):
        """The filters of the chosen agents of ``queue`` (as predicates)."""
        res = []
        for agent in self._agents(queue):
            if not interfaces.IFilterAgent.providedBy(agent):
                raise ValueError(
                    'cannot tell which pending jobs agent %r (dispatcher %s, '
                    'queue %r) would take: it has a chooser, not a filter'
                    % (agent.name, agent.parent.UUID, queue.name))
            res.append(agent.filter or (lambda job: True))
        return res

    def _held(self, queues, states):
        now = clock.now()
        jobs = [job for queue in queues for agent in self._agents(queue)
                for job in agent if status_word(job) in states]
        jobs.sort(key=lambda job: getattr(job, 'active_start', None) or now)
        return jobs

    def _completed(self, queues):
        newest, oldest = self._completed_range
        sources = [agent.completed.iter(newest, oldest)
                   for queue in queues for agent in self._agents(queue)]
        jobs = utils.sortedmerge(sources, key=lambda job: job.key)
        if 'succeeded' in self.states:
            return (job for job in jobs if not isFailure(job.result))
        if 'failed' in self.states:
            return (job for job in jobs if isFailure(job.result))
        return jobs
