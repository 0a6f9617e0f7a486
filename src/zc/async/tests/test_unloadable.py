"""Jobs a process cannot load: found, passed over, reported, failed.

Jobs are made with code that then vanishes from this process (see
:mod:`zc.async.tests.badcode`), on a FileStorage; the dispatchers are real
ones on real reactors (:mod:`zc.async.tests.live`) where they run.
"""
import datetime
import operator
import sys
import unittest
import uuid

import transaction
import ZODB.Connection
import ZODB.utils

import zc.asynchronous.agent
import zc.asynchronous.clock
import zc.asynchronous.interfaces as interfaces
import zc.asynchronous.queue
import zc.asynchronous.testing as testing
import zc.asynchronous.utils
from zc.asynchronous.ops import clidb
from zc.asynchronous import jobactions
from zc.asynchronous import loadable
from zc.asynchronous.ops import metrics
from zc.asynchronous import monitor
from zc.asynchronous import monitordb
from zc.asynchronous import tolerant
from zc.asynchronous import unloadable
from zc.asynchronous.ops import webapi
from zc.asynchronous.dispatcher import getId
from zc.asynchronous.job import Job
from zc.asynchronous.tests import badcode
from zc.asynchronous.tests import test_metrics
from zc.asynchronous.tests import test_web
from zc.asynchronous.tests.live import DispatcherTestCase, wait_until


class DatabaseTestCase(unittest.TestCase):
    """A FileStorage with queue ''; a module whose code can vanish."""

    def setUp(self):
        self.db = testing.db()
        self.addCleanup(self.db.close)
        self.tm = transaction.TransactionManager()
        self.conn = self.db.open(self.tm)
        self.addCleanup(self.conn.close)
        self.addCleanup(self.tm.abort)
        root = self.conn.root()
        root[interfaces.KEY] = zc.asynchronous.queue.Queues()
        root[interfaces.KEY][''] = zc.asynchronous.queue.Queue()
        self.tm.commit()
        self.gone = badcode.GoneModule()
        self.addCleanup(self.gone.clean_up)
        for cls in (badcode.Fussy, badcode.Unstorable):
            self.addCleanup(setattr, cls, 'refuse', False)

    @property
    def queue(self):
        return self.conn.root()[interfaces.KEY]['']

    def put(self, *args, **kwargs):
        job = self.queue.put(Job(*args, **kwargs))
        self.tm.commit()
        return job._p_oid

    def vanish(self):
        """The module, Fussy and Unstorable stop working in this process;
        a fresh look at the database (objects are loaded again)."""
        self.gone.vanish()
        badcode.Fussy.refuse = badcode.Unstorable.refuse = True
        self.tm.abort()
        self.conn.close()
        ZODB.Connection.resetCaches()  # for the connections opened next
        self.conn = self.db.open(self.tm)

    def job(self, oid):
        return self.conn.get(oid)


