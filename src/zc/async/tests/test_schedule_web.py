"""The dashboard shows each queue's schedules with their next run: the
JSON API over HTTP, and the page in headless Chromium (see ``test_web``).
"""
import datetime
import unittest

import transaction

from zc.asynchronous import schedule
from zc.asynchronous.tests import browser
from zc.asynchronous.tests.live import wait_until
from zc.asynchronous.tests.test_web import BrowserTests
from zc.asynchronous.tests.test_web import ChromiumLayer
from zc.asynchronous.tests.test_web import DashboardTestCase
from zc.asynchronous.tests.test_web import add


class ScheduleOverviewTests(DashboardTestCase):

    def add_schedules(self):
        """'hourly' (not due for an hour) and 'often', which fires."""
        self.queue.schedules['hourly'] = schedule.Schedule(
            add, 1, 2, every=datetime.timedelta(hours=1))
        often = self.queue.schedules['often'] = schedule.Schedule(
            add, 3, 4, cron='* * * * * */1', catch_up='skip')
        transaction.commit()

        def fired():
            transaction.begin()  # sees the dispatcher's commits
            return often.last_job is not None
        wait_until(fired, 30, 'a tick of often')
        return often

    def test_overview_lists_the_schedules(self):
        often = self.add_schedules()
        answer = self.get_json('/api/overview')['queues']['']['schedules']
        self.assertEqual([s['name'] for s in answer], ['hourly', 'often'])
        hourly = answer[0]
        self.assertEqual(
            (hourly['callable'], hourly['rule'], hourly['last run'],
             hourly['last job']),
            (add.__module__ + '.add', 'every 1:00:00', None, None))
        self.assertTrue(hourly['next run'].endswith('Z'))
        self.assertEqual(answer[1]['rule'],
                         "cron '* * * * * */1' in UTC")
        self.assertIsNotNone(answer[1]['last job'])
        self.assertEqual(answer[1]['catch up'], 'skip')
        self.assertIsNotNone(often.last_run)


@unittest.skipIf(browser.unavailable(), browser.unavailable())
class ScheduleBrowserTests(ScheduleOverviewTests, BrowserTests):

    layer = ChromiumLayer

    def test_overview_lists_the_schedules(self):
        self.add_schedules()
        self.open('/')
        self.browser.wait_for(
            'document.querySelector("#schedules").innerText'
            '.includes("often")')
        text = self.text('#schedules')
        self.assertIn('hourly', text)
        self.assertIn('every 1:00:00', text)
        self.assertIn("cron '* * * * * */1' in UTC", text)
        self.assertEqual(self.browser.errors(), [])
        self.screenshot('dashboard-schedules.png')


def test_suite():
    suite = unittest.TestSuite()
    for case in (ScheduleOverviewTests, ScheduleBrowserTests):
        suite.addTest(case('test_overview_lists_the_schedules'))
    return suite
