// A realistic mix: mostly 10-recipient sends from 45 VUs, plus one 10,000-recipient
// broadcast every 2 seconds. Shows how large requests affect the small ones' latency.
//
//   SENDME_URL=http://127.0.0.1:18181 SENDME_TOKEN=... k6 run load-tests/broadcast-mix.js
//
// Credits: the broadcasts alone use 5,000/s and the small sends ~10x their req/s; top up
// generously first (README.md) or set SENDME_ADMIN_TOKEN so that setup() does it.
import http from 'k6/http';
import exec from 'k6/execution';
import { check } from 'k6';
import { BASE_URL, requireToken, maybeTopUp, jsonHeaders, colombianMobiles, contactsBody } from './lib/sendme.js';

const SMALL = 10;
const LARGE = 10000;
// The broadcasts draw their numbers from a separate range than the small sends.
const LARGE_OFFSET = 100000000;
const DURATION = __ENV.SENDME_DURATION || '60s';

export const options = {
  scenarios: {
    small: {
      executor: 'constant-vus',
      exec: 'small',
      vus: 45,
      duration: DURATION,
    },
    broadcasts: {
      executor: 'constant-arrival-rate',
      exec: 'broadcast',
      rate: 1,
      timeUnit: '2s',
      duration: DURATION,
      preAllocatedVUs: 2,
      maxVUs: 5,
    },
  },
  thresholds: {
    'http_req_duration{scenario:small}': ['p(99)<20'],
    'http_req_duration{scenario:broadcasts}': ['p(99)<1000'],
    http_req_failed: ['rate<0.01'],
    checks: ['rate>0.99'],
  },
  summaryTrendStats: ['avg', 'min', 'med', 'p(90)', 'p(95)', 'p(99)', 'max'],
};

export function setup() {
  requireToken();
  maybeTopUp(20000000);
}

function send(contacts, name) {
  const res = http.post(`${BASE_URL}/api/messages/sms/contacts`, contactsBody(contacts), {
    headers: jsonHeaders(),
    tags: { name },
  });
  let count = -1;
  if (res.status === 201) {
    try {
      count = res.json('messages.#');
    } catch (_) {
      count = -1;
    }
  }
  check(res, {
    'status is 201': (r) => r.status === 201,
    'every recipient enqueued': () => count === contacts.length,
  });
  if (res.status === 402) {
    exec.test.abort('402 insufficient_balance: top up the account (README.md)');
  }
}

export function small() {
  const first = exec.scenario.iterationInTest * SMALL;
  send(colombianMobiles(first, SMALL), 'POST /api/messages/sms/contacts (10)');
}

export function broadcast() {
  const first = LARGE_OFFSET + exec.scenario.iterationInTest * LARGE;
  send(colombianMobiles(first, LARGE), 'POST /api/messages/sms/contacts (10000)');
}
