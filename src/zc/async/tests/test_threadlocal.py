"""Tests of zc.async.threadlocal: the ``zc.async.local`` a job can ask."""
import threading
import unittest

import transaction

import zc.asynchronous
import zc.asynchronous.dispatcher
import zc.asynchronous.job
import zc.asynchronous.utils
import zc.asynchronous.testing as testing
import zc.asynchronous.threadlocal as threadlocal
from zc.asynchronous import local
from zc.asynchronous.tests.live import DispatcherTestCase


def annotate_and_read():
    """Set a live annotation, then read it back through the reactor."""
    local.setLiveAnnotation('answer', 42)
    return local.getLiveAnnotation('answer')


def read_missing():
    return local.getLiveAnnotation('nothing', 'default', timeout=0.1,
                                   poll=0.02)


def annotate_other(other):
    local.setLiveAnnotation('note', 'from a sibling', job=other)
    return local.getLiveAnnotation('note', timeout=5, poll=0.02, job=other)


class LocalTests(unittest.TestCase):

    def tearDown(self):
        local.job = local.dispatcher = local.name = None

    def test_package_exposes_the_local(self):
        self.assertIs(zc.asynchronous.local, threadlocal.local)
        self.assertIsInstance(local, threadlocal.Local)
        self.assertIsInstance(local, threading.local)

    def test_outside_a_job_everything_is_none(self):
        self.assertIsNone(local.getJob())
        self.assertIsNone(local.getQueue())
        self.assertIsNone(local.getDispatcher())
        self.assertIsNone(local.getReactor())
        self.assertIsNone(local.getAgentName())

    def test_values_are_per_thread(self):
        local.job, local.name = 'job', 'main'
        seen = []
        thread = threading.Thread(
            target=lambda: seen.append((local.getJob(), local.getAgentName())))
        thread.start()
        thread.join()
        self.assertEqual(seen, [(None, None)])
        self.assertEqual((local.getJob(), local.getAgentName()),
                         ('job', 'main'))

    def test_live_annotations_need_a_dispatcher_run_job(self):
        for job in (None, 'a job'):
            local.job = job
            with self.assertRaises(ValueError) as raised:
                local.setLiveAnnotation('a', 1)
            self.assertEqual(str(raised.exception), 'not initialized')
            with self.assertRaises(ValueError) as raised:
                local.getLiveAnnotation('a')
            self.assertEqual(str(raised.exception), 'not initialized')

    def test_result(self):
        result = threadlocal.Result()
        self.assertFalse(result.ready.is_set())
        result.set(3)
        self.assertTrue(result.ready.is_set())
        self.assertEqual(result.value, 3)


class VirtualTimeAnnotationTests(DispatcherTestCase):
    """Live annotations go through the reactor, even a virtual one."""

    def test_set_then_get(self):
        reactor = testing.Reactor()
        reactor.start()
        dispatcher = zc.asynchronous.dispatcher.Dispatcher(self.db, reactor)
        dispatcher.activate()
        job = self.put(annotate_and_read)
        try:
            reactor.wait_for(job)
        finally:
            testing.tear_down_dispatcher(dispatcher)
        self.assertEqual(job.result, 42)
        self.assertEqual(job.annotations['answer'], 42)


class LiveAnnotationTests(DispatcherTestCase):

    def test_missing_annotation_gives_the_default_after_the_timeout(self):
        self.start()
        job = self.put(read_missing)
        self.assertEqual(testing.wait_for_result(job), 'default')

    def test_annotating_another_job(self):
        self.start()
        other = self.queue.put(zc.asynchronous.job.Job(int), begin_after=(
            zc.asynchronous.utils.now().replace(year=2100)))
        transaction.commit()
        job = self.put(annotate_other, other)
        self.assertEqual(testing.wait_for_result(job), 'from a sibling')
        transaction.begin()
        self.assertEqual(other.annotations['note'], 'from a sibling')
