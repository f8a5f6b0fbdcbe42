// pusher-js 8.6 in Node as the reference client (reference §5, §8): subscribes to
// the channels of argv[2] (JSON config) and prints one JSON line per channel event,
// {"channel", "event", "data"}, then {"ready": true} once every subscription
// succeeded; exits after `count` events, or with code 1 after `timeout` ms.
const Pusher = require('pusher-js');

const config = JSON.parse(process.argv[2]);
const pusher = new Pusher(config.key, {
  cluster: 'x',
  wsHost: config.host,
  wsPort: config.port,
  forceTLS: false,
  enabledTransports: ['ws'],
  channelAuthorization: { endpoint: config.authEndpoint },
});
const out = (obj) => process.stdout.write(JSON.stringify(obj) + '\n');
let seen = 0;
let subscribed = 0;
setTimeout(() => { out({ timeout: true }); process.exit(1); }, config.timeout || 15000);
for (const name of config.channels) {
  const channel = pusher.subscribe(name);
  channel.bind_global((event, data) => {
    if (event === 'pusher:subscription_succeeded') {
      subscribed += 1;
      if (subscribed === config.channels.length) out({ ready: true });
      return;
    }
    if (event === 'pusher:subscription_count') return;
    out({ channel: name, event, data: data === undefined ? null : data });
    seen += 1;
    if (seen >= config.count) { pusher.disconnect(); process.exit(0); }
  });
}
