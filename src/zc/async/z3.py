"""Zope integration: job annotations, and jobs run in their Zope context.

* :func:`annotations` makes ``IAnnotations(job)`` the job's own
  ``annotations`` mapping (registered by ``configure.zcml`` and
  ``configure.minimal``).
* :class:`Job` remembers the local site and the principals of the security
  interaction current when it is made, and re-establishes them while it
  runs in a dispatcher's worker thread (the call, the commit of its result
  and that commit's hooks); :class:`Participation` carries each principal
  into that interaction.
"""
import threading

import zope.annotation.interfaces
import zope.authentication.interfaces
import zope.component
import zope.component.hooks
import zope.interface
import zope.security.interfaces
import zope.security.management

from . import interfaces
from .job import Job as _Job


@zope.component.adapter(interfaces.IJob)
@zope.interface.implementer(zope.annotation.interfaces.IAnnotations)
def annotations(job):
    """``IAnnotations(job)``: the job's ``annotations`` BTree itself."""
    return job.annotations


@zope.interface.implementer(zope.security.interfaces.IParticipation)
class Participation:
    """The participation of ``principal`` in a job's interaction."""

    def __init__(self, principal):
        self.principal = principal
        self.interaction = None  # set by the security policy


# In each thread, the ids of the z3 jobs set up and not yet torn down,
# innermost last: tearDown undoes only what its own setUp did.
_set_up = threading.local()


def _set_up_jobs():
    jobs = getattr(_set_up, 'jobs', None)
    if jobs is None:
        jobs = _set_up.jobs = []
    return jobs


class Job(_Job):
    """A job that runs in the site and with the principals of its creation.

    ``site`` is the local site current when the job was made (None for
    none) and ``participants`` the ids of the principals in the security
    interaction then current (``()`` for none); both may be changed before
    the job runs.
    """

    site = None  # a persistent local site, or None
    participants = ()  # principal ids

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.site = zope.component.hooks.getSite()
        self.participants = _current_principal_ids()

    def setUp(self):
        """Make ``site`` the current site and start an interaction of
        ``participants`` (principals found through the ``IAuthentication``
        utility of that site); return the site that was current.

        A current interaction is put aside (and back by :meth:`tearDown`):
        the job runs with exactly its own participants, or with no
        interaction at all when it has none.
        """
        old_site = zope.component.hooks.getSite()
        zope.component.hooks.setSite(self.site)
        try:
            participations = [Participation(principal)
                              for principal in self._principals()]
        except BaseException:
            zope.component.hooks.setSite(old_site)
            raise
        # Keeps the current interaction for restoreInteraction().
        zope.security.management.endInteraction()
        if participations:
            zope.security.management.newInteraction(*participations)
        _set_up_jobs().append(id(self))
        return old_site

    def tearDown(self, setup_info):
        """Restore the site ``setup_info`` (what :meth:`setUp` returned)
        and the interaction that was current before :meth:`setUp`.

        Does nothing when :meth:`setUp` failed (it undid its own work).
        """
        jobs = _set_up_jobs()
        if not jobs or jobs[-1] != id(self):
            return
        jobs.pop()
        zope.security.management.restoreInteraction()
        zope.component.hooks.setSite(setup_info)

    def _principals(self):
        if not self.participants:
            return []
        authentication = zope.component.getUtility(
            zope.authentication.interfaces.IAuthentication)
        return [authentication.getPrincipal(principal_id)
                for principal_id in self.participants]


def _current_principal_ids():
    """The ids of the principals in the current interaction, in order."""
    interaction = zope.security.management.queryInteraction()
    if interaction is None:
        return ()
    return tuple(participation.principal.id
                 for participation in interaction.participations
                 if participation.principal is not None)
