"""Tests of the ``async:schedule`` ZCML directive and ScheduleInstaller.

Configuration-time tests process ZCML strings; the start-up test opens a
site's database as Zope does (see ``test_zcml``) and waits for a real
threaded dispatcher to run the schedule's jobs.
"""
import datetime
import unittest

import transaction
import zope.configuration.config
import zope.configuration.exceptions

import zc.asynchronous.clock
import zc.asynchronous.interfaces as interfaces
import zc.asynchronous.subscribers as subscribers
import zc.asynchronous.testing
from zc.asynchronous import schedule
from zc.asynchronous.tests.live import wait_until
from zc.asynchronous.tests.test_subscribers import DEADLINE
from zc.asynchronous.tests.test_zcml import BASIC
from zc.asynchronous.tests.test_zcml import INCLUDE
from zc.asynchronous.tests.test_zcml import StartUpTests
from zc.asynchronous.tests.test_zcml import ZCMLTestCase
from zc.asynchronous.tests.test_zcml import a_function

NIGHTLY = ('<async:schedule name="nightly"'
           ' callable="zc.async.tests.test_zcml.a_function"'
           ' cron="0 3 * * *" timezone="Europe/Berlin" />')


class ScheduleDirectiveTests(ZCMLTestCase):

    def test_registers_an_installer_after_the_policy_installers(self):
        self.process(INCLUDE, NIGHTLY, BASIC)
        handlers = self.handlers()
        self.assertEqual(handlers[0], subscribers.queue_installer)
        installer = handlers[-1]
        self.assertIsInstance(installer, subscribers.ScheduleInstaller)
        self.assertEqual((installer.name, installer.queue, installer.callable),
                         ('nightly', '', a_function))
        made = installer.make()
        self.assertEqual((made.rule, made.catch_up, made.overlap), (
            "cron '0 3 * * *' in Europe/Berlin", 'once', True))

    def test_every_seconds_and_options(self):
        self.process(
            INCLUDE, '<async:schedule name="often" queue="other"'
            ' callable="zc.async.tests.test_zcml.a_function" every="90"'
            ' catch_up="skip" overlap="false" />')
        installer, = self.handlers()
        made = installer.make()
        self.assertEqual(
            (installer.queue, made.every, made.catch_up, made.overlap),
            ('other', datetime.timedelta(seconds=90), 'skip', False))

    def assertFails(self, line, *fragments,
                    error=zope.configuration.exceptions.ConfigurationError):
        with self.assertRaises(error) as caught:
            self.process(INCLUDE, line)
        for fragment in fragments:
            self.assertIn(fragment, str(caught.exception))
        self.assertEqual(self.handlers(), [])

    def test_bad_settings_fail_at_configuration_time(self):
        call = ' callable="zc.async.tests.test_zcml.a_function"'
        self.assertFails(
            '<async:schedule name="x"%s cron="61 * * * *" />' % call,
            "schedule 'x': invalid cron expression '61 * * * *'")
        self.assertFails(
            '<async:schedule name="x"%s />' % call,
            "schedule 'x': give a schedule exactly one rule")
        self.assertFails(
            '<async:schedule name="x"%s every="60" cron="* * * * *" />'
            % call, '(got both)')
        self.assertFails(
            '<async:schedule name="x"%s every="0" />' % call,
            'every must be a positive interval')
        self.assertFails(
            '<async:schedule name="x"%s cron="* * * * *" timezone="Nowhere"'
            ' />' % call, "unknown time zone 'Nowhere'")
        self.assertFails(
            '<async:schedule name="x"%s every="60" catch_up="later" />'
            % call, 'catch_up')
        self.assertFails(
            '<async:schedule name="x" callable="zc.async.tests.nothing"'
            ' every="60" />', 'nothing')

    def test_two_schedules_of_one_name_conflict(self):
        with self.assertRaises(
                zope.configuration.config.ConfigurationConflictError) as c:
            self.process(INCLUDE, NIGHTLY, NIGHTLY)
        self.assertIn("('zc.async', 'schedule', '', 'nightly')",
                      str(c.exception))


class ScheduleInstallerTests(unittest.TestCase):
    """The installer on a database opened more than once."""

    def setUp(self):
        zc.asynchronous.testing.set_now(
            datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc))
        self.addCleanup(zc.asynchronous.clock._set_frozen_now, None)
        self.db = zc.asynchronous.testing.db()
        self.addCleanup(self.db.close)

    def open_database(self, installer):
        installer(interfaces.DatabaseOpened(self.db))
        conn = self.db.open(transaction.TransactionManager())
        self.addCleanup(conn.close)
        return conn.root()[interfaces.KEY][''].schedules

    def test_adds_keeps_and_replaces(self):
        subscribers.queue_installer(interfaces.DatabaseOpened(self.db))
        minute = datetime.timedelta(minutes=1)
        first = self.open_database(subscribers.ScheduleInstaller(
            'report', a_function, every=minute))['report']
        # A restart a while later keeps it, with its next run,
        zc.asynchronous.testing.set_now(first.next_run + 30 * minute)
        kept = self.open_database(subscribers.ScheduleInstaller(
            'report', a_function, every=minute))['report']
        self.assertEqual((kept._p_oid, kept.next_run),
                         (first._p_oid, first.next_run))
        # and a changed definition replaces it.
        changed = self.open_database(subscribers.ScheduleInstaller(
            'report', a_function, every=minute, catch_up='all'))['report']
        self.assertNotEqual(changed._p_oid, first._p_oid)
        self.assertEqual(changed.catch_up, 'all')

    def test_needs_the_queue(self):
        installer = subscribers.ScheduleInstaller(
            'report', a_function, every=datetime.timedelta(minutes=1))
        with self.assertRaises(ValueError) as caught:
            installer(interfaces.DatabaseOpened(self.db))
        self.assertEqual(str(caught.exception), (
            "schedule 'report' needs the zc.async queue '', which the"
            " database does not have: install the queues first (a"
            " dispatcher policy does)"))

    def test_checks_its_settings_when_made(self):
        with self.assertRaises(ValueError):
            subscribers.ScheduleInstaller('x', a_function)


class ScheduleStartUpTests(StartUpTests):
    """A site whose ZCML declares a schedule runs its jobs."""

    def test_basic_policy_with_a_schedule(self):
        dispatcher = self.start([
            INCLUDE, BASIC, '<async:schedule name="often"'
            ' callable="zc.async.tests.test_zcml.a_function" every="0.2" />'])
        queue = self.open().root()[interfaces.KEY]['']
        tm = queue._p_jar.transaction_manager

        def completed_jobs():
            tm.begin()
            return [job for agent in queue.dispatchers[dispatcher.UUID]
                    .values() for job in agent.completed
                    if job.annotations.get(schedule.SCHEDULE_KEY) == 'often']
        jobs = wait_until(
            completed_jobs, DEADLINE, 'a completed job of the schedule')
        self.assertEqual(jobs[0].result, 'function')


def test_suite():
    suite = unittest.TestSuite()
    for case in (ScheduleDirectiveTests, ScheduleInstallerTests):
        suite.addTests(unittest.defaultTestLoader.loadTestsFromTestCase(case))
    suite.addTest(ScheduleStartUpTests('test_basic_policy_with_a_schedule'))
    return suite
