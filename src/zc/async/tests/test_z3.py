"""Tests of zc.async.z3: job annotations, Participation, and Zope jobs.

The jobs run in a real threaded dispatcher on a FileStorage; the site is a
persistent Zope root folder whose local site manager holds the
``IAuthentication`` utility that resolves the job's principals.
"""
import os
import shutil
import tempfile
import threading
import unittest

import persistent
import transaction
import zope.annotation.interfaces
import zope.authentication.interfaces
import zope.component
import zope.component.hooks
import zope.component.testing
import zope.interface
import zope.interface.verify
import zope.security.interfaces
import zope.security.management
import zope.site.folder
import zope.site.site
import ZODB
import ZODB.FileStorage

import zc.asynchronous.ops.cli
import zc.asynchronous.configure
import zc.asynchronous.dispatcher
import zc.asynchronous.interfaces as interfaces
import zc.asynchronous.job
import zc.asynchronous.testing
import zc.asynchronous.twist
import zc.asynchronous.z3 as z3
from zc.asynchronous.tests.test_subscribers import DEADLINE
from zc.asynchronous.tests.test_subscribers import use_temporary_instance_uuid

# What the jobs below saw, appended from the worker threads.
SEEN = []


class Principal:

    def __init__(self, id):
        self.id = id
        self.title = id.capitalize()
        self.description = ''


@zope.interface.implementer(zope.authentication.interfaces.IAuthentication)
class Authentication(persistent.Persistent):
    """Knows the principals named in ``ids``."""

    def __init__(self, *ids):
        self.ids = ids

    def getPrincipal(self, id):
        if id not in self.ids:
            raise zope.authentication.interfaces.PrincipalLookupError(id)
        return Principal(id)

    def authenticate(self, request):
        return None

    def unauthenticatedPrincipal(self):
        return None

    def unauthorized(self, id, request):
        pass


def context(where):
    """The site and principals current in this thread, recorded in SEEN."""
    interaction = zope.security.management.queryInteraction()
    seen = {
        'where': where,
        'site': zope.component.hooks.getSite(),
        'principals': None if interaction is None else [
            p.principal.id for p in interaction.participations],
        'thread': threading.get_ident(),
    }
    SEEN.append(seen)
    return seen


def report_context():
    """Record the context of the call and of the commit that stores its
    result; return the principals and the site's name."""
    transaction.get().addBeforeCommitHook(context, ('before commit',))
    transaction.get().addAfterCommitHook(
        lambda status: context('after commit'))
    seen = context('call')
    site = seen['site']
    return seen['principals'], None if site is None else site.__name__


def fail_in_context():
    context('call')
    raise RuntimeError('boom')


class Z3TestCase(unittest.TestCase):

    def setUp(self):
        zope.component.testing.setUp()
        self.addCleanup(zope.component.testing.tearDown)
        zope.component.hooks.setHooks()
        self.addCleanup(zope.security.management.endInteraction)
        self.addCleanup(zope.component.hooks.setSite, None)
        del SEEN[:]

    def make_site(self, *principal_ids):
        site = zope.site.folder.rootFolder()
        site.__name__ = 'app'
        site.setSiteManager(zope.site.site.LocalSiteManager(site))
        site.getSiteManager().registerUtility(
            Authentication(*principal_ids),
            zope.authentication.interfaces.IAuthentication)
        return site

    def job_made_in_site(self, call, *principal_ids):
        """A ``z3.Job`` of ``call`` made in the site, by an interaction of
        ``principal_ids``; neither is left set."""
        zope.component.hooks.setSite(self.site)
        self.interaction_of(*principal_ids)
        job = z3.Job(call)
        zope.security.management.endInteraction()
        zope.component.hooks.setSite(None)
        return job

    def interaction_of(self, *principal_ids):
        zope.security.management.newInteraction(*[
            z3.Participation(Principal(id)) for id in principal_ids])
        return zope.security.management.getInteraction()


