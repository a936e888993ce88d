// Status reads: setup() sends one 100-recipient request, then the VUs read
// GET /api/queues/{queueId} and GET /api/messages/{id} for its messages, half and half.
//
//   SENDME_URL=http://127.0.0.1:18181 SENDME_TOKEN=... k6 run load-tests/status-reads.js
import http from 'k6/http';
import exec from 'k6/execution';
import { check, fail } from 'k6';
import { BASE_URL, requireToken, maybeTopUp, authHeaders, jsonHeaders, colombianMobiles, contactsBody } from './lib/sendme.js';

const RECIPIENTS = 100;

export const options = {
  vus: 50,
  duration: '30s',
  thresholds: {
    'http_req_duration{name:GET /api/queues/{id}}': ['p(99)<10'],
    'http_req_duration{name:GET /api/messages/{id}}': ['p(99)<10'],
    http_req_failed: ['rate<0.01'],
    checks: ['rate>0.99'],
  },
  summaryTrendStats: ['avg', 'min', 'med', 'p(90)', 'p(95)', 'p(99)', 'max'],
};

export function setup() {
  requireToken();
  maybeTopUp(RECIPIENTS);
  // Numbers far from the ones the other scripts start with.
  const res = http.post(
    `${BASE_URL}/api/messages/sms/contacts`,
    contactsBody(colombianMobiles(200000000, RECIPIENTS)),
    { headers: jsonHeaders(), tags: { name: 'setup send' } },
  );
  if (res.status !== 201) {
    fail(`setup send failed: ${res.status} ${res.body}`);
  }
  const body = res.json();
  return { queueId: body.queueId, messageIds: body.messages.map((m) => m.id) };
}

export default function (data) {
  const i = exec.scenario.iterationInTest;
  if (i % 2 === 0) {
    const res = http.get(`${BASE_URL}/api/queues/${data.queueId}`, {
      headers: authHeaders(),
      tags: { name: 'GET /api/queues/{id}' },
    });
    check(res, { 'queue 200': (r) => r.status === 200 });
  } else {
    const id = data.messageIds[Math.floor(i / 2) % data.messageIds.length];
    const res = http.get(`${BASE_URL}/api/messages/${id}`, {
      headers: authHeaders(),
      tags: { name: 'GET /api/messages/{id}' },
    });
    check(res, {
      'message 200': (r) => r.status === 200,
      'message is the one asked for': (r) => r.status === 200 && r.json('id') === id,
    });
  }
}
