"""Tests of zc.async.agent (reference sections 1.6, 2.4, 3.11 and 3.14)."""
import operator
import os
import shutil
import tempfile
import unittest
import uuid

import transaction
import zc.queue
import ZODB
import ZODB.FileStorage
import ZODB.POSException
import zope.component
import zope.component.event  # noqa: F401  (routes events to handlers)
import zope.interface.verify

import zc.asynchronous.agent
import zc.asynchronous.interfaces as interfaces
import zc.asynchronous.job
import zc.asynchronous.legacy
import zc.asynchronous.queue
import zc.asynchronous.utils
from zc.asynchronous.tests.test_queue import (
    Clocked, DBTestCase, work)

from zc.asynchronous.agentjobs import MOVE_AFTER

Agent = zc.asynchronous.agent.Agent
Job = zc.asynchronous.job.Job


# Module-level filters and choosers: agents store them by reference.

def only_mul(job):
    return job.callable is operator.mul


def choose_last(agent):
    """A chooser preferring the most recently queued job."""
    queue = agent.queue
    return queue.pull(-1) if len(queue) else None


class AgentTestCase(DBTestCase):
    """Base: a registered, activated dispatcher record with agent 'main'."""

    def setUp(self):
        super().setUp()
        self.uuid = uuid.uuid1()
        self.queue.dispatchers.register(self.uuid)
        self.record = self.queue.dispatchers[self.uuid]
        self.agent = self.record['main'] = Agent()
        self.record.activate()


class InterfaceTests(AgentTestCase):

    def test_agent_provides_IAgent_and_IFilterAgent(self):
        self.assertTrue(
            zope.interface.verify.verifyObject(interfaces.IAgent, self.agent))
        self.assertTrue(zope.interface.verify.verifyObject(
            interfaces.IFilterAgent, self.agent))

    def test_completed_provides_ICompletedCollection(self):
        self.assertTrue(zope.interface.verify.verifyObject(
            interfaces.ICompletedCollection, self.agent.completed))
        self.assertIs(self.agent.completed.__parent__, self.agent)

    def test_dotted_name(self):
        self.assertEqual(Agent.__module__, 'zc.async.agent')


class ConstructionTests(AgentTestCase):

    def test_defaults(self):
        agent = Agent()
        self.assertIsNone(agent.chooser)
        self.assertIsNone(agent.filter)
        self.assertEqual(agent.size, 3)
        self.assertEqual(len(agent), 0)
        self.assertFalse(agent)
        self.assertIsNone(agent.name)
        self.assertIsNone(agent.parent)
        self.assertIsNone(agent.queue)

    def test_name_parent_and_queue_come_from_the_record(self):
        self.assertEqual(self.agent.name, 'main')
        self.assertIs(self.agent.parent, self.record)
        self.assertIs(self.agent.queue, self.queue)

    def test_chooser_and_filter_cannot_both_be_set(self):
        message = 'cannot set both chooser and filter to non-None'
        with self.assertRaisesRegex(ValueError, message):
            Agent(choose_last, only_mul)
        agent = Agent(filter=only_mul)
        with self.assertRaisesRegex(ValueError, message):
            agent.chooser = choose_last
        self.assertIsNone(agent.chooser)
        agent = Agent(chooser=choose_last)
        with self.assertRaisesRegex(ValueError, message):
            agent.filter = only_mul
        self.assertIsNone(agent.filter)

    def test_IFilterAgent_is_provided_exactly_without_a_chooser(self):
        self.assertTrue(interfaces.IFilterAgent.providedBy(Agent()))
        agent = Agent(chooser=choose_last)
        self.assertFalse(interfaces.IFilterAgent.providedBy(agent))
        self.assertTrue(interfaces.IAgent.providedBy(agent))
        agent.chooser = None
        self.assertTrue(interfaces.IFilterAgent.providedBy(agent))
        agent.filter = only_mul
        self.assertTrue(interfaces.IFilterAgent.providedBy(agent))
        agent.filter = None
        agent.chooser = choose_last
        self.assertFalse(interfaces.IFilterAgent.providedBy(agent))

    def test_settings_survive_a_commit(self):
        self.record['chooser'] = Agent(chooser=choose_last, size=1)
        self.agent.filter = only_mul
        self.commit()
        tm = transaction.TransactionManager()
        conn = self.db.open(tm)
        self.addCleanup(conn.close)
        record = conn.root()[interfaces.KEY][''].dispatchers[self.uuid]
        self.assertIs(record['main'].filter, only_mul)
        self.assertTrue(interfaces.IFilterAgent.providedBy(record['main']))
        self.assertIs(record['chooser'].chooser, choose_last)
        self.assertEqual(record['chooser'].size, 1)
        self.assertFalse(
            interfaces.IFilterAgent.providedBy(record['chooser']))

    def test_chooseFirst_is_re_exported_from_legacy(self):
        self.assertIs(zc.asynchronous.agent.chooseFirst,
                      zc.asynchronous.legacy.chooseFirst)


