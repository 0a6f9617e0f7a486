// The zc.async dashboard: reads the JSON API and refreshes every few
// seconds.  Data goes into the page as text (never as HTML).
'use strict';

const REFRESH_MS = 3000;
const PAGE_SIZE = 50;
const FILTERS = ['state', 'queue', 'callable'];
const state = {offset: 0, busy: false, actions: false, replay: false,
               job: null};

function $(selector) { return document.querySelector(selector); }

function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (className) node.className = className;
  return node;
}

function row(cells) {
  const tr = document.createElement('tr');
  for (const cell of cells) {
    tr.appendChild(cell instanceof Node ? wrap(cell) : el('td', cell));
  }
  return tr;
}

function wrap(node) {
  const td = document.createElement('td');
  td.appendChild(node);
  return td;
}

function fill(tbody, rows) {
  tbody.replaceChildren(...rows);
}

function duration(value) {
  if (!value) return '';
  const parts = [];
  for (const [key, unit] of [['days', 'd'], ['hours', 'h'],
                             ['minutes', 'm']]) {
    if (value[key]) parts.push(value[key] + unit);
  }
  if (value.seconds || !parts.length) {
    parts.push((value.seconds || 0).toFixed(1) + 's');
  }
  return parts.join(' ');
}

function time(value) {
  return value ? value.replace('T', ' ').replace(/\.\d+Z$/, 'Z') : '';
}

function jobLink(id) {
  const [oid, database] = id;
  const a = el('a', oid);
  a.href = '/jobs/' + oid + '?database=' + encodeURIComponent(database);
  return a;
}

async function api(path, options) {
  const response = await fetch(path, Object.assign({cache: 'no-store'},
                                                   options || {}));
  const body = await response.json();
  if (!response.ok) {
    throw new Error(body.error || ('HTTP ' + response.status));
  }
  return body;
}

function showError(error) {
  const node = $('#error');
  node.hidden = !error;
  node.textContent = error ? String(error.message || error) : '';
}

// ------------------------------------------------------------- overview

function renderOverview(data) {
  $('#database').textContent = 'database ' + JSON.stringify(data.database);
  state.actions = data.actions;
  const queues = [];
  const dispatchers = [];
  for (const [name, queue] of Object.entries(data.queues)) {
    const c = queue.counts;
    const quotas = Object.entries(queue.quotas).map(
      ([q, info]) => q + ' ' + info.len + '/' + info.size).join(', ');
    queues.push(row([JSON.stringify(name), c.pending, c.assigned, c.active,
                     c.callbacks, c.completed, c['succeeded last hour'],
                     c['failed last hour'], quotas]));
    for (const [uuid, d] of Object.entries(queue.dispatchers)) {
      const word = !d.activated ? 'deactivated' : d.dead ? 'dead' :
        d.degraded ? 'degraded' : 'alive';
      const agents = Object.entries(d.agents).map(
        ([a, info]) => a + ' ' + info.len + '/' + info.size +
          (info['claims fail'] ? ' (claims fail: ' + info['claims fail'] +
           ')' : '')).join(', ');
      const unloadable = el('span');
      for (const id of d['unloadable jobs'] || []) {
        unloadable.append(jobLink(id), ' ');
      }
      dispatchers.push(row([JSON.stringify(name), uuid,
                            el('span', word, word), time(d['last ping']),
                            duration(d['since ping']), duration(d.uptime),
                            agents, unloadable]));
    }
  }
  fill($('#queues tbody'), queues);
  fill($('#dispatchers tbody'), dispatchers);
  fill($('#schedules tbody'), scheduleRows(data.queues));
  const own = data['this dispatcher'];
  const unloadable = own && own['unloadable jobs'] ?
    ', cannot load ' + own['unloadable jobs'].length + ' pending job(s)' : '';
  $('#this-dispatcher').textContent = own ?
    'This process: dispatcher ' + own.uuid + ' is ' + own.status +
    ', uptime ' + duration(own.uptime) + ', last poll ' +
    duration(own['time since last poll']) + ' ago' + unloadable : '';
}

function scheduleRows(queues) {
  const rows = [];
  for (const [name, queue] of Object.entries(queues)) {
    for (const s of queue.schedules || []) {
      const last = s['last job'] ?
        [jobLink(s['last job']), ' ' + s['last job status']] : [];
      const cell = el('span');
      cell.append(...last);
      rows.push(row([JSON.stringify(name), s.name, s.callable, s.rule,
                     time(s['next run']), time(s['last run']), cell]));
    }
  }
  return rows;
}

function filterQuery() {
  const params = new URLSearchParams();
  const form = $('#filters');
  for (const name of FILTERS) {
    const value = form.elements[name].value.trim();
    if (value) params.set(name, value);
  }
  return params;
}

function renderJobs(data) {
  fill($('#jobs tbody'), data.jobs.map(job => row([
    jobLink(job.id), job.callable,
    el('span', job.failed ? 'failed' : job.status,
       job.failed ? 'failed' : job.status),
    job.queue === null ? '' : JSON.stringify(job.queue), job.agent || '',
    time(job['begin after']), time(job['active start']),
    time(job['active end'])])));
  $('#previous').disabled = data.offset === 0;
  $('#next').disabled = !data.more;
  $('#page').textContent = data.jobs.length ?
    'jobs ' + (data.offset + 1) + '-' + (data.offset + data.jobs.length) :
    'no jobs';
}

async function refreshOverview() {
  const params = filterQuery();
  params.set('offset', state.offset);
  params.set('limit', PAGE_SIZE);
  const [overview, jobs] = await Promise.all([
    api('/api/overview'), api('/api/jobs?' + params)]);
  renderOverview(overview);
  renderJobs(jobs);
}

