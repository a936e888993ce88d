// Many small sends: 10 unique valid Colombian mobiles per POST /api/messages/sms/contacts,
// 50 VUs in a closed loop. Goal (../shared/DESIGN.md): >= 14,000 req/s with p99 <= 10 ms.
//
//   SENDME_URL=http://127.0.0.1:18181 SENDME_TOKEN=... k6 run load-tests/small-requests.js
//
// Each request costs 10 credits: top up first (README.md), or set SENDME_ADMIN_TOKEN so that
// setup() does it. --vus/--duration on the command line override the defaults below.
import http from 'k6/http';
import exec from 'k6/execution';
import { check } from 'k6';
import { Rate } from 'k6/metrics';
import { BASE_URL, requireToken, maybeTopUp, jsonHeaders, colombianMobiles, contactsBody } from './lib/sendme.js';

const RECIPIENTS = 10;

// Share of requests answered 201 with all 10 recipients enqueued.
const accepted = new Rate('accepted');

export const options = {
  vus: 50,
  duration: '30s',
  thresholds: {
    http_req_duration: ['p(99)<10'],
    http_req_failed: ['rate<0.01'],
    accepted: ['rate>0.99'],
    checks: ['rate>0.99'],
  },
  summaryTrendStats: ['avg', 'min', 'med', 'p(90)', 'p(95)', 'p(99)', 'max'],
};

export function setup() {
  requireToken();
  // Enough for ~20,000 req/s over 30 s.
  maybeTopUp(10000000);
}

export default function () {
  // iterationInTest is unique across VUs, so every request gets its own 10 numbers.
  const first = exec.scenario.iterationInTest * RECIPIENTS;
  const res = http.post(
    `${BASE_URL}/api/messages/sms/contacts`,
    contactsBody(colombianMobiles(first, RECIPIENTS)),
    { headers: jsonHeaders(), tags: { name: 'POST /api/messages/sms/contacts (10)' } },
  );
  let count = -1;
  if (res.status === 201) {
    try {
      count = res.json('messages.#');
    } catch (_) {
      count = -1;
    }
  }
  const ok = check(res, {
    'status is 201': (r) => r.status === 201,
    'all 10 recipients enqueued': () => count === RECIPIENTS,
  });
  accepted.add(ok);
  if (res.status === 402) {
    exec.test.abort('402 insufficient_balance: top up the account (README.md)');
  }
}