class ClaimJobTests(AgentTestCase):

    def test_claims_the_first_job_and_holds_it(self):
        first = self.queue.put(work)
        self.queue.put(work)
        self.assertIs(self.agent.claimJob(), first)
        self.assertIs(first.parent, self.agent)
        self.assertEqual(first.status, interfaces.ASSIGNED)
        self.assertIs(first.agent, self.agent)
        self.assertEqual(list(self.agent), [first])
        self.assertEqual(len(self.queue), 1)

    def test_empty_queue_gives_None(self):
        self.assertIsNone(self.agent.claimJob())
        self.assertEqual(len(self.agent), 0)

    def test_size_caps_the_held_jobs(self):
        jobs = [self.queue.put(work) for i in range(4)]
        self.assertEqual([self.agent.claimJob() for i in range(4)],
                         jobs[:3] + [None])
        self.assertEqual(len(self.queue), 1)
        self.agent.size = 4
        self.assertIs(self.agent.claimJob(), jobs[3])

    def test_no_claims_unless_activated(self):
        self.queue.put(work)
        self.record.deactivate()
        self.assertIsNone(self.agent.claimJob())
        self.assertEqual(len(self.queue), 1)

    def test_no_claims_when_dead(self):
        self.queue.put(work)
        self.tick(seconds=61)
        self.assertTrue(self.record.dead)
        self.assertIsNone(self.agent.claimJob())
        self.assertEqual(len(self.queue), 1)

    def test_filter_selects_jobs(self):
        self.queue.put(work)
        mul = self.queue.put(Job(operator.mul, 6, 7))
        self.agent.filter = only_mul
        self.assertIs(self.agent.claimJob(), mul)
        self.assertIsNone(self.agent.claimJob())

    def test_chooser_claims_for_the_agent(self):
        self.queue.put(work)
        last = self.queue.put(work)
        self.agent.chooser = choose_last
        self.assertIs(self.agent.claimJob(), last)
        self.assertIs(last.parent, self.agent)

    def test_legacy_chooseFirst_chooser(self):
        first = self.queue.put(work)
        self.queue.put(work)
        self.agent.chooser = zc.asynchronous.agent.chooseFirst
        self.assertIs(self.agent.claimJob(), first)

    def test_subclasses_may_override__choose(self):
        class Picky(Agent):
            def _choose(self):
                return self.queue.claim(lambda job: job.args == [2])
        self.record['picky'] = picky = Picky()
        self.queue.put(Job(work, 1))
        two = self.queue.put(Job(work, 2))
        self.assertIs(picky.claimJob(), two)

    def test_get_is_claimJob(self):
        job = self.queue.put(work)
        self.assertIs(self.agent.get(), job)


class HeldJobsTests(AgentTestCase):

    def setUp(self):
        super().setUp()
        self.jobs = [self.queue.put(work) for i in range(3)]
        for i in range(3):
            self.agent.claimJob()

    def test_sequence_api(self):
        self.assertEqual(len(self.agent), 3)
        self.assertTrue(self.agent)
        self.assertEqual(list(self.agent), self.jobs)
        self.assertIs(self.agent[0], self.jobs[0])
        self.assertIs(self.agent[-1], self.jobs[2])

    def test_index_is_by_identity(self):
        self.assertEqual(self.agent.index(self.jobs[1]), 1)
        with self.assertRaises(ValueError):
            self.agent.index(Job(work))

    def test_remove_and_delitem_keep_the_parent(self):
        self.agent.remove(self.jobs[1])
        del self.agent[0]
        self.assertEqual(list(self.agent), [self.jobs[2]])
        self.assertIs(self.jobs[1].parent, self.agent)
        with self.assertRaises(ValueError):
            self.agent.remove(self.jobs[1])

    def test_pull_clears_the_parent(self):
        self.assertIs(self.agent.pull(), self.jobs[0])
        self.assertIsNone(self.jobs[0].parent)
        self.assertIs(self.agent.pull(-1), self.jobs[2])
        self.assertEqual(list(self.agent), [self.jobs[1]])
        with self.assertRaises(IndexError):
            self.agent.pull(3)

    def test_jobCompleted_moves_the_job_to_completed(self):
        job = self.jobs[1]
        self.commit()
        job()  # a job in an agent reports its completion itself
        self.assertEqual(job.status, interfaces.COMPLETED)
        self.assertEqual(list(self.agent), [self.jobs[0], self.jobs[2]])
        self.assertEqual(list(self.agent.completed), [job])
        self.assertIs(job.parent, self.agent)
        self.assertEqual(job.initial_callbacks_end,
                         zc.asynchronous.utils.now())

    def test_completed_is_newest_first_and_kept_about_a_week(self):
        self.agent.jobCompleted(self.jobs[0])
        self.tick(hours=1)
        self.agent.jobCompleted(self.jobs[1])
        self.assertEqual(list(self.agent.completed),
                         [self.jobs[1], self.jobs[0]])
        self.assertEqual(len(self.agent), 1)
        self.tick(days=9)
        self.agent.jobCompleted(self.jobs[2])
        self.assertEqual(list(self.agent.completed), [self.jobs[2]])


