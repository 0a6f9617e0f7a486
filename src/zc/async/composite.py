"""The steps of serial and parallel jobs, which run other jobs.

``zc.async.job.serial(a, b, c, postprocess=p)`` and
``zc.async.job.parallel(a, b, c, postprocess=p)`` return a composite
:class:`~zc.async.job.Job` whose callable is one of the schedulers here
(:func:`_schedule_serial`, :func:`_schedule_parallel`).  Put in a queue
and run, the composite puts its component jobs in the same queue, one
after another (serial: each component's callback queues the next) or all
at once (parallel: each component's callback checks whether all are
done).  When the components are done, the postprocess job is queued with
the component jobs appended to its arguments; the composite's result is
the postprocess result.  The default postprocess returns the tuple of
component jobs.

The composite's ``args`` are its components and ``kwargs['postprocess']``
its postprocess job; jobs appended to ``args`` before the last component
finishes are run too.  Scheduling is safe to repeat: after an interruption
the composite runs again, skips components already under way and does not
queue a postprocess that was queued before.

The functions keep 1.5's dotted names (``zc.async.job._queue_next``, ...),
which stored jobs refer to; ``zc.async.job`` provides them, so this module
does not import it: the jobs these steps make are of the composite job's
own class (:func:`_new_job`).
"""
from . import interfaces
from .threadlocal import local


def _transparent(*results):
    """The default postprocess: return the component jobs as a tuple."""
    return results


def _schedule_serial(*jobs, **kw):
    """The callable of a serial job: queue the first component not yet
    started; the composite then waits for the returned postprocess."""
    _queue_next(_running_composite())
    return kw['postprocess']


def _schedule_parallel(*jobs, **kw):
    """The callable of a parallel job: queue every component not yet
    started; the composite then waits for the returned postprocess."""
    _queue_all(_running_composite())
    return kw['postprocess']


def _running_composite():
    main_job = local.job
    if main_job is None or main_job.queue is None:
        raise ValueError('serial and parallel jobs must be run from a queue, '
                         'where they put their component jobs')
    return main_job


def _queue_next(main_job, ix=0, prior_result=None):
    """Queue the first component of ``main_job`` from index ``ix`` that has
    not started, with a callback that continues from the one after it.

    A component already under way ends the walk (its own callback goes on);
    when every component is done, the postprocess is queued.  A callback
    receives the finished component's result as ``prior_result``; the
    postprocess reads the results from the jobs instead.
    """
    queue = main_job.queue
    for index in range(ix, len(main_job.args)):
        job = _component(main_job, index)
        status = job.status
        if status == interfaces.COMPLETED:
            continue
        if status == interfaces.NEW:
            queue.put(job)
            job.addCallback(_new_job(main_job, _queue_next, main_job,
                                     index + 1))
        return
    _queue_postprocess(main_job, queue)


def _queue_all(main_job, prior_result=None):
    """Queue each component of ``main_job`` that has not started, with a
    callback that comes back here; when all have results, queue the
    postprocess.  ``prior_result`` is as for :func:`_queue_next`."""
    queue = main_job.queue
    done = True
    for index in range(len(main_job.args)):
        job = _component(main_job, index)
        status = job.status
        if status == interfaces.NEW:
            queue.put(job)
            job.addCallback(_new_job(main_job, _queue_all, main_job))
        if status not in (interfaces.CALLBACKS, interfaces.COMPLETED):
            done = False
    if done:
        _queue_postprocess(main_job, queue)


def _component(main_job, index):
    """Component ``index`` as a job (callables appended later get one)."""
    job = main_job.args[index]
    if not interfaces.IJob.providedBy(job):
        adapted = interfaces.IJob(job, None)
        job = main_job.args[index] = (
            _new_job(main_job, job) if adapted is None else adapted)
    return job


def _new_job(main_job, *args):
    """A new job of ``main_job``'s class, ``Job(*args)``: a
    :class:`zc.async.job.Job`, which serial and parallel make."""
    return type(main_job)(*args)


def _queue_postprocess(main_job, queue):
    postprocess = main_job.kwargs['postprocess']
    if postprocess.status == interfaces.NEW:  # not queued by an earlier run
        postprocess.args.extend(main_job.args)
        queue.put(postprocess)


# 1.5 defined these in zc.async.job: stored jobs and reprs name them there.
for _function in (_transparent, _schedule_serial, _schedule_parallel,
                  _queue_next, _queue_all):
    _function.__module__ = 'zc.async.job'
del _function
