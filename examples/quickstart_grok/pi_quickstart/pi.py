"""The expensive computation: a Monte Carlo estimate of pi.

It runs as a zc.async job in a dispatcher's worker thread, reports its
progress in a live annotation of its job (which the job page shows), and
stops early when the page asks it to (the ``stop`` annotation).
"""
import random

import zc.asynchronous

CHUNK = 200000  # points between two progress reports (about 0.1 s)


def estimate(samples, chunk=CHUNK):
    """Estimate pi from ``samples`` random points in the unit square.

    Returns ``(estimate, points used)``: fewer points than asked for when
    stopped early.
    """
    rng = random.Random()
    inside = done = 0
    while done < samples:
        count = min(chunk, samples - done)
        inside += sum(1 for _ in range(count)
                      if rng.random() ** 2 + rng.random() ** 2 <= 1.0)
        done += count
        zc.asynchronous.local.setLiveAnnotation('progress', (done, samples))
        if done < samples and zc.asynchronous.local.getLiveAnnotation('stop'):
            break
    return 4.0 * inside / done, done