class CheckTests(DatabaseTestCase):

    def test_what_this_process_cannot_run(self):
        gone = self.gone
        owner = gone.Owner()
        self.conn.add(owner)
        oids = {
            'good': self.put(operator.mul, 6, 7),
            'module': self.put(gone.double, 1),
            'argument': self.put(operator.mul, gone.Thing(2), 3),
            'nested': self.put(len, {'a': [(1, gone.double)]}),
            'setstate': self.put(len, badcode.Fussy(4)),
            'owner': self.put(owner.run, 5),
            'class': self.queue.put(gone.SpecialJob(len, [6]))._p_oid,
            'large': self.put(len, 'x' * 2000, gone.Thing(7)),
        }
        self.tm.commit()
        self.vanish()
        found = {name: loadable.check(self.job(oid))
                 for name, oid in oids.items()}
        self.assertIsNone(found.pop('good'))
        name = gone.name
        expected = {
            'module': 'its callable %s.double, which cannot be imported: '
                      "ModuleNotFoundError: No module named '%s'",
            'argument': 'its arguments hold %s.Thing, which cannot be '
                        "imported: ModuleNotFoundError: No module named '%s'",
            'nested': 'its arguments hold %s.double, which cannot be '
                      "imported: ModuleNotFoundError: No module named '%s'",
            'owner': 'its callable %s.Owner, which cannot be imported: '
                     "ModuleNotFoundError: No module named '%s'",
            'class': 'its class %s.SpecialJob, which cannot be imported: '
                     "ModuleNotFoundError: No module named '%s'",
            'large': 'its arguments hold %s.Thing, which cannot be '
                     "imported: ModuleNotFoundError: No module named '%s'",
        }
        self.assertEqual(found.pop('setstate'), 'its record cannot be '
                         'loaded: ValueError: Fussy refuses to load')
        self.assertEqual(found, {key: text % (name, name)
                                 for key, text in expected.items()})

    def test_callable_names_read_without_loading_the_code(self):
        owner = self.gone.Owner()
        self.conn.add(owner)
        oids = [self.put(self.gone.double, 1), self.put(len, badcode.Fussy(2)),
                self.put(owner.run, 3), self.put(operator.mul, 6, 7)]
        self.vanish()
        self.assertEqual(
            [loadable.callable_name(self.job(oid)) for oid in oids],
            ['%s.double' % self.gone.name, 'builtins.len',
             '%s.Owner (oid %d).run' % (self.gone.name,
                                        ZODB.utils.u64(owner._p_oid)),
             '_operator.mul'])

    def test_jobs_that_cannot_be_stored_here(self):
        bad = self.put(len, [badcode.Unstorable(1)])
        good = self.put(len, [1])
        self.vanish()
        self.assertIsNone(loadable.check(self.job(bad)))
        self.assertEqual(loadable.unstorable(self.job(bad)),
                         'it cannot be stored here: TypeError: Unstorable '
                         'refuses to be stored')
        self.assertIsNone(loadable.unstorable(self.job(good)))

    def test_the_check_leaves_new_objects_to_the_commit(self):
        job = self.job(self.put(len, [1]))
        job.annotations['first'] = 1  # a new OOBTree in the job's state
        self.assertIsNone(loadable.unstorable(job))
        self.tm.commit()
        other = self.db.open(transaction.TransactionManager())
        self.addCleanup(other.close)
        self.assertEqual(dict(other.get(job._p_oid).annotations),
                         {'first': 1})


class TolerantTests(DatabaseTestCase):
    """A tolerant connection loads, changes and stores what this process
    cannot import, and keeps it for the processes that can."""

    def test_round_trip(self):
        gone = self.gone
        owner = gone.Owner()
        self.conn.add(owner)
        oids = [self.put(gone.double, 1),
                self.put(operator.mul, gone.Thing(2), [gone.double]),
                self.put(len, badcode.Fussy(3)),
                self.put(owner.run, 4)]
        self.vanish()
        with tolerant.connection(self.db) as conn:
            jobs = [conn.get(oid) for oid in oids]
            missing = jobs[0]._callable_root
            self.assertIsInstance(missing, tolerant.Missing)
            with self.assertRaises(ImportError) as cm:
                missing(1)
            self.assertEqual(str(cm.exception), (
                "cannot import {0}.double here: ModuleNotFoundError: No "
                "module named '{0}'").format(gone.name))
            self.assertEqual(repr(jobs[2].args[0]), '<unbuilt ZODB.broken.'
                             'rebuild: ValueError: Fussy refuses to load>')
            for job in jobs:
                job.assignerUUID = 'changed'
            conn.transaction_manager.commit()
        # Where the code is back, everything is as it was, and changed.
        badcode.Fussy.refuse = False
        sys.path.insert(0, gone.directory)
        self.addCleanup(gone.vanish)
        self.tm.abort()
        self.conn.close()
        ZODB.Connection.resetCaches()
        self.conn = self.db.open(self.tm)
        jobs = [self.job(oid) for oid in oids]
        self.assertEqual([job.assignerUUID for job in jobs], ['changed'] * 4)
        module = sys.modules[gone.name] = __import__(gone.name)
        self.assertIs(jobs[0].callable, module.double)
        self.assertEqual(jobs[1].args[0].n, 2)
        self.assertIs(jobs[1].args[1][0], module.double)
        self.assertEqual(jobs[2].args[0].n, 3)
        self.assertEqual(jobs[3].callable(1), 101)

    def test_record_state_reads_without_the_cache(self):
        oid = self.put(self.gone.double, 1)
        self.vanish()
        state = tolerant.record_state(self.conn, oid)
        self.assertEqual(tolerant.dotted_name(state['_callable_root']),
                         self.gone.name + '.double')
        self.assertIsInstance(state['parent'], tolerant.Reference)
        self.assertEqual(state['parent'].oid, self.queue._p_oid)
        self.assertIsNone(self.conn._cache.get(oid))


