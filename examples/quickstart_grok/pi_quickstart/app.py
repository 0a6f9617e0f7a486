"""The application: a page to start estimates of pi and follow them.

``PiApp`` keeps the recent jobs; its pages are ``index`` (start a job, list
the recent ones), ``job`` (one job's progress and result, refreshing itself
until the job is done), and the form handlers ``start`` and ``stop``.
"""
import grok
import persistent.list
import ZODB.utils
import zope.publisher.interfaces

import zc.asynchronous.interfaces
from zc.asynchronous.interfaces import (
    NEW, PENDING, ASSIGNED, ACTIVE, CALLBACKS, COMPLETED)
from zc.asynchronous.job import Job

from . import pi

MAX_SAMPLES = 10 ** 9

STATES = {NEW: 'new', PENDING: 'waiting', ASSIGNED: 'waiting',
          ACTIVE: 'running', CALLBACKS: 'finishing', COMPLETED: 'done'}


class PiApp(grok.Application, grok.Container):
    """Estimates pi in the background; remembers the recent jobs."""

    keep = 10  # how many recent jobs are listed

    def __init__(self):
        super().__init__()
        self.jobs = persistent.list.PersistentList()  # newest first

    def start(self, samples):
        """Put a job estimating pi from ``samples`` points; return it."""
        queue = zc.asynchronous.interfaces.IQueue(self)
        job = queue.put(Job(pi.estimate, samples))
        self.jobs.insert(0, job)
        del self.jobs[self.keep:]
        return job

    def find(self, key):
        """The recent job whose key (see :func:`key`) is ``key``, or None."""
        for job in self.jobs:
            if str(key_of(job)) == key:
                return job
        return None


def key_of(job):
    """A job's key in URLs: its object id."""
    return ZODB.utils.u64(job._p_oid)


def describe(job):
    """What the pages show of ``job``."""
    samples = job.args[0]
    done, total = job.annotations.get('progress', (0, samples))
    info = {'key': key_of(job), 'samples': samples, 'done': done,
            'state': STATES.get(job.status, job.status),
            'percent': int(100 * done / total), 'finished': False,
            'estimate': None, 'used': None, 'error': None,
            'stopping': bool(job.annotations.get('stop'))}
    if job.status == COMPLETED:
        info['finished'] = True
        if isinstance(job.result, tuple):
            info['estimate'] = '%.6f' % job.result[0]
            # The last live annotation may land after the job completed.
            info['used'] = info['done'] = job.result[1]
            info['percent'] = int(100 * job.result[1] / total)
        else:
            info['state'] = 'failed'
            info['error'] = job.result.getErrorMessage()
    return info


class Index(grok.View):
    """The start page: the form, and the recent jobs."""

    grok.context(PiApp)

    def jobs(self):
        return [describe(job) for job in self.context.jobs]


class Start(grok.View):
    """Start a job (the form's action) and show its page."""

    grok.context(PiApp)

    def update(self, samples=''):
        try:
            samples = int(samples)
        except ValueError:
            samples = 0
        if not 0 < samples <= MAX_SAMPLES:
            self.redirect(self.url(self.context))
            return
        job = self.context.start(samples)
        self.redirect(self.url(self.context, 'job',
                               data={'key': key_of(job)}))

    def render(self):
        return ''


class JobPage(grok.View):
    """One job: state, progress, and result."""

    grok.context(PiApp)
    grok.name('job')

    def update(self, key=''):
        self.job = self.context.find(key)
        if self.job is None:
            raise zope.publisher.interfaces.NotFound(
                self.context, key, self.request)
        self.info = describe(self.job)


class Stop(grok.View):
    """Ask a running job to stop early; show its page."""

    grok.context(PiApp)

    def update(self, key=''):
        job = self.context.find(key)
        if job is not None and job.status != COMPLETED:
            job.annotations['stop'] = True
        self.redirect(self.url(self.context, 'job', data={'key': key}))

    def render(self):
        return ''


def install(root_folder, name='pi'):
    """Add a ``PiApp`` named ``name`` to ``root_folder`` unless there is
    one; return it."""
    if name not in root_folder:
        root_folder[name] = PiApp()
    return root_folder[name]
