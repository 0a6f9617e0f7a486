"""A placeholder for the ``Partial`` class of early zc.async versions.

Old databases may still hold pickles that name
``zc.async.partial.Partial``; they load (unpickling does not call the
constructor), but new ones cannot be made.
"""
from .job import Job


class Partial(Job):
    """Placeholder kept only so that old pickles resolve; use ``Job``."""

    def __init__(self, *args, **kwargs):
        raise Exception(
            'zc.async.partial.Partial is a placeholder that exists only so '
            'that objects pickled by early versions of zc.async load; use '
            'zc.async.job.Job instead')