class ClaimTests(DatabaseTestCase):
    """A queue's claims pass over what the registry says cannot run."""

    def setUp(self):
        super().setUp()
        self.log = self.enterContext(_log())
        self.registry = unloadable.Registry(uuid.uuid1())

    def claim(self, **kwargs):
        return self.queue._claim(unloadable=self.registry, **kwargs)

    def test_claims_pass_over_jobs_they_cannot_run(self):
        oids = [self.put(operator.mul, 1, 2), self.put(self.gone.double, 2),
                self.put(operator.mul, 3, 2), self.put(len, badcode.Fussy(4)),
                self.put(operator.mul, 5, 2)]
        self.vanish()
        claimed = [self.claim(), self.claim(), self.claim(), self.claim()]
        self.assertEqual([job.args[0] for job in claimed[:3]], [1, 3, 5])
        self.assertIsNone(claimed[3])
        self.assertEqual([job._p_oid for job in self.queue],
                         [oids[1], oids[3]])
        errors = self.log.messages('ERROR')
        self.assertEqual(len(errors), 2, errors)
        self.assertIn('job %d (database %r, callable %s.double) in queue '
                      "'' cannot be run by dispatcher %s, which passes over "
                      'it' % (ZODB.utils.u64(oids[1]), 'unnamed',
                              self.gone.name, self.registry.uuid), errors[0])
        self.assertIn('zc-async remove DATABASE %d' % ZODB.utils.u64(oids[1]),
                      errors[0])
        self.assertIn('it is failed with UnloadableJobError after 0:10:00',
                      errors[0])
        self.assertEqual([entry.oid for entry in self.registry.entries()],
                         [ZODB.utils.u64(oids[1]), ZODB.utils.u64(oids[3])])

    def test_jobs_not_due_yet_are_left_alone(self):
        later = zc.asynchronous.utils.now() + datetime.timedelta(hours=1)
        self.queue.put(Job(self.gone.double, 1), begin_after=later)
        self.tm.commit()
        self.vanish()
        self.assertIsNone(self.claim())
        self.assertEqual(self.log.messages('ERROR'), [])
        self.assertEqual(len(self.registry), 0)

    def test_plain_queue_claims_pass_over_them_too(self):
        self.put(self.gone.double, 1)
        self.put(operator.mul, 3, 2)
        self.vanish()
        self.assertEqual(self.queue.claim().args[0], 3)
        self.assertIsNone(self.queue.claim())

    def test_failing_after_the_timeout_when_nobody_else_can(self):
        oid = self.put(self.gone.double, 1)
        self.queue.unloadable_timeout = datetime.timedelta(minutes=1)
        dispatchers = self.queue.dispatchers
        other = uuid.uuid1()
        for each in (self.registry.uuid, other):
            dispatchers.register(each)
            dispatchers[each].activate()
            dispatchers[each].ping_death_interval = datetime.timedelta(
                hours=1)
            dispatchers[each]['main'] = zc.asynchronous.agent.Agent()
        self.tm.commit()
        self.vanish()
        dispatchers = self.queue.dispatchers
        start = zc.asynchronous.utils.now()
        testing.set_now(start)
        self.addCleanup(zc.asynchronous.clock._set_frozen_now, None)
        self.assertIsNone(self.claim(fail_unloadable=True))
        testing.set_now(start + datetime.timedelta(minutes=2))
        # The other live dispatcher may be able to run it.
        self.assertIsNone(self.claim(fail_unloadable=True))
        dispatchers[other].unloadable = {(self.db.database_name, oid): start}
        # Worker threads' claims never fail jobs.
        self.assertIsNone(self.claim())
        failing = self.claim(fail_unloadable=True)
        self.assertIs(failing.callable, unloadable.fail_unloadable)
        self.assertEqual(failing.args[0]._p_oid, oid)
        error = failing.args[1]
        self.assertIsInstance(error, interfaces.UnloadableJobError)
        self.assertEqual((error.oid, error.callable_name),
                         (ZODB.utils.u64(oid), self.gone.name + '.double'))
        self.assertEqual(failing.begin_after, start + datetime.timedelta(
            minutes=2))
        # Once claimed, not again for a while (the first may still land).
        self.assertIsNone(self.claim(fail_unloadable=True))
        self.assertEqual(len(self.queue), 1)

    def test_dead_and_stopped_dispatchers_do_not_count(self):
        self.put(self.gone.double, 1)
        self.queue.unloadable_timeout = datetime.timedelta(0)
        dispatchers = self.queue.dispatchers
        dead, stopped = uuid.uuid1(), uuid.uuid1()
        for each in (dead, stopped):
            dispatchers.register(each)
            dispatchers[each]['main'] = zc.asynchronous.agent.Agent()
        dispatchers[dead].activate()
        dispatchers[dead].last_ping.value = dispatchers[dead].activated = (
            zc.asynchronous.utils.now() - datetime.timedelta(hours=1))
        self.tm.commit()
        self.vanish()
        self.assertIsNotNone(self.claim(fail_unloadable=True))

    def test_jobs_whose_class_is_missing_are_never_failed(self):
        self.queue.put(self.gone.SpecialJob(len, [1]))
        self.queue.unloadable_timeout = datetime.timedelta(0)
        self.tm.commit()
        self.vanish()
        self.assertIsNone(self.claim(fail_unloadable=True))
        self.assertIn('It cannot be failed: its class is missing here.',
                      self.log.messages('ERROR')[0])

    def test_the_dispatchers_record(self):
        oid = self.put(self.gone.double, 1)
        self.put(operator.mul, 3, 2)
        uuid_ = self.registry.uuid
        self.queue.dispatchers.register(uuid_)
        self.tm.commit()
        self.vanish()
        da = self.queue.dispatchers[uuid_]
        self.assertFalse(self.registry.needs_sync(self.queue, da))
        self.claim()
        self.assertTrue(self.registry.needs_sync(self.queue, da))
        self.registry.sync(self.queue, da)
        key = (self.db.database_name, oid)
        self.assertEqual(list(da.unloadable), [key])
        self.assertEqual(da.unloadable[key],
                         self.registry.entries()[0].first_seen)
        self.tm.commit()
        # Gone from the queue: forgotten, here and in the record.
        with tolerant.connection(self.db) as conn:
            jobactions.remove(conn.get(oid))
            conn.transaction_manager.commit()
        self.tm.begin()
        self.registry.sync(self.queue, da)
        self.assertEqual(list(da.unloadable), [])
        self.assertEqual(len(self.registry), 0)


