// What the k6 scripts share: configuration from the environment, the outcome
// mix set through the simulators' knobs, creating a payment and following it
// to a terminal phase.
//
// Environment:
//   BASE_URL   the HTTP API (the ingress in kind, http://127.0.0.1:8080 in make dev)
//   SIM_URL    the simulators' admin endpoint; when set, setup() applies MIX
//   MIX        outcome mix, e.g. "decline=0.02,fraud=0.01,timeout=0.005,callbackFailure=0.01,transient=0.05"
//              (timeout: the confirmation is lost; the payment waits out its timer and is
//              recovered from the gateway's status endpoint)
//   USERS      how many load accounts to spread payments over (load-0 … load-N-1; make dev opens 50)
//   CURRENCY   their currency (EUR)
//   FOLLOW_TIMEOUT_S  give up following one payment after this long (default 120)
//   REFUNDS    share of succeeded payments then partly refunded through the API (default 0),
//              each refund followed to its end
//   API_TOKEN  the caller's credential, sent as Authorization: Bearer (an API key from
//              `paysaga-operator api-key create`, or a Kubernetes token for the audience paysaga)
import http from 'k6/http';
import { check, sleep } from 'k6';
import { Counter, Rate, Trend } from 'k6/metrics';

export const BASE_URL = (__ENV.BASE_URL || 'http://127.0.0.1:8080').replace(/\/$/, '');
export const SIM_URL = (__ENV.SIM_URL || '').replace(/\/$/, '');
const USERS = Number(__ENV.USERS || 50);
const CURRENCY = __ENV.CURRENCY || 'EUR';
const FOLLOW_TIMEOUT_MS = 1000 * Number(__ENV.FOLLOW_TIMEOUT_S || 120);
const REFUNDS = Number(__ENV.REFUNDS || 0);
if (!(REFUNDS >= 0 && REFUNDS <= 1)) throw new Error(`REFUNDS must be a share within [0, 1], got ${__ENV.REFUNDS}`);

/// From the API's 202 to the first read showing a terminal phase.
export const e2e = new Trend('payment_e2e', true);
/// Per terminal phase (a counter each: k6 summarises tagged sub-metrics only
/// when a threshold names them).
const finished = {
  Succeeded: new Counter('payments_succeeded'),
  Failed: new Counter('payments_failed'),
  Cancelled: new Counter('payments_cancelled'),
};
/// Followed to a terminal phase in time (1) or not (0).
export const completed = new Rate('payment_completed');
/// The API shed the create (429 or 503 with Retry-After): not an error, not a payment.
export const shed = new Rate('payment_shed');
/// Payments the API accepted (202).
export const created = new Counter('payments_created');

const TERMINAL = ['Succeeded', 'Failed', 'Cancelled'];

/// Refunds by how they ended, and from the API's 202 to the end seen.
const refundsEnded = {
  Succeeded: new Counter('refunds_succeeded'),
  Failed: new Counter('refunds_failed'),
};
export const refundE2e = new Trend('refund_e2e', true);

// The knobs of the simulators each MIX name sets.
const KNOBS = {
  decline: 'declineRate',
  fraud: 'fraudRejectRate',
  timeout: 'callbackDropRate',
  callbackFailure: 'callbackFailureRate',
  transient: 'transientFailureRate',
};

/// The simulators' config for MIX (all rates 0 unless named).
export function mixConfig(mix) {
  const config = {};
  for (const knob of Object.values(KNOBS)) config[knob] = 0;
  for (const part of (mix || '').split(',').map((s) => s.trim()).filter(Boolean)) {
    const [name, value] = part.split('=');
    if (!(name in KNOBS)) throw new Error(`MIX: unknown outcome ${name} (known: ${Object.keys(KNOBS).join(', ')})`);
    const rate = Number(value);
    if (!(rate >= 0 && rate <= 1)) throw new Error(`MIX: ${name} must be a share within [0, 1], got ${value}`);
    config[KNOBS[name]] = rate;
  }
  return config;
}

/// Sets the outcome mix on the simulators (when SIM_URL is given).
export function applyMix() {
  if (!SIM_URL) return null;
  const config = mixConfig(__ENV.MIX);
  const res = http.put(`${SIM_URL}/admin/config`, JSON.stringify(config), {
    headers: { 'Content-Type': 'application/json' },
  });
  if (res.status !== 200) throw new Error(`setting the outcome mix failed: ${res.status} ${res.body}`);
  return config;
}

const JSON_HEADERS = { 'Content-Type': 'application/json' };

const AUTHORIZATION = __ENV.API_TOKEN ? { Authorization: `Bearer ${__ENV.API_TOKEN}` } : {};