class AnnotationsTests(unittest.TestCase):

    def test_the_adapter_gives_the_jobs_annotations(self):
        job = zc.asynchronous.job.Job(context, 'x')
        self.assertIs(z3.annotations(job), job.annotations)
        self.assertTrue(zope.annotation.interfaces.IAnnotations.implementedBy(
            z3.annotations))
        self.assertEqual(zope.component.adaptedBy(z3.annotations),
                         (interfaces.IJob,))


class ParticipationTests(unittest.TestCase):

    def test_interface(self):
        participation = z3.Participation(Principal('alice'))
        zope.interface.verify.verifyObject(
            zope.security.interfaces.IParticipation, participation)
        self.assertEqual(participation.principal.id, 'alice')
        self.assertIsNone(participation.interaction)

    def test_joins_an_interaction(self):
        participation = z3.Participation(Principal('alice'))
        zope.security.management.newInteraction(participation)
        self.addCleanup(zope.security.management.endInteraction)
        self.assertIs(participation.interaction,
                      zope.security.management.getInteraction())


class CreationTests(Z3TestCase):

    def test_without_site_or_interaction(self):
        job = z3.Job(context, 'x')
        self.assertIsNone(job.site)
        self.assertEqual(job.participants, ())
        self.assertIsInstance(job, zc.asynchronous.job.Job)
        zope.interface.verify.verifyObject(interfaces.IJob, job)
        self.assertEqual(z3.Job.__module__, 'zc.async.z3')

    def test_captures_the_site_and_principal_ids(self):
        site = self.make_site()
        zope.component.hooks.setSite(site)
        self.interaction_of('alice', 'bob')
        job = z3.Job(context, 'x')
        self.assertIs(job.site, site)
        self.assertEqual(job.participants, ('alice', 'bob'))
        job.participants = ('carol',)
        job.site = None
        self.assertEqual((job.site, job.participants), (None, ('carol',)))

    def test_bind_passes_the_job(self):
        self.interaction_of('alice')
        job = z3.Job.bind(context, 'x')
        self.assertIs(job.args[0], job)
        self.assertEqual(job.participants, ('alice',))


class SetUpTearDownTests(Z3TestCase):
    """setUp/tearDown called in this thread, around an outer context."""

    def test_swaps_the_context_in_and_out(self):
        outer_site = self.make_site()
        outer_site.__name__ = 'outer'
        outer_interaction = self.interaction_of('zoe')
        job = z3.Job(context, 'x')
        job.site = self.make_site('alice', 'bob')
        job.participants = ('alice', 'bob')
        zope.component.hooks.setSite(outer_site)

        old_site = job.setUp()
        self.assertIs(old_site, outer_site)
        seen = context('inside')
        self.assertIs(seen['site'], job.site)
        self.assertEqual(seen['principals'], ['alice', 'bob'])
        for participation in (zope.security.management.getInteraction()
                              .participations):
            self.assertIsInstance(participation, z3.Participation)

        job.tearDown(old_site)
        self.assertIs(zope.component.hooks.getSite(), outer_site)
        self.assertIs(zope.security.management.queryInteraction(),
                      outer_interaction)

    def test_a_job_without_participants_runs_without_interaction(self):
        self.interaction_of('zoe')
        outer = zope.security.management.getInteraction()
        job = z3.Job(context, 'x')
        job.participants = ()
        old_site = job.setUp()
        self.assertIsNone(zope.security.management.queryInteraction())
        self.assertIsNone(zope.component.hooks.getSite())
        job.tearDown(old_site)
        self.assertIs(zope.security.management.queryInteraction(), outer)

    def test_nothing_left_when_there_was_nothing(self):
        job = z3.Job(context, 'x')
        job.site = self.make_site('alice')
        job.participants = ('alice',)
        job.tearDown(job.setUp())
        self.assertIsNone(zope.component.hooks.getSite())
        self.assertIsNone(zope.security.management.queryInteraction())

    def test_unknown_principal_fails_set_up_and_changes_nothing(self):
        outer = self.interaction_of('zoe')
        job = z3.Job(context, 'x')
        job.site = self.make_site('alice')
        job.participants = ('alice', 'mallory')
        with self.assertRaises(
                zope.authentication.interfaces.PrincipalLookupError):
            job.setUp()
        self.assertIsNone(zope.component.hooks.getSite())
        self.assertIs(zope.security.management.queryInteraction(), outer)
        # The job calls tearDown(None) after a failed setUp: a no-op.
        job.tearDown(None)
        self.assertIs(zope.security.management.queryInteraction(), outer)

    def test_calling_the_job_directly(self):
        outer = self.interaction_of('zoe')
        job = z3.Job(report_context)
        job.site = self.make_site('alice')
        job.participants = ('alice',)
        self.assertEqual(job(), (['alice'], 'app'))
        self.assertEqual(job.status, interfaces.COMPLETED)
        self.assertIsNone(zope.component.hooks.getSite())
        self.assertIs(zope.security.management.queryInteraction(), outer)