class _log:
    """The zc.async log records, as a context manager."""

    def __enter__(self):
        import zope.testing.loggingsupport
        self.handler = zope.testing.loggingsupport.InstalledHandler(
            'zc.async', level=1)
        return self

    def __exit__(self, *exc):
        self.handler.uninstall()

    def messages(self, level):
        return [record.getMessage() for record in self.handler.records
                if record.levelname == level]


def called_back(result):
    """A failure callback: what it was called with."""
    return 'called back with %s' % (type(result.value).__name__,)


class LiveTestCase(DispatcherTestCase):
    """A dispatcher on a real reactor, with worker threads, in the process
    that lacks the code (FileStorage: one process)."""

    def setUp(self):
        super().setUp()
        self.gone = badcode.GoneModule()
        self.addCleanup(self.gone.clean_up)
        for cls in (badcode.Fussy, badcode.Unstorable):
            self.addCleanup(setattr, cls, 'refuse', False)

    def vanish(self):
        """The module, Fussy and Unstorable stop working in this process
        (for the objects loaded from now on)."""
        self.gone.vanish()
        badcode.Fussy.refuse = badcode.Unstorable.refuse = True

    def errors(self, text):
        return [message for message in self.messages('ERROR')
                if text in message]

    def one_at_a_time(self):
        """This dispatcher's agent runs one job at a time."""
        transaction.begin()
        self.queue.dispatchers.register(self.uuid)
        self.queue.dispatchers[self.uuid]['main'] = (
            zc.asynchronous.agent.Agent(size=1))
        transaction.commit()


