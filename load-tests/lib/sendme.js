// Shared helpers for the SendMe k6 scripts: configuration from the environment, request
// headers, an optional credit top-up, and unique, valid Colombian mobile numbers.
import http from 'k6/http';

export const BASE_URL = (__ENV.SENDME_URL || 'http://127.0.0.1:8080').replace(/\/+$/, '');
export const TOKEN = __ENV.SENDME_TOKEN || '';
// The demo account created by `cargo run --release`.
export const ACCOUNT_ID = __ENV.SENDME_ACCOUNT_ID || '0190d3e0-0000-7000-8000-00000000a001';

export function requireToken() {
  if (!TOKEN) {
    throw new Error('set SENDME_TOKEN (the SENDME_DEMO_TOKEN the server prints) with -e SENDME_TOKEN=... or in the environment');
  }
}

export function authHeaders() {
  return { Authorization: `Bearer ${TOKEN}` };
}

export function jsonHeaders() {
  return { Authorization: `Bearer ${TOKEN}`, 'Content-Type': 'application/json' };
}

// If SENDME_ADMIN_TOKEN is set, adds `amount` credits (or SENDME_TOPUP_CREDITS) to the account
// before the test; otherwise top up by hand first (see README.md).
export function maybeTopUp(amount) {
  const admin = __ENV.SENDME_ADMIN_TOKEN;
  if (!admin) {
    return;
  }
  const credits = Number(__ENV.SENDME_TOPUP_CREDITS || amount);
  const res = http.post(
    `${BASE_URL}/api/admin/accounts/${ACCOUNT_ID}/credits`,
    JSON.stringify({ amount: credits }),
    { headers: { Authorization: `Bearer ${admin}`, 'Content-Type': 'application/json' }, tags: { name: 'admin top-up' } },
  );
  if (res.status !== 200) {
    throw new Error(`top-up failed: ${res.status} ${res.body}`);
  }
  console.log(`topped up ${credits} credits: ${res.body}`);
}

// Colombian mobile prefixes that the numbering plan accepts (306-309 are not valid).
const PREFIXES = [
  '300', '301', '302', '303', '304', '305',
  '310', '311', '312', '313', '314', '315', '316', '317', '318', '319',
  '320', '321', '322', '323',
  '350', '351', '370',
];
const SUBSCRIBERS = 10000000; // seven digits after the prefix
export const CAPACITY = PREFIXES.length * SUBSCRIBERS;

// The `index`-th Colombian mobile in national format ("3151234567"): distinct indexes below
// CAPACITY give distinct valid numbers, spread over all prefixes and scrambled so that
// consecutive indexes do not look sequential (7,654,321 is coprime with 10, so the
// multiplication is a bijection modulo 10^7; every product stays below 2^53).
export function colombianMobile(index) {
  const i = index % CAPACITY;
  const prefix = PREFIXES[i % PREFIXES.length];
  const sub = (Math.floor(i / PREFIXES.length) * 7654321 + 1234567) % SUBSCRIBERS;
  return prefix + String(sub).padStart(7, '0');
}

// `count` distinct numbers starting at index `first`.
export function colombianMobiles(first, count) {
  const out = new Array(count);
  for (let j = 0; j < count; j++) {
    out[j] = colombianMobile(first + j);
  }
  return out;
}

// The body of POST /api/messages/sms/contacts.
export function contactsBody(contacts) {
  return JSON.stringify({
    message: 'Hola, tu cita esta confirmada para manana a las 10:00. Responde NO para cancelar.', // GSM-7, one segment
    contacts,
    country: 'CO',
  });
}
