"""A recurring job fired by three real worker processes on a ZEO server.

The schedule ticks every second rather than every minute (the semantics do
not depend on the period; ten real minutes would be too long for the
suite) with ``catch_up='all'``, so that even a loaded machine, where a poll
may come more than a second late, must put exactly one job per tick.  One
worker is killed with SIGKILL in the middle.  At the end every job of the
schedule is counted, wherever it is (queue, agents, completed
collections): one per tick, no tick missing, each completed once.
"""
import datetime
import unittest

import BTrees.Length

from zc.asynchronous import clock
from zc.asynchronous import interfaces
from zc.asynchronous import schedule
from zc.asynchronous import utils
from zc.asynchronous.tests import jobs_for_processes as jobs
from zc.asynchronous.tests.test_reliability import ZEOScenario

SECOND = datetime.timedelta(seconds=1)
TICKS = 10


class ScheduleProcessTests(ZEOScenario, unittest.TestCase):

    def schedule_jobs(self, conn):
        """Every job the schedule put, wherever it is now."""
        queue = conn.root()[interfaces.KEY]['']
        found = list(queue)
        for agents in queue.dispatchers.values():
            for agent in agents.values():
                found.extend(agent)
                found.extend(agent.completed)
        return [job for job in found
                if schedule.SCHEDULE_KEY in job.annotations]

    def test_three_workers_fire_each_tick_once_across_a_kill_9(self):
        workers = [self.worker(name) for name in 'abc']
        self.wait(lambda conn: all(
            w.uuid in self.records(conn) and self.records(conn)[w.uuid]
            .activated for w in workers), 'three activated workers')
        # Given a schedule whose first tick is a few seconds away,
        start = utils.now().replace(microsecond=0) + 3 * SECOND
        self.tm.begin()
        tally = BTrees.Length.Length()
        self.queue.schedules['tick'] = schedule.Schedule(
            jobs.double, tally, 1, every=SECOND, start=start,
            catch_up='all')
        self.tm.commit()
        # when the worker that fired the fourth tick is killed
        self.wait(lambda conn: self.last_run(conn) >= start + 3 * SECOND,
                  'four ticks')
        self.tm.begin()
        assigner = self.queue.schedules['tick'].last_job.assignerUUID
        [killed] = [w for w in workers if w.uuid == assigner]
        killed.kill()
        # and the other two fire six more,
        self.wait(lambda conn: self.last_run(conn) >= start + (TICKS - 1)
                  * SECOND, '%d ticks' % TICKS)
        # (Removing it may conflict with a worker firing it: retry.)
        for attempt in self.tm.attempts():
            with attempt:
                del self.queue.schedules['tick']
        # then every tick from the first one on has exactly one job, and
        # each job completed once.
        fired = self.wait(lambda conn: self.all_completed(conn),
                          'every tick job completed')
        self.tm.begin()
        found = self.schedule_jobs(self.conn)
        ticks = sorted(job.annotations[schedule.TICK_KEY] for job in found)
        self.assertGreaterEqual(len(ticks), TICKS)
        self.assertEqual(ticks, [start + n * SECOND
                                 for n in range(len(ticks))])
        self.assertEqual(fired, len(ticks))
        self.assertEqual({job.result for job in found}, {2})
        self.assertEqual(tally.value, len(ticks))
        self.assertWorkersRunning([w for w in workers if w is not killed])

    def last_run(self, conn):
        sched = conn.root()[interfaces.KEY][''].schedules.get('tick')
        last = None if sched is None else sched.last_run
        return last or datetime.datetime.min.replace(tzinfo=clock.UTC)

    def all_completed(self, conn):
        """The number of jobs once all are completed (else None)."""
        found = self.schedule_jobs(conn)
        if all(job.status == interfaces.COMPLETED for job in found):
            return len(found)
        return None
