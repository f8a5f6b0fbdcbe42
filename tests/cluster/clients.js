// Real pusher-js 8.6.0 clients for the cluster tests, driven by pytest over
// stdin/stdout (tests/cluster/conftest.py, class Clients):
//
//   node tests/cluster/clients.js '{"key": ..., "flask": ...}'
//
// Each stdin line is a command {"id": n, "op": ..., ...}; each is answered by
// {"reply": n, ...} (or {"reply": n, "error": ...}). What the clients see
// arrives as {"client": name, "kind": ..., ...} lines at any time:
//   kind "channel":   every event pusher-js emits on a subscribed channel;
//   kind "bound":     events bound by name ("bind"), with their metadata;
//   kind "user":      events sent to the signed-in user (send_to_user);
//   kind "watchlist": watchlist online/offline events;
//   kind "state":     connection state changes; kind "error": connection errors.
// The clients come from the e2e harness (tests/e2e/scenarios.js): same
// options, same auth endpoints of the Flask app.
'use strict';

const harness = require('../e2e/scenarios.js');

Object.assign(harness.cfg, JSON.parse(process.argv[2]));
const { connect, next, subscribe, signin, members, out } = harness;
const byName = new Map();

function client(name) {
  const pusher = byName.get(name);
  if (!pusher) throw new Error(`no client ${name}`);
  return pusher;
}

const ops = {
  async connect({ client: name, port, user, watchlist }) {
    const pusher = connect(user, { wsPort: port, watchlist });
    byName.set(name, pusher);
    pusher.connection.bind('state_change', ({ current }) =>
      out({ client: name, kind: 'state', state: current }),
    );
    pusher.connection.bind('error', (error) =>
      out({ client: name, kind: 'error', code: error && error.data ? error.data.code : null }),
    );
    await next(pusher.connection, 'connected');
    return { socket_id: pusher.connection.socket_id };
  },

  async subscribe({ client: name, channel: channelName }) {
    const pusher = client(name);
    const channel = pusher.subscribe(channelName);
    channel.bind_global((event, data, metadata) =>
      out({ client: name, kind: 'channel', channel: channelName, event, data, metadata }),
    );
    const result = await Promise.race([
      next(channel, 'pusher:subscription_succeeded').then(() => ({ ok: true })),
      next(channel, 'pusher:subscription_error').then(({ data }) => ({ ok: false, refusal: data })),
    ]);
    if (result.ok && channelName.startsWith('presence-')) result.members = members(channel);
    return result;
  },

  // Global bindings get no metadata (pusher-js Dispatcher): bind by name for it.
  async bind({ client: name, channel, event }) {
    client(name)
      .channel(channel)
      .bind(event, (data, metadata) =>
        out({ client: name, kind: 'bound', channel, event, data, metadata }),
      );
    return {};
  },

  async unsubscribe({ client: name, channel }) {
    client(name).unsubscribe(channel);
    return {};
  },

  async signin({ client: name }) {
    const pusher = client(name);
    pusher.user.bind_global((event, data) => out({ client: name, kind: 'user', event, data }));
    pusher.user.watchlist.bind_global((event, data) =>
      out({ client: name, kind: 'watchlist', event, data }),
    );
    return { channel: await signin(pusher) };
  },

  async client_event({ client: name, channel, event, data }) {
    return { triggered: client(name).channel(channel).trigger(event, data) };
  },

  async disconnect({ client: name }) {
    client(name).disconnect();
    byName.delete(name);
    return {};
  },
};

let buffered = '';
process.stdin.setEncoding('utf8');
process.stdin.on('data', (chunk) => {
  buffered += chunk;
  let end;
  while ((end = buffered.indexOf('\n')) >= 0) {
    const line = buffered.slice(0, end);
    buffered = buffered.slice(end + 1);
    if (!line.trim()) continue;
    const command = JSON.parse(line);
    Promise.resolve()
      .then(() => ops[command.op](command))
      .then(
        (result) => out({ reply: command.id, ...result }),
        (error) => out({ reply: command.id, error: String(error && error.stack ? error.stack : error) }),
      );
  }
});
// pytest closes stdin at the end: close the clients, let the close frames go out.
process.stdin.on('end', () => {
  for (const pusher of harness.clients) pusher.disconnect();
  setTimeout(() => process.exit(0), 50);
});
