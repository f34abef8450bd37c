// A Node process using npm's `unleash-client` (Unleash's server SDK) against shipyard's Unleash
// client API (`/api/client/features`), as a NestJS API would: the SDK fetches every flag once and
// evaluates locally. Driven by tests/integration/flags/test_unleash_node.py, one JSON command per
// line on stdin, one JSON answer per line on stdout:
//
//   {"cmd": "start", "headers": {...}}   a new SDK instance (the previous one is destroyed), ready
//                                        once it has fetched the features: {"started": true}
//   {"cmd": "evaluate", "cases": [{"toggle", "context", "kind": "enabled"|"variant"}]}
//                                        every case with the current instance: {"results": [...]}
//   {"cmd": "until", "case": {...}, "result": r}
//                                        wait (≤ 30 s) until the current instance answers `r` for
//                                        the case, by its own polling: {"reached": true|false}
//   {"cmd": "exit"}                      flush the SDK's metrics, then exit
//
//   node unleash-client.mjs <api-url> <client-token>
import { once } from 'node:events';
import { createInterface } from 'node:readline';
import { Unleash } from 'unleash-client';

const [url, token] = process.argv.slice(2);
const warnings = [];
let unleash = null;

async function start(headers) {
  if (unleash !== null) {
    unleash.destroy();
  }
  unleash = new Unleash({
    url,
    appName: 'shipyard-node-tests',
    // Unleash's SDKs send the token as the whole Authorization header, without "Bearer".
    customHeaders: { Authorization: token, ...(headers ?? {}) },
    refreshInterval: 200,
    metricsInterval: 500,
  });
  unleash.on('warn', (message) => warnings.push(String(message)));
  unleash.on('error', (error) => warnings.push(`error: ${error?.message ?? error}`));
  const timeout = new Promise((resolve) => setTimeout(() => resolve(false), 30_000).unref());
  const started = await Promise.race([once(unleash, 'synchronized').then(() => true), timeout]);
  return started ? { started } : { started, warnings: warnings.splice(0) };
}

function answer({ toggle, context, kind }) {
  if (kind === 'enabled') {
    return unleash.isEnabled(toggle, context);
  }
  const { name, payload, enabled, feature_enabled } = unleash.getVariant(toggle, context);
  return payload === undefined ? { name, enabled, feature_enabled } : { name, payload, enabled, feature_enabled };
}

function evaluate(cases) {
  return { results: cases.map(answer), warnings: warnings.splice(0) };
}

async function until(testCase, result) {
  const deadline = Date.now() + 30_000;
  while (JSON.stringify(answer(testCase)) !== JSON.stringify(result)) {
    if (Date.now() > deadline) {
      return { reached: false };
    }
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  return { reached: true };
}

for await (const line of createInterface({ input: process.stdin })) {
  const command = JSON.parse(line);
  let reply;
  if (command.cmd === 'start') {
    reply = await start(command.headers);
  } else if (command.cmd === 'evaluate') {
    reply = evaluate(command.cases);
  } else if (command.cmd === 'until') {
    reply = await until(command.case, command.result);
  } else {
    break;
  }
  process.stdout.write(JSON.stringify(reply) + '\n');
}
if (unleash !== null) {
  await unleash.destroyWithFlush();
}
process.exit(0);