class LiveTests(LiveTestCase):

    def test_bad_jobs_between_good_ones_delay_none(self):
        good = [self.put(operator.mul, n, 2) for n in range(3)]
        bad = [self.put(self.gone.double, 3), self.put(len, badcode.Fussy(4))]
        good += [self.put(operator.mul, n, 2) for n in range(5, 8)]
        self.vanish()
        live = self.start(poll_interval=30)
        self.assertEqual([testing.wait_for_result(job) for job in good],
                         [0, 2, 4, 10, 12, 14])
        transaction.begin()
        self.assertEqual(list(self.queue), bad)
        self.assertEqual([job.status for job in bad], [interfaces.PENDING] * 2)
        self.assertEqual(len(self.errors('cannot be run')), 2)
        self.assertEqual(self.messages('CRITICAL'), [])
        self.assertEqual(live.call(lambda: len(live.dispatcher.unloadable)),
                         2)
        # Each poll keeps the dispatcher's record of them.
        live.call(live.dispatcher.directPoll)
        transaction.begin()
        self.assertEqual(
            sorted(self.queue.dispatchers[self.uuid].unloadable),
            sorted((self.db.database_name, job._p_oid) for job in bad))
        self.assertEqual(live.call(live.dispatcher.getStatusInfo)['status'],
                         'RUNNING')

    def test_a_claim_never_costs_a_finished_job_its_outcome(self):
        # The commit that completes a job claims the next one: one that
        # cannot be loaded here is passed over, not claimed.
        self.one_at_a_time()
        first = self.put(operator.mul, 1, 2)
        bad = self.put(self.gone.double, 2)
        after = self.put(operator.mul, 3, 2)
        self.vanish()
        live = self.start(poll_interval=30)
        self.assertEqual(testing.wait_for_result(first), 2)
        self.assertEqual(testing.wait_for_result(after), 6)
        transaction.begin()
        self.assertEqual(bad.status, interfaces.PENDING)
        self.assertEqual(self.messages('CRITICAL'), [])
        self.assertEqual(len(self.errors('cannot be run')), 1)
        # The completing commit of the first job claimed the last one.
        info = live.call(live.dispatcher.getJobInfo, *getId(after))
        self.assertEqual(info['poll id'], live.call(
            lambda: list(live.dispatcher.polls)[-1].key))

    def test_a_claim_that_spoils_the_commit_is_dropped(self):
        # A job this process cannot store, claimed in the commit that
        # completes another: that commit is tried again without it.
        self.one_at_a_time()
        first = self.put(operator.mul, 1, 2)
        bad = self.put(len, [badcode.Unstorable(2)])
        after = self.put(operator.mul, 3, 2)
        self.vanish()
        self.start(poll_interval=30)
        self.assertEqual(testing.wait_for_result(first), 2)
        self.assertEqual(testing.wait_for_result(after), 6)
        transaction.begin()
        self.assertEqual(bad.status, interfaces.PENDING)
        self.assertEqual(self.messages('CRITICAL'), [])
        errors = self.errors('cannot be run')
        self.assertEqual(len(errors), 1)
        self.assertIn('it cannot be stored here: TypeError: Unstorable '
                      'refuses to be stored', errors[0])

    def test_a_poll_claims_the_others_when_one_cannot_be_stored(self):
        bad = self.put(len, [badcode.Unstorable(1)])
        good = [self.put(operator.mul, n, 2) for n in range(2, 4)]
        self.vanish()
        live = self.start(poll_interval=30)
        self.assertEqual([testing.wait_for_result(job) for job in good],
                         [4, 6])
        transaction.begin()
        self.assertEqual(list(self.queue), [bad])
        # The failed claim's commit was logged; then the job to blame.
        self.assertEqual(len(self.messages('CRITICAL')), 1)
        self.assertEqual(len(self.errors('cannot be stored here')), 1)
        first = live.call(lambda: list(live.dispatcher.polls)[-1])
        self.assertEqual(len(first['']['main']['new jobs']), 2)

    def test_failed_with_its_callbacks_when_nobody_can_load_it(self):
        transaction.begin()
        self.queue.unloadable_timeout = datetime.timedelta(0)
        bad = self.queue.put(Job(self.gone.double, 1))
        callback = bad.addCallback(called_back)
        transaction.commit()
        self.vanish()
        live = self.start(poll_interval=30)
        result = testing.wait_for_result(bad)
        self.assertIsInstance(result.value, interfaces.UnloadableJobError)
        self.assertEqual(result.value.oid, ZODB.utils.u64(bad._p_oid))
        self.assertEqual(result.value.callable_name,
                         self.gone.name + '.double')
        self.assertEqual(testing.wait_for_result(callback),
                         'called back with UnloadableJobError')
        transaction.begin()
        agent = self.queue.dispatchers[self.uuid]['main']
        self.assertEqual(bad.status, interfaces.COMPLETED)
        self.assertIn(bad, list(agent.completed))
        failing, = [job for job in agent.completed
                    if job.callable is unloadable.fail_unloadable]
        self.assertEqual(failing.status, interfaces.COMPLETED)
        self.assertEqual(len(self.queue), 0)
        self.assertEqual(len(self.errors('cannot be run')), 1)
        # The failed job leaves the dispatcher's list at its next poll
        # (a wake-up poll may already have run: no count before it).
        live.call(live.dispatcher.directPoll)
        self.assertEqual(live.call(lambda: len(live.dispatcher.unloadable)),
                         0)