class DispatchedTests(Z3TestCase):
    """Zope jobs run by a real dispatcher in its worker thread."""

    def setUp(self):
        super().setUp()
        self.tmpdir = tempfile.mkdtemp(prefix='zc.async-z3-')
        self.addCleanup(shutil.rmtree, self.tmpdir, True)
        use_temporary_instance_uuid(self, self.tmpdir)
        self.db = ZODB.DB(ZODB.FileStorage.FileStorage(
            os.path.join(self.tmpdir, 'Data.fs')))
        self.addCleanup(self.db.close)
        zc.asynchronous.configure.base()
        # One worker thread: every job below runs in the same thread.
        zc.asynchronous.configure.start(self.db, poll_interval=1,
                                        agent_size=1)
        dispatcher = zc.asynchronous.dispatcher.get()
        self.addCleanup(zc.asynchronous.ops.cli.stop_dispatcher, dispatcher)
        self.conn = self.db.open(
            transaction_manager=transaction.TransactionManager())
        self.addCleanup(self.conn.close)
        self.addCleanup(self.conn.transaction_manager.abort)
        self.site = self.make_site('alice', 'bob')
        self.conn.root()['app'] = self.site
        self.conn.transaction_manager.commit()

    def put(self, job):
        tm = self.conn.transaction_manager
        interfaces.IQueue(self.conn).put(job)
        tm.commit()
        return zc.asynchronous.testing.wait_for_result(job, DEADLINE)

    def test_the_job_runs_in_its_site_with_its_principals(self):
        job = self.job_made_in_site(report_context, 'alice', 'bob')

        self.assertEqual(self.put(job), (['alice', 'bob'], 'app'))
        call, before, after = SEEN
        self.assertEqual([call['where'], before['where'], after['where']],
                         ['call', 'before commit', 'after commit'])
        for seen in (call, before, after):
            self.assertEqual(seen['principals'], ['alice', 'bob'])
            self.assertEqual(seen['site']._p_oid, self.site._p_oid)
            self.assertNotEqual(seen['thread'], threading.get_ident())
        self.assertNoContextLeftIn(call['thread'])

    def test_a_failing_job_leaves_nothing_behind(self):
        job = self.job_made_in_site(fail_in_context, 'bob')

        result = self.put(job)
        self.assertIsInstance(result, zc.asynchronous.twist.Failure)
        self.assertIn('boom', result.getTraceback())
        self.assertEqual(SEEN[0]['principals'], ['bob'])
        self.assertNoContextLeftIn(SEEN[0]['thread'])

    def test_a_principal_that_cannot_be_found_fails_the_job(self):
        job = self.job_made_in_site(report_context, 'mallory')

        result = self.put(job)
        self.assertIsInstance(result, zc.asynchronous.twist.Failure)
        self.assertIn('PrincipalLookupError', result.getTraceback())
        self.assertEqual(SEEN, [])
        self.assertNoContextLeftIn(None)

    def assertNoContextLeftIn(self, thread):
        """A plain job run next (in the same worker thread) finds no site
        and no interaction."""
        del SEEN[:]
        self.put(zc.asynchronous.job.Job(context, 'next job'))
        seen, = SEEN
        if thread is not None:
            self.assertEqual(seen['thread'], thread)
        self.assertIsNone(seen['site'])
        self.assertIsNone(seen['principals'])


def test_suite():
    return unittest.defaultTestLoader.loadTestsFromName(__name__)
