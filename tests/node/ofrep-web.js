// The browser side, as a Next.js page would use flags: OpenFeature's web SDK with the official
// OFREP web provider (bulk evaluation, ETag, polling). Bundled by esbuild at test time into one
// script that test_ofrep_node.py's page loads in Chromium; the page drives it through `window.ofrep`.
import { OpenFeature, ProviderEvents } from '@openfeature/web-sdk';
import { OFREPWebProvider } from '@openfeature/ofrep-web-provider';

const client = OpenFeature.getClient();
let changes = 0;
client.addHandler(ProviderEvents.ConfigurationChanged, () => {
  changes += 1;
});

function details(key, type, fallback) {
  switch (type) {
    case 'boolean':
      return client.getBooleanDetails(key, fallback);
    case 'string':
      return client.getStringDetails(key, fallback);
    case 'number':
      return client.getNumberDetails(key, fallback);
    default:
      return client.getObjectDetails(key, fallback);
  }
}

const pick = (d) => ({
  value: d.value,
  variant: d.variant ?? null,
  reason: d.reason,
  errorCode: d.errorCode ?? null,
  flagMetadata: d.flagMetadata,
});

window.ofrep = {
  // Start the provider for `context`; `pollInterval` (ms) is how often it asks for changes.
  async start({ baseUrl, token, context, pollInterval }) {
    await OpenFeature.setContext(context);
    await OpenFeature.setProviderAndWait(
      new OFREPWebProvider({
        baseUrl,
        headers: [['Authorization', `Bearer ${token}`]],
        pollInterval,
        cacheMode: 'disabled',
      }),
    );
  },
  // Every flag of `types` ({key: type}) for `context` (the SDK re-evaluates on a context change).
  async evaluate(context, types, defaults) {
    await OpenFeature.setContext(context);
    const flags = {};
    for (const [key, type] of Object.entries(types)) {
      flags[key] = pick(details(key, type, defaults[type]));
    }
    return flags;
  },
  value(key, type, fallback) {
    return pick(details(key, type, fallback));
  },
  changes: () => changes,
};
