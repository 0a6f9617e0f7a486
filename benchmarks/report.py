"""Ratios to the raw commit rate, and the readable table.

Rates are compared with the raw commit rate of the same storage in the
same run: W1 and W4's drain with one client's rate (a dispatcher's
commits are serial per worker thread), W3 and W4's enqueue with four
clients' rate (four producers).  A latency is also given in "commit
times" (the latency divided by one client's time per commit).
"""

GOALS = {
    'w1': 'jobs/commit >= 0.8',
    'w2': 'ZEO: p50 <= 3 ms, p99 <= 20 ms',
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
        figures['w1']['ratio_to_raw_commit'] = figures['w1']['jobs_per_s'] / one
        figures['w2']['p50_in_commit_times'] = figures['w2']['p50_ms'] * one / 1000
        figures['w3']['ratio_to_raw_commit'] = figures['w3']['jobs_per_s'] / four
        w4 = figures['w4']
        w4['drain']['ratio_to_raw_commit'] = w4['drain']['jobs_per_s'] / one
        w4['enqueue']['ratio_to_raw_commit'] = w4['enqueue']['jobs_per_s'] / four
        w4['drain']['cost_vs_empty'] = (
            w4['drain']['ms_per_job'] / figures['w1']['ms_per_job'] - 1)
        w4['enqueue']['cost_vs_empty'] = (
            w4['enqueue']['ms_per_job'] / figures['w3']['ms_per_job'] - 1)


def rows(figures):
    """``(label, value, ratio, goal)`` rows for one storage."""
    raw = figures['commit']
    w1, w2, w3, w4 = (figures[k] for k in ('w1', 'w2', 'w3', 'w4'))
    pending = '{:,}'.format(w4['pending'])
    out = [
        ('raw commits/s, 1 client',
         '%.0f' % raw['one_client']['commits_per_s'], '1.00', ''),
        ('raw commits/s, 4 clients',
         '%.0f' % raw['four_clients']['commits_per_s'], '1.00', ''),
        ('W1 drain jobs/s', '%.0f' % w1['jobs_per_s'],
         '%.2f' % w1['ratio_to_raw_commit'], GOALS['w1']),
        ('W2 latency p50/p90/p99/max ms', '%.1f/%.1f/%.1f/%.1f' % (
            w2['p50_ms'], w2['p90_ms'], w2['p99_ms'], w2['max_ms']),
         '%.1f ct' % w2['p50_in_commit_times'], GOALS['w2']),
        ('W3 enqueue jobs/s (4 producers)', '%.0f' % w3['jobs_per_s'],
         '%.2f' % w3['ratio_to_raw_commit'], GOALS['w3']),
        ('W3 conflicts / retries', '%d / %d' % (w3['conflicts'],
                                               w3['retries']), '', ''),
        ('W4 drain jobs/s, %s pending' % pending,
         '%.0f (%+.0f%%)' % (w4['drain']['jobs_per_s'],
                             100 * w4['drain']['cost_vs_empty']),
         '%.2f' % w4['drain']['ratio_to_raw_commit'], GOALS['w4']),
        ('W4 enqueue jobs/s, %s pending' % pending,
         '%.0f (%+.0f%%)' % (w4['enqueue']['jobs_per_s'],
                             100 * w4['enqueue']['cost_vs_empty']),
         '%.2f' % w4['enqueue']['ratio_to_raw_commit'], GOALS['w4']),
    ]
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
    storages = list(results['storages'])
    per = {s: rows(results['storages'][s]) for s in storages}
    labels = [r[0] for r in per[storages[0]]]
    header = ['figure'] + sum(
        [[s, 'ratio'] for s in storages], []) + ['goal']
    lines = [header]
    for i, label in enumerate(labels):
        line = [label]
        for s in storages:
            line += [per[s][i][1], per[s][i][2]] if i < len(per[s]) \
                else ['', '']
        line.append(per[storages[0]][i][3])
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
    text.append('%s run, %s, Python %s, %s CPUs, ZODB %s, ZEO %s' % (
        results['mode'], results['started'], machine['python'],
        machine['cpus'], machine['ZODB'], machine['ZEO']))
    text.append('ratio: figure / raw commit rate of the same storage'
                ' (ct: p50 latency in commit times)')
    return '\n'.join(text) + '\n'