class ConcurrencyTests(Clocked):
    """A worker's completion and a dispatcher's claim, at once, on a
    FileStorage: neither commit may conflict."""

    def setUp(self):
        super().setUp()
        self.dir = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.dir)
        self.db = ZODB.DB(ZODB.FileStorage.FileStorage(
            os.path.join(self.dir, 'Data.fs')))
        self.addCleanup(self.db.close)
        conn, tm = self.open()
        queues = conn.root()[interfaces.KEY] = (
            zc.asynchronous.queue.Queues())
        queue = queues[''] = zc.asynchronous.queue.Queue()
        self.uuid = uuid.uuid1()
        queue.dispatchers.register(self.uuid)
        queue.dispatchers[self.uuid]['main'] = Agent()
        queue.dispatchers[self.uuid].activate()
        tm.commit()
        queue.put(work)
        queue.put(work)
        queue.dispatchers[self.uuid]['main'].claimJob()
        tm.commit()

    def open(self):
        tm = transaction.TransactionManager()
        conn = self.db.open(tm)
        self.addCleanup(conn.close)
        self.addCleanup(tm.abort)
        return conn, tm

    def agent(self, conn):
        return conn.root()[interfaces.KEY][''].dispatchers[self.uuid]['main']

    def test_completion_and_claim_do_not_conflict(self):
        (c1, tm1), (c2, tm2) = self.open(), self.open()
        worker_agent = self.agent(c1)
        worker_agent.jobCompleted(worker_agent[0])
        claimed = self.agent(c2).claimJob()
        self.assertIsNotNone(claimed)
        tm1.commit()
        tm2.commit()
        conn, tm = self.open()
        agent = self.agent(conn)
        self.assertEqual(len(agent), 1)
        self.assertEqual(agent[0]._p_oid, claimed._p_oid)
        self.assertEqual(len(agent.completed), 1)


