// A Node process using OpenFeature's server SDK with the official OFREP provider, as a NestJS API
// would: evaluates every flag of ofrep-flags.json for every context against a real
// `shipyard serve`, prints the answers as one JSON line, then waits for a line on stdin:
// "again" evaluates once more with the same client (no restart), "exit" ends.
//
//   node ofrep-server.mjs <base-url> <client-token>
// Driven by tests/integration/flags/test_ofrep_node.py.
import { readFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { OpenFeature } from '@openfeature/server-sdk';
import { OFREPProvider } from '@openfeature/ofrep-provider';

const [baseUrl, token] = process.argv.slice(2);
const cases = JSON.parse(readFileSync(new URL('./ofrep-flags.json', import.meta.url), 'utf8'));
const types = Object.fromEntries(cases.flagset.flags.map((f) => [f.key, f.type]));

await OpenFeature.setProviderAndWait(
  new OFREPProvider({ baseUrl, headers: [['Authorization', `Bearer ${token}`]] }),
);
const client = OpenFeature.getClient('shipyard');

function details(key, type, context) {
  const fallback = cases.defaults[type];
  switch (type) {
    case 'boolean':
      return client.getBooleanDetails(key, fallback, context);
    case 'string':
      return client.getStringDetails(key, fallback, context);
    case 'number':
      return client.getNumberDetails(key, fallback, context);
    default:
      return client.getObjectDetails(key, fallback, context);
  }
}

const pick = (d) => ({
  value: d.value,
  variant: d.variant ?? null,
  reason: d.reason,
  errorCode: d.errorCode ?? null,
  flagMetadata: d.flagMetadata,
});

async function evaluateAll() {
  const answers = [];
  for (const context of cases.contexts) {
    const flags = {};
    for (const [key, type] of Object.entries(types)) {
      flags[key] = pick(await details(key, type, context));
    }
    answers.push({ context, flags });
  }
  // What a caller sees when it asks wrongly: an unknown flag, and a string flag read as a number.
  const probes = {
    missing: pick(await client.getBooleanDetails('no-such-flag', true, { targetingKey: '123' })),
    mismatch: pick(await client.getNumberDetails('checkout-copy', 7, { targetingKey: '123' })),
  };
  return { answers, probes };
}

process.stdout.write(JSON.stringify(await evaluateAll()) + '\n');
for await (const line of createInterface({ input: process.stdin })) {
  if (line.trim() !== 'again') break;
  process.stdout.write(JSON.stringify(await evaluateAll()) + '\n');
}
await OpenFeature.close();
// stdin and fetch's kept-alive sockets would hold the process open.
process.exit(0);
