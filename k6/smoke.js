// Smoke: a few payments through the HTTP API, checked for correctness only (no
// latency thresholds). make test runs it against a fresh make-dev stack; every
// check must pass or k6 exits non-zero.
//
//   k6 run -e BASE_URL=http://127.0.0.1:8080 -e API_TOKEN="$PAYSAGA_API_KEY" k6/smoke.js
import http from 'k6/http';
import { check, group } from 'k6';
import { BASE_URL, api, createPayment, follow, refundAndFollow } from './lib.js';

export const options = {
  scenarios: {
    contract: { executor: 'per-vu-iterations', vus: 1, iterations: 1, exec: 'contract' },
    concurrent: { executor: 'shared-iterations', vus: 5, iterations: 10, exec: 'concurrent' },
  },
  thresholds: {
    checks: ['rate==1'],
    payment_completed: ['rate==1'],
  },
};

const JSON_HEADERS = { 'Content-Type': 'application/json' };

function post(body, key) {
  const headers = Object.assign({}, JSON_HEADERS, key ? { 'Idempotency-Key': key } : {});
  return api.post(`${BASE_URL}/v1/payments`, JSON.stringify(body), { headers, tags: { name: 'create' } });
}

function condition(view, type) {
  return (view.conditions || []).find((c) => c.type === type);
}

export function contract() {
  const key = `smoke-${Date.now()}-${Math.random()}`;
  const body = { userId: 'load-0', amount: 1234, currency: 'EUR', method: 'wallet' };

  group('a payment succeeds and says how', () => {
    const res = post(body, key);
    check(res, { 'created: 202 with an id': (r) => r.status === 202 && r.json().id.startsWith('pay-') });
    const view = follow(res.json().id);
    check(view, {
      'succeeded': (v) => v !== null && v.phase === 'Succeeded' && v.reason === 'Confirmed',
      'every step is a True condition': (v) =>
        v !== null && ['Validated', 'FraudChecked', 'Debited', 'Charged', 'Confirmed'].every((t) => (condition(v, t) || {}).status === 'True'),
      'completedAt is set': (v) => v !== null && typeof v.completedAt === 'string',
    });

    const replay = post(body, key);
    check(replay, {
      'a replay with the same key is the same payment': (r) => r.status === 202 && r.json().id === res.json().id,
      'and says it was replayed': (r) => r.headers['Idempotent-Replayed'] === 'true',
    });
    const other = post(Object.assign({}, body, { amount: 4321 }), key);
    check(other, { 'the same key with another body is 409': (r) => r.status === 409 });
  });

  group('a caller without a valid credential is refused', () => {
    const anonymous = http.post(`${BASE_URL}/v1/payments`, JSON.stringify(body), { headers: JSON_HEADERS });
    check(anonymous, {
      'no credential is 401 with WWW-Authenticate': (r) => r.status === 401 && String(r.headers['Www-Authenticate']).startsWith('Bearer'),
    });
    const forged = http.get(`${BASE_URL}/v1/payments`, { headers: { Authorization: 'Bearer psk_nobody_0123456789abcdef' } });
    check(forged, { 'an unknown API key is 401': (r) => r.status === 401 });
  });

  group('invalid input is refused with a reason', () => {
    const zero = post({ userId: 'load-0', amount: 0, currency: 'EUR', method: 'card' });
    check(zero, {
      'amount 0 is 422': (r) => r.status === 422,
      'the reason names the field': (r) => String(r.json().detail).includes('spec.amount'),
    });
    const float = post({ userId: 'load-0', amount: 12.5, currency: 'EUR', method: 'card' });
    check(float, { 'a float amount is 422': (r) => r.status === 422 });
    const missing = api.get(`${BASE_URL}/v1/payments/pay-does-not-exist`);
    check(missing, { 'an unknown payment is 404': (r) => r.status === 404 });
  });

  group('a succeeded payment is refunded in part, never past what is left', () => {
    const id = post(body, key).json().id;
    const refund = refundAndFollow(id, 234);
    check(refund, { 'the refund succeeds': (r) => r !== null && r.phase === 'Succeeded' && r.amount === 234 });
    const after = api.get(`${BASE_URL}/v1/payments/${id}`).json();
    check(after, { 'the payment shows what was refunded': (v) => v.refundedAmount === 234 });
    const tooMuch = api.post(
      `${BASE_URL}/v1/payments/${id}/refunds`,
      JSON.stringify({ amount: 1001, reason: 'other' }),
      { headers: JSON_HEADERS, tags: { name: 'refund' } },
    );
    check(tooMuch, { 'more than is left is 422': (r) => r.status === 422 });
  });

  group('business failures end Failed, with the reason', () => {
    const frozen = follow(post({ userId: 'dave', amount: 100, currency: 'EUR', method: 'card' }).json().id);
    check(frozen, { 'a frozen account fails: AccountInvalid': (v) => v !== null && v.phase === 'Failed' && v.reason === 'AccountInvalid' });
    const refundFailed = api.post(
      `${BASE_URL}/v1/payments/${frozen.id}/refunds`,
      JSON.stringify({ amount: 100, reason: 'other' }),
      { headers: JSON_HEADERS, tags: { name: 'refund' } },
    );
    check(refundFailed, { 'a failed payment cannot be refunded: 409': (r) => r.status === 409 });
    const poor = follow(post({ userId: 'carol', amount: 999999, currency: 'EUR', method: 'card' }).json().id);
    check(poor, { 'too little money fails: InsufficientFunds': (v) => v !== null && v.phase === 'Failed' && v.reason === 'InsufficientFunds' });
  });
}

export function concurrent() {
  const res = createPayment();
  check(res, { 'created (202)': (r) => r.status === 202 });
  if (res.status !== 202) return;
  const view = follow(res.json().id);
  check(view, { 'concurrent payment succeeded': (v) => v !== null && v.phase === 'Succeeded' });
}