class CompletionRecordTests(ConcurrencyTests):
    """An agent's jobs record (zc.async.agentjobs): completions write it
    alone, and the completed collection reads the jobs waiting in it."""

    def setUp(self):
        super().setUp()
        conn, tm = self.open()
        queue = conn.root()[interfaces.KEY]['']
        for _ in range(2 * MOVE_AFTER):
            queue.put(work)
        self.agent(conn).size = 100
        tm.commit()

    def complete(self, agent, count):
        """Claim and complete ``count`` jobs in ``agent``, one tick apart;
        return them, oldest first."""
        jobs = []
        for _ in range(count):
            job = agent.claimJob()
            self.tick(seconds=1)
            agent.jobCompleted(job)
            jobs.append(job)
        return jobs

    def test_completed_jobs_wait_then_move_in_one_go(self):
        conn, tm = self.open()
        agent = self.agent(conn)
        completed = agent.completed
        first = self.complete(agent, MOVE_AFTER - 1)
        tm.commit()
        self.assertEqual(len(completed._buckets[0]), 0)  # nothing moved
        self.assertEqual(agent._data.done_count(), MOVE_AFTER - 1)
        self.assertEqual(len(completed), MOVE_AFTER - 1)
        self.assertEqual(list(completed), first[::-1])
        self.assertIs(completed.first(), first[-1])
        self.assertIs(completed.last(), first[0])
        for job in first:
            self.assertIs(job.parent, agent)
            self.assertEqual(job.initial_callbacks_end,
                             zc.asynchronous.utils.long_to_dt(job.key))
        # One more completion moves them all, and itself.
        last = self.complete(agent, 1)
        self.assertEqual(agent._data.done_count(), 0)
        self.assertEqual(len(completed._buckets[0]), MOVE_AFTER)
        self.assertEqual(list(completed), (first + last)[::-1])
        self.assertEqual(len(completed), MOVE_AFTER)
        # Moved and waiting ones read together, by time.
        later = self.complete(agent, 2)
        self.assertEqual(list(completed), (first + last + later)[::-1])
        self.assertEqual(len(completed), MOVE_AFTER + 2)
        start = zc.asynchronous.utils.long_to_dt(later[0].key)
        stop = zc.asynchronous.utils.long_to_dt(last[0].key)
        self.assertEqual(list(completed.iter(start, stop)),
                         [later[0], last[0]])
        self.assertIs(completed.last(start), later[0])
        completed.clear()
        self.assertEqual((len(completed), list(completed)), (0, []))

    def test_same_instant_completions_get_distinct_keys(self):
        conn, tm = self.open()
        agent = self.agent(conn)
        jobs = [agent.claimJob() for _ in range(3)]
        for job in jobs:
            agent.jobCompleted(job)
        self.assertEqual(len({job.key for job in jobs}), 3)
        self.assertEqual(list(agent.completed), jobs[::-1])

    def test_a_rotation_moves_the_waiting_jobs_before_dropping_trees(self):
        conn, tm = self.open()
        agent = self.agent(conn)
        # Claimed first: a dispatcher record that does not ping is dead
        # after a minute, and claims nothing.
        jobs = [agent.claimJob() for _ in range(4)]
        for job in jobs[:2]:
            agent.jobCompleted(job)
        self.tick(days=2)  # one rotation interval (28 h) passed
        agent.jobCompleted(jobs[2])
        self.assertEqual(list(agent.completed), jobs[2::-1])
        self.assertEqual(list(agent.completed._buckets[1].values()),
                         jobs[1::-1])  # by key: newest first
        self.tick(days=9)  # everything expired
        agent.jobCompleted(jobs[3])
        self.assertEqual(list(agent.completed), [jobs[3]])
        self.assertEqual(len(agent.completed), 1)

    def test_two_threads_completing_at_once_do_not_conflict(self):
        conn, tm = self.open()
        agent = self.agent(conn)
        held = agent[0]
        other = agent.claimJob()
        tm.commit()
        (c1, tm1), (c2, tm2) = self.open(), self.open()
        self.agent(c1).jobCompleted(c1.get(held._p_oid))
        self.tick(seconds=1)
        self.agent(c2).jobCompleted(c2.get(other._p_oid))
        self.agent(c2).claimJob()
        tm1.commit()
        tm2.commit()  # resolved
        conn, tm = self.open()
        agent = self.agent(conn)
        self.assertEqual(len(agent), 1)
        self.assertEqual([job._p_oid for job in agent.completed],
                         [other._p_oid, held._p_oid])

    def test_two_commits_moving_the_same_jobs_conflict(self):
        conn, tm = self.open()
        agent = self.agent(conn)
        self.complete(agent, MOVE_AFTER - 2)
        jobs = [agent.claimJob(), agent.claimJob()]
        tm.commit()
        (c1, tm1), (c2, tm2) = self.open(), self.open()
        self.agent(c1).jobCompleted(c1.get(jobs[0]._p_oid))
        self.agent(c2).jobCompleted(c2.get(jobs[1]._p_oid))
        tm1.commit()  # moved them
        with self.assertRaises(ZODB.POSException.ConflictError):
            tm2.commit()  # would move them again: retried by a worker

    def test_older_agents_add_each_completed_job(self):
        # Agents stored by 1.5, or by zc.async 2 before the jobs record,
        # hold their jobs in a zc.queue.Queue.
        conn, tm = self.open()
        agent = self.agent(conn)
        held = zc.queue.Queue()
        for job in agent:
            held.put(job)
        agent._data = held
        agent.completed._recent = None
        jobs = self.complete(agent, 2)
        self.assertEqual(len(agent.completed._buckets[0]), 2)
        self.assertEqual(list(agent.completed), jobs[::-1])
        self.assertEqual(len(agent), 1)


class ActivationHandlerTests(AgentTestCase):

    def test_adds_a_main_agent_when_missing(self):
        other = uuid.uuid1()
        self.queue.dispatchers.register(other)
        record = self.queue.dispatchers[other]
        registry = zope.component.getGlobalSiteManager()
        handler = zc.asynchronous.agent.addMainAgentActivationHandler
        registry.registerHandler(handler)
        self.addCleanup(registry.unregisterHandler, handler)
        record.activate()
        self.assertIsInstance(record['main'], Agent)
        self.assertEqual(list(record), ['main'])

    def test_keeps_an_existing_main_agent(self):
        event = interfaces.DispatcherActivated(self.record)
        zc.asynchronous.agent.addMainAgentActivationHandler(event)
        self.assertIs(self.record['main'], self.agent)


def test_suite():
    return unittest.defaultTestLoader.loadTestsFromName(__name__)
