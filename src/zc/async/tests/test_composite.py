"""Tests for zc.async.composite: how serial and parallel jobs schedule.

The jobs run in a real queue and agent; :meth:`CompositeTests.drain` plays
one worker thread: claim a job, run it (its callbacks run inline), repeat.
"""
import logging
import operator

import transaction

import zc.asynchronous
import zc.asynchronous.job
from zc.asynchronous import interfaces
from zc.asynchronous.job import Job, serial, parallel
from zc.asynchronous.tests.test_job import DatabaseTestCase, calls


def value(result):
    calls.append(result)
    return result


def results(*jobs):
    return tuple(job.result for job in jobs)


def tagged_results(tag, *jobs):
    return tag, tuple(job.result for job in jobs)


def total(*jobs):
    return sum(job.result for job in jobs)


def tagged_total(tag, *jobs):
    return tag, sum(job.result for job in jobs)


def result_list(*jobs):
    return [job.result for job in jobs]


def failing():
    raise ValueError('component failed')


def describe(*jobs):
    return [('failed' if zc.asynchronous.job.isFailure(job.result)
             else job.result) for job in jobs]


def extend_composite(name):
    """A component that adds a job to the composite stored in the root."""
    calls.append(name)
    composite = zc.asynchronous.local.getJob()._p_jar.root()['composite']
    composite.args.append(Job(value, 'third'))
    return name


def extend_composite_in_callback(result):
    root = zc.asynchronous.local.getJob()._p_jar.root()
    root['composite'].args.append(Job(value, 'third'))


class CompositeTests(DatabaseTestCase):

    def setUp(self):
        super().setUp()
        self.queue, self.agent = self.make_queue()
        self.agent.size = 10

    def put(self, composite):
        self.root['composite'] = composite
        job = self.queue.put(composite)
        transaction.commit()
        return job

    def run_next(self):
        """Claim and run one job; return it (None if none was claimable)."""
        job = self.agent.claimJob()
        transaction.commit()
        if job is not None:
            job()
        return job

    def drain(self, limit=50):
        ran = []
        for _ in range(limit):
            job = self.run_next()
            if job is None:
                return ran
            ran.append(job)
        self.fail('jobs kept coming: %r' % (ran,))

    def interrupt(self, job):
        """Do what cleaning a dead dispatcher's agent does to an ACTIVE job.
        """
        self.assertEqual(job.status, interfaces.ACTIVE)
        self.agent.pull(self.agent.index(job))
        self.queue.put(job.handleInterrupt,
                       retry_policy_factory=zc.asynchronous.job
                       .RetryCommonForever,
                       failure_log_level=logging.CRITICAL)
        transaction.commit()


class SerialTests(CompositeTests):

    def test_components_run_one_after_another(self):
        composite = self.put(serial(Job(value, 0), Job(value, 1),
                                    Job(value, 2), postprocess=results))
        self.run_next()
        # Only the first component is queued; the composite waits.
        self.assertEqual(list(self.queue), [composite.args[0]])
        self.assertEqual(composite.status, interfaces.ACTIVE)
        self.assertEqual(composite.args[1].status, interfaces.NEW)
        self.drain()
        self.assertEqual(calls, [0, 1, 2])
        self.assertEqual(composite.status, interfaces.COMPLETED)
        self.assertEqual(composite.result, (0, 1, 2))
        self.assertEqual(len(self.agent), 0)

    def test_postprocess_job_gets_its_own_arguments_first(self):
        composite = self.put(serial(Job(value, 0), Job(value, 1),
                                    Job(value, 2),
                                    postprocess=Job(tagged_results, 'foo')))
        self.drain()
        self.assertEqual(composite.result, ('foo', (0, 1, 2)))

    def test_default_postprocess_returns_the_component_jobs(self):
        first, second = Job(value, 'a'), Job(value, 'b')
        composite = self.put(serial(first, second))
        self.drain()
        self.assertEqual(composite.result, (first, second))

    def test_args_and_postprocess_can_be_inspected(self):
        first = Job(value, 'a')
        composite = serial(first, value, postprocess=results)
        self.assertIs(composite.args[0], first)
        self.assertTrue(interfaces.IJob.providedBy(composite.args[1]))
        self.assertIs(composite.args[1].callable, value)
        postprocess = composite.kwargs['postprocess']
        self.assertIs(postprocess.callable, results)

    def test_failed_components_reach_the_postprocess(self):
        composite = self.put(serial(Job(value, 1), failing, Job(value, 3),
                                    postprocess=describe))
        self.drain()
        self.assertEqual(composite.result, [1, 'failed', 3])

    def test_jobs_appended_before_start_run_too(self):
        composite = serial(Job(value, 'first'), postprocess=result_list)
        composite.args.append(Job(value, 'second'))
        self.put(composite)
        self.drain()
        self.assertEqual(composite.result, ['first', 'second'])

    def test_a_running_component_can_add_work(self):
        composite = self.put(serial(Job(value, 'first'),
                                    Job(extend_composite, 'second'),
                                    postprocess=result_list))
        self.drain()
        self.assertEqual(composite.result, ['first', 'second', 'third'])

    def test_a_callback_of_a_waiting_component_can_add_work(self):
        second = Job(value, 'second')
        second.addCallback(extend_composite_in_callback)
        composite = self.put(serial(Job(value, 'first'), second,
                                    postprocess=result_list))
        self.drain()
        self.assertEqual(composite.result, ['first', 'second', 'third'])

    def test_rerun_after_interruption_skips_started_components(self):
        composite = self.put(serial(Job(value, 'a'), Job(value, 'b'),
                                    Job(value, 'c'), postprocess=result_list))
        self.run_next()  # the composite: queues a
        self.run_next()  # a: its callback queues b
        self.interrupt(composite)
        self.drain()  # b, the interrupt handler, the composite again, ...
        self.assertEqual(calls, ['a', 'b', 'c'])
        self.assertEqual(composite.result, ['a', 'b', 'c'])
        self.assertEqual(composite.getRetryPolicy().data['interruptions'], 1)
        self.assertEqual(self.logged(logging.CRITICAL), [])
        self.assertEqual(self.logged(logging.ERROR), [])

    def test_rerun_does_not_requeue_the_postprocess(self):
        composite = self.put(serial(Job(value, 'a'), postprocess=result_list))
        self.run_next()  # the composite
        self.run_next()  # a: queues the postprocess
        postprocess = composite.kwargs['postprocess']
        self.assertEqual(postprocess.status, interfaces.PENDING)
        self.interrupt(composite)
        self.drain()
        self.assertEqual(composite.result, ['a'])
        self.assertEqual(list(postprocess.args), list(composite.args))

    def test_only_postprocess_keyword(self):
        with self.assertRaisesRegex(
                TypeError,
                '^only accepts one keyword argument, ``postprocess``'):
            serial(Job(value, 1), post=results)

    def test_must_run_from_a_queue(self):
        composite = self.store(serial(Job(value, 1)))
        composite()
        self.assertTrue(composite.result.check(ValueError))
        self.assertIn('must be run from a queue',
                      composite.result.getErrorMessage())