class UnfailableTests(LiveTestCase):

    def test_a_job_that_cannot_be_stored_is_left_for_removal(self):
        transaction.begin()
        self.queue.unloadable_timeout = datetime.timedelta(0)
        transaction.commit()
        bad = self.put(len, [badcode.Unstorable(1)])
        good = self.put(operator.mul, 3, 2)
        self.vanish()
        live = self.start(poll_interval=30)
        self.assertEqual(testing.wait_for_result(good), 6)
        wait_until(lambda: self.errors('Error while failing unloadable'),
                   message='the failing job giving up')
        entry, = live.call(live.dispatcher.unloadable.entries)
        wait_until(lambda: entry.broken, message='the job left alone')
        live.call(live.dispatcher.directPoll)
        transaction.begin()
        self.assertEqual(list(self.queue), [bad])
        self.assertEqual(len(self.errors('cannot be run')), 1)
        with tolerant.connection(self.db) as conn:
            self.assertIn('its record is left as it is: it cannot be '
                          'stored here: TypeError: Unstorable refuses',
                          jobactions.remove(conn.get(bad._p_oid)))
            conn.transaction_manager.commit()
        transaction.begin()
        self.assertEqual(list(self.queue), [])


class Refusing:
    on = False


def refusing_chooser(agent):
    """An agent's chooser that fails while ``Refusing.on``."""
    if Refusing.on:
        raise RuntimeError('the chooser fails')
    return agent.queue.claim()


