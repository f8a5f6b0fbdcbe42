// A real pusher-js 8.6.0 subscriber for the outbox's outage test.
//
//   node tests/outbox/subscriber.js '{"key": ..., "wsPort": ..., "channels": [...]}'
//
// Prints one JSON object per line: {"state": ...} on each connection state
// change, {"subscribed": channel} on each subscription (again after every
// reconnection), {"channel", "event", "data"} for each event. Runs until SIGTERM.
'use strict';

const Pusher = require('pusher-js');

const cfg = JSON.parse(process.argv[2]);

function out(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

const pusher = new Pusher(cfg.key, {
  cluster: 'local',
  wsHost: '127.0.0.1',
  wsPort: cfg.wsPort,
  forceTLS: false,
  enabledTransports: ['ws'],
});

pusher.connection.bind('state_change', (states) => out({ state: states.current }));

for (const name of cfg.channels) {
  const channel = pusher.subscribe(name);
  channel.bind('pusher:subscription_succeeded', () => out({ subscribed: name }));
  channel.bind_global((event, data) => {
    if (!event.startsWith('pusher:')) out({ channel: name, event, data });
  });
}

process.on('SIGTERM', () => {
  pusher.disconnect();
  process.exit(0);
});
