// pusher-js 8.6.0 in Node as the chat's page runs it, but behind nginx with TLS:
//
//   node tests/deploy/client.js '<json config>'
//
// config: {key, options (what the page's pusher_options() rendered), origin (the
// app's https:// URL), cookie (the signed-in session), channel}. The certificate
// is trusted through NODE_EXTRA_CA_CERTS. Prints one JSON object per line:
// {"connected": the WebSocket's URL}, {"subscribed": channel}, then {"event", "data"} for
// the first "message" event, and exits 0; on an error or timeout prints
// {"error": ...} and exits 1.
'use strict';

const Pusher = require('pusher-js');

const cfg = JSON.parse(process.argv[2]);
// pusher-js's own log, on stderr: the test shows it when something fails.
Pusher.log = (message) => process.stderr.write(`${message}\n`);

function out(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

function fail(message) {
  out({ error: String(message && message.stack ? message.stack : message) });
  process.exit(1);
}

const timer = setTimeout(() => fail('timed out'), cfg.timeout || 30000);

// The page's endpoint is relative ("/pusher/auth"): resolve it as a browser
// would. pusher-js's XMLHttpRequest for Node refuses to send a Cookie header,
// which a browser sends by itself, so this handler posts the same form body
// pusher-js's ajax transport sends, with the session cookie.
const options = { ...cfg.options };
const endpoint = new URL(options.channelAuthorization.endpoint, cfg.origin).href;
options.channelAuthorization = {
  customHandler({ socketId, channelName }, callback) {
    fetch(endpoint, {
      method: 'POST',
      headers: { 'Content-Type': 'application/x-www-form-urlencoded', Cookie: cfg.cookie },
      body: new URLSearchParams({ socket_id: socketId, channel_name: channelName }),
    })
      .then(async (response) => {
        if (!response.ok) throw new Error(`auth: ${response.status} ${await response.text()}`);
        callback(null, await response.json());
      })
      .catch((error) => callback(error, null));
  },
};

const pusher = new Pusher(cfg.key, options);
pusher.connection.bind('error', (error) => fail(JSON.stringify(error)));
pusher.connection.bind('connected', () => {
  out({ connected: pusher.connection.connection.transport.socket.url });
});
const channel = pusher.subscribe(cfg.channel);
channel.bind('pusher:subscription_error', (error) => fail(JSON.stringify(error)));
channel.bind('pusher:subscription_succeeded', () => out({ subscribed: cfg.channel }));
channel.bind('message', (data) => {
  out({ event: 'message', data });
  clearTimeout(timer);
  pusher.disconnect();
});
