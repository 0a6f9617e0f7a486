"""Helpers of zc.async before 1.4, kept so that old pickles still resolve."""


def success_or_failure(success, failure, res):
    """Call ``failure`` or ``success`` with ``res``, depending on its kind.

    The callback of pre-1.4 jobs: a Twisted Failure goes to ``failure``,
    anything else to ``success``; with no matching callable, ``res`` is
    returned unchanged.
    """
    import twisted.python.failure
    if isinstance(res, twisted.python.failure.Failure):
        call = failure
    else:
        call = success
    if call is None:
        return res
    return call(res)


def chooseFirst(agent):
    """The deprecated default chooser: claim the next job of the queue."""
    return agent.queue.claim()
