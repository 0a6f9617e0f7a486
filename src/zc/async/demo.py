"""A Monte-Carlo estimate of pi as a composite job: the ``zc-async demo`` work.

:func:`estimate_pi` builds a ``parallel`` job whose components each call
:func:`generate_sample` (reporting progress through a live annotation) and
whose serial post-process, :func:`process_samples`, combines their counts.
The functions live in this importable module so that the jobs' pickles
resolve in any process that runs them.
"""
import random

from . import local
from .job import Job
from .job import parallel

# The live annotation a running sample job keeps up to date: the fraction
# of its points thrown so far (0.0 .. 1.0).
PROGRESS = 'zc.async.demo.progress'

# How many progress reports one sample job sends.
PROGRESS_STEPS = 10


def generate_sample(size=100000):
    """Throw ``size`` random points at the unit square.

    Returns ``(count, size)``, ``count`` being the points inside the quarter
    circle of radius 1.  Inside a dispatcher-run job, progress is published
    as the live annotation :data:`PROGRESS`.
    """
    rng = random.Random()
    count = done = 0
    step = max(1, size // PROGRESS_STEPS)
    while done < size:
        chunk = min(step, size - done)
        count += sum(rng.random() ** 2 + rng.random() ** 2 <= 1.0
                     for _ in range(chunk))
        done += chunk
        _report_progress(done / size)
    return count, size


def _report_progress(fraction):
    if local.getJob() is not None and local.getDispatcher() is not None:
        local.setLiveAnnotation(PROGRESS, fraction)


def process_samples(*sample_jobs):
    """Combine the finished :func:`generate_sample` jobs into pi's estimate."""
    failed = [job for job in sample_jobs if not isinstance(job.result, tuple)]
    if failed:
        raise ValueError(
            'cannot estimate pi: %d of %d sample jobs did not return'
            ' (count, size): %r' % (len(failed), len(sample_jobs), failed))
    count = sum(job.result[0] for job in sample_jobs)
    size = sum(job.result[1] for job in sample_jobs)
    return 4.0 * count / size


def split(samples, jobs):
    """Split ``samples`` points into ``jobs`` sizes differing by at most 1."""
    if jobs < 1 or samples < jobs:
        raise ValueError(
            'need at least one job and one sample per job, got %d samples'
            ' for %d jobs' % (samples, jobs))
    size, extra = divmod(samples, jobs)
    return [size + (i < extra) for i in range(jobs)]


def estimate_pi(samples=1000000, jobs=4):
    """A parallel job estimating pi from ``samples`` points in ``jobs`` parts.

    Its ``args`` are the sample jobs; its result is the estimate.
    """
    return parallel(*[Job(generate_sample, size)
                      for size in split(samples, jobs)],
                    postprocess=process_samples)
