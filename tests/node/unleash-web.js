// The browser side, as a Next.js page would use Unleash: npm's `unleash-proxy-client` against
// shipyard's Unleash frontend API (`/api/frontend`: the server evaluates, per context; ETag,
// polling). Bundled by esbuild at test time into one script that test_unleash_node.py's page loads
// in Chromium; the page drives it through `window.unleash`.
import { UnleashClient } from 'unleash-proxy-client';

let client = null;
let updates = 0;

function answer(name) {
  const { name: variant, enabled, payload, feature_enabled } = client.getVariant(name);
  return {
    enabled: client.isEnabled(name),
    variant: payload === undefined ? { name: variant, enabled, feature_enabled } : { name: variant, enabled, payload, feature_enabled },
  };
}

window.unleash = {
  // Start the SDK for `context`; `refreshInterval` (s) is how often it asks for changes.
  async start({ url, clientKey, context, refreshInterval }) {
    client = new UnleashClient({ url, clientKey, appName: 'shipyard-web-tests', refreshInterval, context, metricsInterval: 1 });
    client.on('update', () => {
      updates += 1;
    });
    const ready = new Promise((resolve) => client.on('ready', resolve));
    await client.start();
    await ready;
  },
  // Every flag of `names` for `context` (the SDK fetches again on a context change), with the
  // context the SDK sent (it adds appName, environment and a sessionId of its own).
  async evaluate(context, names) {
    await client.updateContext(context);
    return { sent: client.getContext(), flags: Object.fromEntries(names.map((name) => [name, answer(name)])) };
  },
  answer,
  updates: () => updates,
};
