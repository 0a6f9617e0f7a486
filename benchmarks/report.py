"""Ratios to the raw commit rate, and the readable table.

Rates are compared with the raw commit rate of the same storage in the
same run: W1 and W4's drain with one client's rate (a dispatcher's
commits are serial per worker thread), W3 and W4's enqueue with four
clients' rate (four producers).  A latency is also given in "commit
times" (the latency divided by one client's time per commit).
"""

GOALS = {
    'w1': 'jobs/commit >= 0.8 (relstorage: 1.7)',
    'w2': 'p50/p99 <= 2.5/5 ms (zeo), 4/10 ms (relstorage)',
    'w3': 'puts/commit >= 0.9, 0 conflicts',
    'w4': 'per-job cost within 10% of empty',
    'rss': 'flat after warm-up',
}


def add_ratios(results):
    """Add ``ratio`` figures to each storage's results, in place."""
    for figures in results['storages'].values():
        raw = figures['commit']
        one = raw['one_client']['commits_per_s']
        four = raw['four_clients']['commits_per_s']
        if 'w1' in figures:
            w1 = figures['w1']
            w1['ratio_to_raw_commit'] = w1['jobs_per_s'] / one
        if 'w2' in figures:
            figures['w2']['p50_in_commit_times'] = (
                figures['w2']['p50_ms'] * one / 1000)
        if 'w3' in figures:
            w3 = figures['w3']
            w3['ratio_to_raw_commit'] = w3['jobs_per_s'] / four
        if 'w4' in figures:
            drain, enqueue = figures['w4']['drain'], figures['w4']['enqueue']
            drain['ratio_to_raw_commit'] = drain['jobs_per_s'] / one
            enqueue['ratio_to_raw_commit'] = enqueue['jobs_per_s'] / four
            if 'w1' in figures:
                drain['cost_vs_empty'] = (
                    drain['ms_per_job'] / figures['w1']['ms_per_job'] - 1)
            if 'w3' in figures:
                enqueue['cost_vs_empty'] = (
                    enqueue['ms_per_job'] / figures['w3']['ms_per_job'] - 1)


def rows(figures):
    """``(label, value, ratio, goal)`` rows for one storage."""
    raw = figures['commit']
    out = [
        ('raw commits/s, 1 client',
         '%.0f' % raw['one_client']['commits_per_s'], '1.00', ''),
        ('raw commits/s, 4 clients',
         '%.0f' % raw['four_clients']['commits_per_s'], '1.00', ''),
    ]
    if 'sql_one_client' in raw:
        out.append(('plain SQL INSERT+COMMIT/s, 1 client',
                    '%.0f' % raw['sql_one_client']['commits_per_s'], '', ''))
    if 'w1' in figures:
        w1 = figures['w1']
        out.append(('W1 drain jobs/s', '%.0f' % w1['jobs_per_s'],
                    '%.2f' % w1['ratio_to_raw_commit'], GOALS['w1']))
    if 'w2' in figures:
        w2 = figures['w2']
        out.append(('W2 latency p50/p90/p99/max ms',
                    '%.1f/%.1f/%.1f/%.1f' % (w2['p50_ms'], w2['p90_ms'],
                                             w2['p99_ms'], w2['max_ms']),
                    '%.1f ct' % w2['p50_in_commit_times'], GOALS['w2']))
    if 'w3' in figures:
        w3 = figures['w3']
        out.append(('W3 enqueue jobs/s (4 producers)',
                    '%.0f' % w3['jobs_per_s'],
                    '%.2f' % w3['ratio_to_raw_commit'], GOALS['w3']))
        out.append(('W3 conflicts / retries', '%d / %d' % (
            w3['conflicts'], w3['retries']), '', ''))
    if 'w4' in figures:
        out.extend(_w4_rows(figures['w4']))
    return out


def _w4_rows(w4):
    pending = '{:,}'.format(w4['pending'])
    out = []
    for half in ('drain', 'enqueue'):
        figures = w4[half]
        growth = ('' if 'cost_vs_empty' not in figures
                  else ' (%+.0f%%)' % (100 * figures['cost_vs_empty']))
        out.append(('W4 %s jobs/s, %s pending' % (half, pending),
                    '%.0f%s' % (figures['jobs_per_s'], growth),
                    '%.2f' % figures['ratio_to_raw_commit'], GOALS['w4']))
    marks = sorted((int(k.rsplit('_', 1)[1]), v)
                   for k, v in w4['drain'].items()
                   if k.startswith('rss_mb_at_'))
    if marks:
        out.append(('dispatcher RSS MiB at ' + '/'.join(
            '{:,}'.format(m) for m, _ in marks) + ' jobs',
            '/'.join('%.0f' % v for _, v in marks), '', GOALS['rss']))
    return out


def table(results):
    """The results as a plain-text table, one column pair per storage."""
    order = ('file', 'zeo', 'relstorage')  # JSON files keep keys sorted
    # A/B columns ('zeo batch 10') follow their storage's.
    storages = sorted(results['storages'], key=lambda s: (
        order.index(s.split()[0]) if s.split()[0] in order else len(order),
        s))
    per = {s: {row[0]: row for row in rows(results['storages'][s])}
           for s in storages}
    labels, goals = [], {}  # every storage's rows, each after its
    for s in storages:       # predecessor in the storage that has it
        previous = None
        for label, _, _, goal in per[s].values():
            if label not in goals:
                at = labels.index(previous) + 1 if previous else 0
                labels.insert(at, label)
            goals[label] = goals.get(label) or goal
            previous = label
    header = ['figure'] + sum(
        [[s, 'ratio'] for s in storages], []) + ['goal']
    lines = [header]
    for label in labels:
        line = [label]
        for s in storages:
            row = per[s].get(label, ('', '', '', ''))
            line += [row[1], row[2]]
        line.append(goals[label])
        lines.append(line)
    widths = [max(len(line[c]) for line in lines)
              for c in range(len(header))]
    rule = '  '.join('-' * w for w in widths)
    text = [rule]
    for n, line in enumerate(lines):
        text.append('  '.join(cell.ljust(w) for cell, w in
                              zip(line, widths)).rstrip())
        if n == 0:
            text.append(rule)
    text.append(rule)
    machine = results['machine']
    text.append('%s run, %s, Python %s, %s CPUs, ZODB %s, ZEO %s, '
                'RelStorage %s' % (
                    results['mode'], results['started'], machine['python'],
                    machine['cpus'], machine['ZODB'], machine['ZEO'],
                    machine.get('RelStorage')))
    if 'load_average_start' in results:
        text.append('load average (1/5/15 min) at start %s, at end %s' % tuple(
            '/'.join('%.1f' % x for x in results[key])
            for key in ('load_average_start', 'load_average_end')))
    text.append('ratio: figure / raw commit rate of the same storage'
                ' (ct: p50 latency in commit times)')
    return '\n'.join(text) + '\n'