function startOverview() {
  const form = $('#filters');
  const initial = new URLSearchParams(location.search);
  for (const name of FILTERS) {
    form.elements[name].value = initial.get(name) || '';
  }
  form.addEventListener('submit', event => {
    event.preventDefault();
    state.offset = 0;
    const query = filterQuery().toString();
    history.replaceState(null, '', '/' + (query ? '?' + query : ''));
    refresh();
  });
  $('#previous').addEventListener('click', () => {
    state.offset = Math.max(0, state.offset - PAGE_SIZE);
    refresh();
  });
  $('#next').addEventListener('click', () => {
    state.offset += PAGE_SIZE;
    refresh();
  });
  $('#overview-page').hidden = false;
  return refreshOverview;
}

// ------------------------------------------------------------ job page

const JOB_FIELDS = ['id', 'callable', 'status', 'failed', 'queue', 'agent',
                    'dispatcher', 'args', 'kwargs', 'quota names',
                    'unique key', 'attempt',
                    'begin after', 'active start', 'active end',
                    'initial callbacks end', 'wait', 'active', 'result',
                    'callbacks', 'repr'];
// Shown only for jobs that have them.
const OPTIONAL_JOB_FIELDS = ['unique key', 'attempt'];

function text(value) {
  if (value === null || value === undefined) return '';
  if (typeof value === 'string') {
    return /^\d{4}-\d\d-\d\dT/.test(value) ? time(value) : value;
  }
  if (typeof value === 'object' && !Array.isArray(value) &&
      ('seconds' in value || 'minutes' in value || 'hours' in value ||
       'days' in value)) {
    return duration(value);
  }
  return JSON.stringify(value);
}

function definitions(dl, pairs) {
  const nodes = [];
  for (const [name, value] of pairs) {
    nodes.push(el('dt', name), el('dd', text(value)));
  }
  dl.replaceChildren(...nodes);
}

function renderJob(job) {
  $('#job-title').textContent = 'Job ' + job.id[0] + ' (' +
    JSON.stringify(job.id[1]) + '): ' + job.callable;
  definitions($('#job-fields'), JOB_FIELDS.filter(name =>
    name in job || !OPTIONAL_JOB_FIELDS.includes(name)).map(name => [name,
    name === 'queue' && job.queue !== null ? JSON.stringify(job.queue) :
    job[name]]));
  fill($('#annotations tbody'), Object.entries(job.annotations).map(
    ([key, value]) => row([key, value])));
  if (!Object.keys(job.annotations).length) {
    fill($('#annotations tbody'), [row(['(none)'])]);
  }
  definitions($('#retry'), [
    ['policy factory', job.retry['policy factory']],
    ['policy', job.retry.policy], ['data', job.retry.data]]);
  $('#traceback-section').hidden = !job.traceback;
  $('#traceback').textContent = job.traceback || '';
  $('#actions').hidden = !state.actions;
  $('#retry-button').hidden = !job.failed;
  $('#cancel-button').hidden = job.status !== 'pending';
  $('#abort-button').hidden = !['assigned', 'active'].includes(job.status);
  $('#sandbox').hidden = !state.replay ||
    !(job.failed || job.status === 'pending');
  $('#replay-button').hidden = !job.failed;
  $('#dry-run-button').hidden = job.status !== 'pending';
}

async function act(name) {
  const result = $('#action-result');
  result.textContent = '';
  try {
    const answer = await api(state.job + '/' + name + location.search, {
      method: 'POST',
      headers: {'Authorization': 'Bearer ' + $('#token').value}});
    result.textContent = JSON.stringify(answer);
    if (answer['new job']) {
      result.appendChild(document.createTextNode(' '));
      result.appendChild(jobLink(answer['new job']));
    }
  } catch (error) {
    result.textContent = 'refused: ' + error.message;
  }
  refresh();
}

// Replay or dry-run: the report of the job's run in a sandbox.
async function runInSandbox(name) {
  const report = $('#sandbox-report');
  report.textContent = 'running...';
  try {
    const answer = await api(state.job + '/' + name + location.search,
                             {method: 'POST'});
    report.textContent = answer.text;
  } catch (error) {
    report.textContent = 'refused: ' + error.message;
  }
}

function startJob(oid) {
  state.job = '/api/jobs/' + encodeURIComponent(oid);
  $('#retry-button').addEventListener('click', () => act('retry'));
  $('#cancel-button').addEventListener('click', () => act('cancel'));
  $('#abort-button').addEventListener('click', () => act('abort'));
  $('#replay-button').addEventListener('click',
                                       () => runInSandbox('replay'));
  $('#dry-run-button').addEventListener('click',
                                        () => runInSandbox('dry-run'));
  $('#job-page').hidden = false;
  return async () => {
    const [overview, job] = await Promise.all([
      api('/api/overview'), api(state.job + location.search)]);
    $('#database').textContent = 'database ' +
      JSON.stringify(overview.database);
    state.actions = overview.actions;
    state.replay = overview.replay;
    renderJob(job);
  };
}

// ------------------------------------------------------------- refresh

let load = null;

async function refresh() {
  if (state.busy) return;
  state.busy = true;
  try {
    await load();
    showError(null);
    $('#refreshed').textContent = 'updated ' +
      new Date().toLocaleTimeString();
    document.body.dataset.refreshes =
      Number(document.body.dataset.refreshes || 0) + 1;
  } catch (error) {
    showError(error);
  } finally {
    state.busy = false;
  }
}

function start() {
  const match = location.pathname.match(/^\/jobs\/([^/]+)$/);
  load = match ? startJob(decodeURIComponent(match[1])) : startOverview();
  refresh();
  setInterval(() => { if ($('#live').checked) refresh(); }, REFRESH_MS);
}

document.addEventListener('DOMContentLoaded', start);