class ReportingTests(LiveTestCase):
    """What operators see: status, metrics, the dashboard's overview."""

    def setUp(self):
        super().setUp()
        self.addCleanup(setattr, Refusing, 'on', False)
        if metrics.prometheus_client is None:
            self.skipTest('prometheus_client is not installed')
        self.registry = metrics.prometheus_client.CollectorRegistry()
        server = metrics.start_metrics_server(0, registry=self.registry)
        self.addCleanup(server.server_close)
        self.addCleanup(server.shutdown)
        self.port = server.server_port

    def start(self, poll_interval=0.2):
        # The metrics listen before the first poll, which may meet the
        # unloadable job already.
        def install(dispatcher):
            installed = metrics.install_metrics(dispatcher, self.registry)
            self.addCleanup(installed.uninstall)
        return super().start(poll_interval, before_activate=install)

    def sample(self, name, **labels):
        return test_metrics.value(test_metrics.scrape(self.port), name,
                                  **labels)

    def db_status(self):
        transaction.begin()
        return monitordb.status(self.conn)['']['dispatchers'][str(self.uuid)]

    def test_unloadable_jobs(self):
        bad = self.put(self.gone.double, 1)
        self.vanish()
        live = self.start()
        jobid = [ZODB.utils.u64(bad._p_oid), self.db.database_name]
        wait_until(lambda: self.sample(
            'zc_async_unloadable_jobs', database='unnamed', queue='') == 1,
            message='the gauge of unloadable jobs at 1')
        self.assertEqual(self.sample('zc_async_claim_errors_total',
                                     queue='', reason='unloadable'), 1)
        self.assertEqual(live.call(monitor.dispatcher_status,
                                   live.dispatcher)['unloadable jobs'],
                         [jobid])
        found = self.db_status()
        self.assertEqual(found['unloadable jobs'], [jobid])
        self.assertNotIn('degraded', found)
        self.assertIn('    cannot load 1 pending job(s): %d (see zc-async '
                      'job, remove, fail)' % jobid[0], clidb.format_status(
                          monitordb.status(self.conn)))
        overview = webapi.overview(self.conn)
        self.assertEqual(overview['queues']['']['dispatchers'][str(
            self.uuid)]['unloadable jobs'], [jobid])
        with tolerant.connection(self.db) as conn:
            jobactions.remove(conn.get(bad._p_oid))
            conn.transaction_manager.commit()
        wait_until(lambda: self.sample(
            'zc_async_unloadable_jobs', database='unnamed', queue='') == 0,
            message='the gauge of unloadable jobs at 0')
        self.assertNotIn('unloadable jobs', live.call(
            monitor.dispatcher_status, live.dispatcher))
        self.assertNotIn('unloadable jobs', self.db_status())

    def test_a_dispatcher_whose_claims_fail_is_degraded(self):
        transaction.begin()
        self.queue.dispatchers.register(self.uuid)
        self.queue.dispatchers[self.uuid]['main'] = (
            zc.asynchronous.agent.Agent(chooser=refusing_chooser))
        transaction.commit()
        Refusing.on = True
        job = self.put(operator.mul, 6, 7)
        live = self.start()

        def status():
            return live.call(live.dispatcher.getStatusInfo)['status']
        wait_until(lambda: status() == 'DEGRADED', message='DEGRADED')
        found = self.db_status()
        self.assertIs(found['degraded'], True)
        self.assertEqual(found['agents']['main']['claims fail'],
                         'RuntimeError: the chooser fails')
        self.assertIn('DEGRADED', clidb.format_status(
            monitordb.status(self.conn)))
        self.assertEqual(self.sample('zc_async_dispatcher_degraded',
                                     database='unnamed', uuid=str(self.uuid)),
                         1)
        self.assertGreaterEqual(self.sample(
            'zc_async_claim_errors_total', queue='', reason='error'), 1)
        Refusing.on = False
        self.assertEqual(testing.wait_for_result(job), 42)
        wait_until(lambda: status() == 'RUNNING', message='RUNNING')
        wait_until(lambda: 'degraded' not in self.db_status(),
                   message='the failure forgotten')
        self.assertEqual(self.sample('zc_async_dispatcher_degraded',
                                     database='unnamed', uuid=str(self.uuid)),
                         0)