class ParallelTests(CompositeTests):

    def test_components_are_queued_at_once(self):
        composite = self.put(parallel(Job(operator.mul, 7, 1),
                                      Job(operator.mul, 7, 2),
                                      Job(operator.mul, 7, 3),
                                      postprocess=total))
        self.run_next()
        self.assertEqual(list(self.queue), list(composite.args))
        self.drain()
        self.assertEqual(composite.result, 42)
        self.assertEqual(composite.status, interfaces.COMPLETED)
        self.assertEqual(len(self.agent), 0)

    def test_postprocess_job_gets_its_own_arguments_first(self):
        composite = self.put(parallel(Job(operator.mul, 7, 1),
                                      Job(operator.mul, 7, 2),
                                      Job(operator.mul, 7, 3),
                                      postprocess=Job(tagged_total, 'foo')))
        self.drain()
        self.assertEqual(composite.result, ('foo', 42))

    def test_postprocess_waits_for_every_component(self):
        composite = self.put(parallel(Job(value, 1), Job(value, 2),
                                      postprocess=results))
        self.run_next()  # the composite
        self.run_next()  # the first component
        postprocess = composite.kwargs['postprocess']
        self.assertEqual(postprocess.status, interfaces.NEW)
        self.run_next()  # the second: now the postprocess is queued
        self.assertEqual(postprocess.status, interfaces.PENDING)
        self.drain()
        self.assertEqual(composite.result, (1, 2))

    def test_failed_components_reach_the_postprocess(self):
        composite = self.put(parallel(failing, Job(value, 2),
                                      postprocess=describe))
        self.drain()
        self.assertEqual(composite.result, ['failed', 2])

    def test_a_running_component_can_add_work(self):
        composite = self.put(parallel(Job(value, 'first'),
                                      Job(extend_composite, 'second'),
                                      postprocess=result_list))
        self.drain()
        self.assertEqual(composite.result, ['first', 'second', 'third'])

    def test_jobs_appended_before_start_run_too(self):
        composite = parallel(Job(value, 'first'), postprocess=result_list)
        composite.args.append(Job(value, 'second'))
        self.put(composite)
        self.drain()
        self.assertEqual(composite.result, ['first', 'second'])

    def test_rerun_after_interruption_queues_nothing_twice(self):
        composite = self.put(parallel(Job(value, 'a'), Job(value, 'b'),
                                      postprocess=result_list))
        self.run_next()  # the composite: queues a and b
        self.run_next()  # a
        self.interrupt(composite)
        self.drain()
        self.assertEqual(sorted(calls), ['a', 'b'])
        self.assertEqual(composite.result, ['a', 'b'])
        self.assertEqual(self.logged(logging.CRITICAL), [])

    def test_only_postprocess_keyword(self):
        with self.assertRaisesRegex(
                TypeError,
                '^only accepts one keyword argument, ``postprocess``'):
            parallel(Job(value, 1), postprocess=results, other=1)
