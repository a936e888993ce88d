// Small requests in the OPEN model (constant arrival rate, like real clients: a request
// arrives every 1/RATE s whether or not earlier ones were answered), 10 unique valid
// Colombian mobiles per POST /api/messages/sms/contacts. The same workload as the original
// stack's `../shared/baseline/bench/k6-small.js`, for a side-by-side comparison; server
// CPU per request is measured outside k6 (load-tests/small-cpu.sh).
//
//   RATE=1000 DURATION=30s SENDME_URL=http://127.0.0.1:18181 SENDME_TOKEN=... k6 run load-tests/small-requests-open.js
//
// Goal (issue #21): p99 <= 10 ms at 3,000 req/s with k6 on the same two cores.
import http from 'k6/http';
import exec from 'k6/execution';
import { check } from 'k6';
import { BASE_URL, requireToken, maybeTopUp, jsonHeaders, colombianMobiles, contactsBody } from './lib/sendme.js';

const RECIPIENTS = 10;
const RATE = Number(__ENV.RATE || 1000);

export const options = {
  scenarios: {
    open: {
      executor: 'constant-arrival-rate',
      rate: RATE,
      timeUnit: '1s',
      duration: __ENV.DURATION || '30s',
      preAllocatedVUs: 200,
      maxVUs: 2000,
    },
  },
  discardResponseBodies: true,
  summaryTrendStats: ['avg', 'min', 'med', 'p(90)', 'p(95)', 'p(99)', 'max'],
};

export function setup() {
  requireToken();
  maybeTopUp(RATE * RECIPIENTS * 120);
}

export default function () {
  const first = exec.scenario.iterationInTest * RECIPIENTS;
  const res = http.post(
    `${BASE_URL}/api/messages/sms/contacts`,
    contactsBody(colombianMobiles(first, RECIPIENTS)),
    { headers: jsonHeaders(), tags: { name: 'POST /api/messages/sms/contacts (10)' } },
  );
  check(res, { 'status is 201': (r) => r.status === 201 });
}

export function handleSummary(data) {
  const m = data.metrics;
  const d = m.http_req_duration.values;
  const failed = m.http_req_failed ? m.http_req_failed.values.rate : 0;
  const dropped = m.dropped_iterations ? m.dropped_iterations.values.count : 0;
  return {
    stdout:
      `requests=${m.http_reqs.values.count} req_per_s=${m.http_reqs.values.rate.toFixed(1)} ` +
      `p50_ms=${d.med.toFixed(2)} p99_ms=${d['p(99)'].toFixed(2)} max_ms=${d.max.toFixed(2)} ` +
      `failed=${failed} dropped=${dropped}\n`,
  };
}
