// Load: a constant arrival rate of payments, each created through the HTTP API
// and followed to a terminal phase. A benchmark that prints numbers; its
// thresholds say whether the run was healthy.
//
//   k6 run -e BASE_URL=http://127.0.0.1:8080 -e RATE=8 -e DURATION=2m k6/load.js
//   make load                    # the same against a fresh make-dev stack, then the ledger audit and a report
//
// RATE (payments/s), DURATION, MIX and SIM_URL: see lib.js.
import http from 'k6/http';
import { applyMix, payAndFollow } from './lib.js';

const RATE = Number(__ENV.RATE || 5);

// EXPECT_SHED=1 (an overload run): 429/503 are the API shedding, not failures.
if (__ENV.EXPECT_SHED) http.setResponseCallback(http.expectedStatuses(200, 202, 429, 503));

export const options = {
  scenarios: {
    load: {
      executor: 'constant-arrival-rate',
      // Per minute, so that fractional rates (e.g. 0.8 x R_max) are exact.
      rate: Math.round(RATE * 60),
      timeUnit: '1m',
      duration: __ENV.DURATION || '2m',
      // Each iteration lives until its payment finishes: rate × end-to-end time.
      preAllocatedVUs: Math.max(10, Math.ceil(RATE * 10)),
      maxVUs: Math.max(100, Math.ceil(RATE * 60)),
    },
  },
  thresholds: {
    http_req_failed: ['rate<0.001'],
    'http_req_duration{name:create}': ['p(95)<250'],
    // Payments that waited out the confirmation timer (MIX timeout=…) take
    // that long by design; the latency threshold is on the others.
    'payment_e2e{timer:no}': ['p(95)<10000'],
    payment_completed: ['rate>0.999'],
    checks: ['rate>0.999'],
    dropped_iterations: ['count<1'],
  },
  summaryTrendStats: ['avg', 'p(50)', 'p(95)', 'p(99)', 'max'],
};

export function setup() {
  return { mix: applyMix() };
}

export default function () {
  payAndFollow();
}
