// Create latency at a steady rate: POST /v1/payments through the HTTP API.
//   k6 run -e BASE_URL=http://127.0.0.1:8080 -e RATE=20 -e DURATION=30s k6/api-create.js
// A benchmark that prints numbers; the checks only say whether answers were right.
import http from 'k6/http';
import { check } from 'k6';

const BASE_URL = __ENV.BASE_URL || 'http://127.0.0.1:8080';

export const options = {
  scenarios: {
    create: {
      executor: 'constant-arrival-rate',
      rate: Number(__ENV.RATE || 20),
      timeUnit: '1s',
      duration: __ENV.DURATION || '30s',
      preAllocatedVUs: 20,
      maxVUs: 100,
    },
  },
  summaryTrendStats: ['p(50)', 'p(95)', 'p(99)', 'max'],
};

export default function () {
  const body = JSON.stringify({ userId: 'alice', amount: 100 + Math.floor(Math.random() * 900), currency: 'EUR', method: 'card' });
  const res = http.post(`${BASE_URL}/v1/payments`, body, {
    headers: { 'Content-Type': 'application/json', 'Idempotency-Key': `k6-${__VU}-${__ITER}-${Date.now()}` },
  });
  check(res, { 'created (202)': (r) => r.status === 202 });
}
