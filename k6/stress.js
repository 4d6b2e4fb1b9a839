// Stress: a ramping arrival rate past the breaking point. The run stops itself
// (abortOnFail) once errors or end-to-end latency cross their thresholds; the
// API is expected to shed load with 429/503 before anything is lost, which the
// ledger audit after the run checks.
//
//   k6 run -e BASE_URL=http://127.0.0.1:8080 -e RATE=8 k6/stress.js
//   make stress
//
// RATE is the sustainable rate (R_max, from make perf); the ramp goes from half
// of it to four times it. STAGE is each stage's length.
import http from 'k6/http';
import { applyMix, payAndFollow } from './lib.js';

const RATE = Number(__ENV.RATE || 5);
const STAGE = __ENV.STAGE || '30s';
// Rates per minute, so that fractional payments/s are exact.
const perMin = (perSec) => Math.max(1, Math.round(perSec * 60));

// Shedding is the API doing its job, not a failed request.
http.setResponseCallback(http.expectedStatuses(200, 202, 429, 503));

export const options = {
  scenarios: {
    stress: {
      executor: 'ramping-arrival-rate',
      startRate: perMin(RATE / 2),
      timeUnit: '1m',
      preAllocatedVUs: Math.max(20, Math.ceil(RATE * 4)),
      maxVUs: Math.max(200, Math.ceil(RATE * 80)),
      stages: [
        { target: perMin(RATE), duration: STAGE },
        { target: perMin(RATE), duration: STAGE },
        { target: perMin(RATE * 2), duration: STAGE },
        { target: perMin(RATE * 2), duration: STAGE },
        { target: perMin(RATE * 3), duration: STAGE },
        { target: perMin(RATE * 4), duration: STAGE },
        { target: perMin(RATE * 4), duration: STAGE },
      ],
    },
  },
  thresholds: {
    http_req_failed: [{ threshold: 'rate<0.01', abortOnFail: true, delayAbortEval: '10s' }],
    'http_req_duration{name:create}': [{ threshold: 'p(95)<1000', abortOnFail: true, delayAbortEval: '10s' }],
    'payment_e2e{timer:no}': [{ threshold: 'p(95)<30000', abortOnFail: true, delayAbortEval: '30s' }],
    payment_completed: ['rate>0.999'],
    checks: ['rate>0.99'],
  },
  summaryTrendStats: ['avg', 'p(50)', 'p(95)', 'p(99)', 'max'],
};

export function setup() {
  return { mix: applyMix() };
}

export default function () {
  payAndFollow();
}