class MainWarningTests(DatabaseTestCase):
    """Other processes cannot import ``__main__``'s callables: ``put`` says
    so, once per callable."""

    def main_function(self, name):
        main = sys.modules['__main__']

        def func(n):
            return n
        func.__module__, func.__name__, func.__qualname__ = (
            '__main__', name, name)
        setattr(main, name, func)
        self.addCleanup(delattr, main, name)
        return func

    def test_warned_once_per_callable(self):
        log = self.enterContext(_log())
        first = self.main_function('zc_async_test_first')
        second = self.main_function('zc_async_test_second')
        for func in (first, first, second, operator.mul, first):
            self.queue.put(Job(func, 1))
        self.tm.commit()
        warnings = log.messages('WARNING')
        self.assertEqual(len(warnings), 2, warnings)
        self.assertIn('``__main__.zc_async_test_first(1)``> is defined in '
                      '__main__: only dispatchers of this process can run '
                      'it', warnings[0])
        self.assertIn('__main__.zc_async_test_second', warnings[1])


class DashboardActionTests(test_web.DashboardTestCase):
    """The dashboard's cancel and retry, on jobs this process cannot load.
    """

    actions_token = test_web.TOKEN
    post = test_web.ActionTests.post

    def test_jobs_listed_and_shown(self):
        gone = badcode.GoneModule()
        self.addCleanup(gone.clean_up)
        later = zc.asynchronous.utils.now() + datetime.timedelta(hours=1)
        transaction.begin()
        broken = self.queue.put(gone.SpecialJob(len, [1]), begin_after=later)
        transaction.commit()
        fussy = self.put(len, badcode.Fussy(2), begin_after=later)
        self.addCleanup(setattr, badcode.Fussy, 'refuse', False)
        gone.vanish()
        badcode.Fussy.refuse = True
        rows = self.get_json('/api/jobs?state=pending')['jobs']
        self.assertEqual([row['id'][0] for row in rows],
                         [self.oid(broken), self.oid(fussy)])
        self.assertEqual([row['status'] for row in rows], ['pending'] * 2)
        self.assertEqual(rows[0]['callable'], 'builtins.len')
        detail = self.get_json('/api/jobs/%d' % self.oid(broken))
        self.assertEqual(detail['repr'], '<%s.SpecialJob (oid %d): its '
                         'class cannot be imported here>' % (
                             gone.name, self.oid(broken)))
        detail = self.get_json('/api/jobs/%d' % self.oid(fussy))
        self.assertIn('Fussy refuses to load', detail['args'][0])
        self.assertEqual(self.post(broken, 'cancel'),
                         {'cancelled': [self.oid(broken), 'unnamed']})
        transaction.begin()
        self.assertEqual(list(self.queue), [fussy])

    def test_cancel_and_retry(self):
        gone = badcode.GoneModule()
        self.addCleanup(gone.clean_up)
        later = zc.asynchronous.utils.now() + datetime.timedelta(hours=1)
        cancelled = self.put(gone.double, 1, begin_after=later)
        failed = self.put(gone.double, 2, begin_after=later)
        gone.vanish()
        self.assertEqual(self.post(cancelled, 'cancel'),
                         {'cancelled': [self.oid(cancelled), 'unnamed']})
        with tolerant.connection(self.db) as conn:
            jobactions.fail(conn.get(failed._p_oid), 'gone')
            conn.transaction_manager.commit()
        detail = self.get_json('/api/jobs/%d' % self.oid(failed))
        self.assertEqual(detail['callable'], gone.name + '.double')
        self.assertIn('failed by an operator: gone', detail['traceback'])
        answer = self.post(failed, 'retry')
        transaction.begin()
        self.assertEqual(cancelled.status, interfaces.NEW)
        copy = self.conn.get(ZODB.utils.p64(answer['new job'][0]))
        self.assertEqual(copy.status, interfaces.PENDING)
        self.assertEqual(list(self.queue), [copy])