function withAuth(params) {
  const p = Object.assign({}, params || {});
  p.headers = Object.assign({}, AUTHORIZATION, p.headers || {});
  return p;
}

/// The HTTP API as the caller API_TOKEN names: k6's get and post with its
/// Authorization header.
export const api = {
  get: (url, params) => http.get(url, withAuth(params)),
  post: (url, body, params) => http.post(url, body, withAuth(params)),
};

/// POSTs one payment. Returns the response (202, or 429/503 when shed).
export function createPayment(overrides) {
  const body = Object.assign(
    {
      userId: `load-${Math.floor(Math.random() * USERS)}`,
      amount: 100 + Math.floor(Math.random() * 9900),
      currency: CURRENCY,
      method: 'card',
    },
    overrides || {},
  );
  return api.post(`${BASE_URL}/v1/payments`, JSON.stringify(body), {
    headers: Object.assign({ 'Idempotency-Key': `k6-${__VU}-${__ITER}-${Date.now()}-${Math.random()}` }, JSON_HEADERS),
    tags: { name: 'create' },
  });
}

/// Polls the payment with backoff (100 ms, growing by half each time, to
/// 2 s) until its phase is terminal. Returns the last view, or null when it
/// did not finish in time. The end is seen up to one poll late: payment_e2e
/// carries that granularity (about a third of the time waited).
export function follow(id) {
  const began = Date.now();
  let wait = 0.1;
  for (;;) {
    sleep(wait);
    const res = api.get(`${BASE_URL}/v1/payments/${id}`, { tags: { name: 'read' } });
    if (res.status === 200) {
      const view = res.json();
      if (TERMINAL.includes(view.phase)) {
        // A payment whose confirmation never came waits out the timer by
        // design (MIX timeout=…): tagged, so thresholds can leave it out.
        const waited = ['ConfirmationTimeout', 'ConfirmationRecovered'].includes(view.reason);
        e2e.add(Date.now() - began, { timer: waited ? 'fired' : 'no' });
        finished[view.phase].add(1);
        completed.add(1);
        return view;
      }
    }
    if (Date.now() - began > FOLLOW_TIMEOUT_MS) {
      completed.add(0);
      return null;
    }
    wait = Math.min(wait * 1.5, 2);
  }
}

/// Asks for `amount` of a succeeded payment back (idempotently) and follows
/// the refund to its end. Returns the last view, or null.
export function refundAndFollow(paymentId, amount) {
  const res = api.post(
    `${BASE_URL}/v1/payments/${paymentId}/refunds`,
    JSON.stringify({ amount, reason: 'requestedByCustomer' }),
    {
      headers: Object.assign({ 'Idempotency-Key': `k6-refund-${paymentId}` }, JSON_HEADERS),
      tags: { name: 'refund' },
    },
  );
  if (!check(res, { 'refund accepted (202)': (r) => r.status === 202 })) return null;
  const began = Date.now();
  const id = res.json().id;
  let wait = 0.1;
  for (;;) {
    sleep(wait);
    const got = api.get(`${BASE_URL}/v1/refunds/${id}`, { tags: { name: 'read refund' } });
    if (got.status === 200) {
      const view = got.json();
      if (view.phase === 'Succeeded' || view.phase === 'Failed') {
        refundE2e.add(Date.now() - began);
        refundsEnded[view.phase].add(1);
        return view;
      }
    }
    if (Date.now() - began > FOLLOW_TIMEOUT_MS) return null;
    wait = Math.min(wait * 1.5, 2);
  }
}

/// One client's payment: create it, then follow it to the end (and, for a
/// REFUNDS share of those that succeeded, refund part of it).
export function payAndFollow() {
  const res = createPayment();
  if (res.status === 429 || res.status === 503) {
    shed.add(1);
    check(res, { 'shed with Retry-After': (r) => r.headers['Retry-After'] !== undefined });
    return;
  }
  shed.add(0);
  if (!check(res, { 'created (202)': (r) => r.status === 202 })) return;
  created.add(1);
  const view = follow(res.json().id);
  check(view, {
    'reached a terminal phase': (v) => v !== null,
    'terminal phase has a reason': (v) => v !== null && typeof v.reason === 'string' && v.reason.length > 0,
  });
  if (view !== null && view.phase === 'Succeeded' && Math.random() < REFUNDS) {
    const refund = refundAndFollow(view.id, 1 + Math.floor(Math.random() * view.amount));
    check(refund, { 'refund succeeded': (r) => r !== null && r.phase === 'Succeeded' });
  }
}
