// Real pusher-js 8.6.0 (and pusher-js-auth 4.0.1) clients against the local
// server and a Flask app using the extension's /pusher/auth and /pusher/user-auth.
//
//   node tests/e2e/scenarios.js <scenario> '<json config>'
//
// Prints one JSON object per line for what it observes and {"done": true} at
// the end; exits 1 with {"error": ...} on failure or timeout. pytest asserts.
//
// Required as a module (tests/cluster/clients.js), it runs nothing and exports
// its helpers; the requirer fills in `cfg` (key, flask) first.
'use strict';

const Pusher = require('pusher-js');

const main = require.main === module;
const [, , scenario, configJson] = main ? process.argv : [];
const cfg = main ? JSON.parse(configJson) : {};
const clients = [];

function out(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

function fail(message) {
  out({ error: String(message && message.stack ? message.stack : message) });
  process.exit(1);
}

const timer = main
  ? setTimeout(() => fail(`scenario ${scenario} timed out`), cfg.timeout || 30000)
  : null;

// What pusher-js 8 needs for a local server (reference §5.1).
const LOCAL = {
  cluster: 'local',
  wsHost: '127.0.0.1',
  wsPort: cfg.wsPort,
  forceTLS: false,
  enabledTransports: ['ws'],
};

function connect(user, options = {}) {
  const params = { user: user || '' };
  if (options.watchlist) params.watchlist = options.watchlist.join(',');
  delete options.watchlist;
  const pusher = new Pusher(cfg.key, {
    ...LOCAL,
    channelAuthorization: { endpoint: `${cfg.flask}/pusher/auth`, transport: 'ajax', params },
    userAuthentication: { endpoint: `${cfg.flask}/pusher/user-auth`, transport: 'ajax', params },
    ...options,
  });
  clients.push(pusher);
  return pusher;
}

// The next emission of `event` on `emitter` (a channel, pusher, pusher.user...).
function next(emitter, event) {
  return new Promise((resolve) => {
    const handler = (data, metadata) => {
      emitter.unbind(event, handler);
      resolve({ data, metadata });
    };
    emitter.bind(event, handler);
  });
}

function subscribe(pusher, name) {
  const channel = pusher.subscribe(name);
  return next(channel, 'pusher:subscription_succeeded').then(({ data }) => ({ channel, data }));
}

// Resolves once the signed-in connection has joined #server-to-user-<id>.
function signin(pusher) {
  return new Promise((resolve) => {
    const onMessage = (event) => {
      if (
        event.event === 'pusher_internal:subscription_succeeded' &&
        event.channel.startsWith('#server-to-user-')
      ) {
        pusher.connection.unbind('message', onMessage);
        resolve(event.channel);
      }
    };
    pusher.connection.bind('message', onMessage);
    pusher.signin();
  });
}

async function post(path, body) {
  const response = await fetch(`${cfg.flask}${path}`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify(body),
  });
  if (!response.ok) throw new Error(`${path}: ${response.status} ${await response.text()}`);
  return response.json();
}

function trigger(channel, event, data, socketId) {
  return post('/test/trigger', { channel, event, data, socket_id: socketId });
}

function members(channel) {
  const list = [];
  channel.members.each((m) => list.push({ id: m.id, info: m.info }));
  return { me: channel.members.me.id, count: channel.members.count, members: list };
}

// Subscribe as `user`, trigger `event` on `channelName` through the HTTP API, and
// report what pusher-js delivered.
async function roundTrip(user, channelName, event, payload) {
  const pusher = connect(user);
  const { channel } = await subscribe(pusher, channelName);
  const got = next(channel, event);
  await trigger(channelName, event, payload);
  out({ event, data: (await got).data });
}

const scenarios = {
  public: () => roundTrip(undefined, 'news', 'greet', { hello: 'world' }),

  private: () => roundTrip('ann', 'private-room', 'secret', { n: 42 }),

  async exclusion() {
    const a = connect();
    const b = connect();
    const { channel: ca } = await subscribe(a, 'news');
    const { channel: cb } = await subscribe(b, 'news');
    const seen = [];
    ca.bind('ev', (d) => seen.push(['a', d.n]));
    const gotB = next(cb, 'ev');
    await trigger('news', 'ev', { n: 1 }, a.connection.socket_id);
    await gotB;
    const gotA = next(ca, 'ev');
    await trigger('news', 'ev', { n: 2 });
    await gotA;
    out({ a_saw: seen });
  },

  async presence() {
    const ann = connect('ann');
    const { channel: annChannel, data } = await subscribe(ann, 'presence-room');
    out({ step: 'ann_subscribed', ...members(annChannel), data_count: data.count });
    const added = next(annChannel, 'pusher:member_added');
    const bob = connect('bob');
    const { channel: bobChannel } = await subscribe(bob, 'presence-room');
    out({ step: 'member_added', member: (await added).data });
    out({ step: 'bob_subscribed', ...members(bobChannel) });
    const removed = next(annChannel, 'pusher:member_removed');
    bob.disconnect();
    out({ step: 'member_removed', member: (await removed).data });
    out({ step: 'after', ...members(annChannel) });
  },

  encrypted: () =>
    roundTrip('ann', 'private-encrypted-vault', 'secret', { hello: 'encrypted world' }),

  async client_events() {
    const ann = connect('ann');
    const bob = connect('bob');
    const { channel: annChannel } = await subscribe(ann, 'presence-chat');
    const added = next(annChannel, 'pusher:member_added');
    const { channel: bobChannel } = await subscribe(bob, 'presence-chat');
    await added;
    const echoes = [];
    bobChannel.bind('client-typing', () => echoes.push('typing'));
    const typing = next(annChannel, 'client-typing');
    out({ triggered: bobChannel.trigger('client-typing', { typing: true }) });
    const { data, metadata } = await typing;
    out({ event: 'client-typing', data, metadata });
    const ack = next(bobChannel, 'client-ack');
    annChannel.trigger('client-ack', { ok: 1 });
    await ack; // ordered after any echo of bob's own event
    out({ bob_echoes: echoes });
  },

  async signin() {
    const ann = connect('ann');
    const bob = connect('bob');
    out({ joined: await signin(ann) });
    await signin(bob);
    const got = next(ann.user, 'note');
    const bobSaw = [];
    bob.user.bind('note', (d) => bobSaw.push(d));
    await post('/test/send_to_user', { user_id: 'ann', event: 'note', data: { text: 'hi ann' } });
    out({ event: 'note', data: (await got).data, user: ann.user.user_data });
    const gotBob = next(bob.user, 'note');
    await post('/test/send_to_user', { user_id: 'bob', event: 'note', data: { text: 'hi bob' } });
    await gotBob;
    out({ bob_saw: bobSaw });
  },

  async watchlist() {
    const ann = connect('ann', { watchlist: ['bob'] });
    const initial = next(ann.user.watchlist, 'offline');
    await signin(ann);
    out({ step: 'initial', event: (await initial).data });
    const online = next(ann.user.watchlist, 'online');
    const bob = connect('bob');
    await signin(bob);
    out({ step: 'online', event: (await online).data });
    const offline = next(ann.user.watchlist, 'offline');
    bob.disconnect();
    out({ step: 'offline', event: (await offline).data });
  },

  async cache() {
    const first = connect();
    const channel = first.subscribe('cache-prices');
    const miss = next(channel, 'pusher:cache_miss');
    await next(channel, 'pusher:subscription_succeeded');
    await miss;
    out({ step: 'cache_miss' });
    const got = next(channel, 'price');
    await trigger('cache-prices', 'price', { eur: 10 });
    await got;
    const late = connect();
    const lateChannel = late.subscribe('cache-prices');
    const replay = next(lateChannel, 'price');
    await next(lateChannel, 'pusher:subscription_succeeded');
    out({ step: 'replayed', data: (await replay).data });
  },

  async subscription_count() {
    const a = connect();
    const { channel } = await subscribe(a, 'room');
    const counted = new Promise((resolve) => {
      channel.bind('pusher:subscription_count', (data) => {
        if (data.subscription_count === 2) resolve(data);
      });
    });
    const b = connect();
    await subscribe(b, 'room');
    out({ event: await counted, property: channel.subscriptionCount });
  },

  async refused() {
    const pusher = connect('ann');
    const byEndpoint = pusher.subscribe('private-forbidden');
    const error = await next(byEndpoint, 'pusher:subscription_error');
    out({ step: 'endpoint', error: { type: error.data.type, status: error.data.status } });
    // A bad signature reaches the server, which answers pusher:subscription_error.
    const forged = connect('ann', {
      channelAuthorization: {
        customHandler: (params, callback) => callback(null, { auth: `${cfg.key}:${'0'.repeat(64)}` }),
      },
    });
    const serverSide = forged.subscribe('private-forged');
    const refusal = await next(serverSide, 'pusher:subscription_error');
    out({ step: 'server', error: refusal.data });
  },

  // A page-like client: flask-pusher.js, as served by the blueprint, adds
  // X-Socket-ID to its same-origin requests; to_others=True leaves it out.
  async to_others() {
    globalThis.location = new URL(`${cfg.flask}/chat`);
    globalThis.Pusher = Pusher;
    const helper = await fetch(`${cfg.flask}/pusher/static/flask-pusher.js`);
    if (!helper.ok) throw new Error(`flask-pusher.js: ${helper.status}`);
    require('vm').runInThisContext(await helper.text());
    const before = await (await fetch(`${cfg.flask}/test/header`, { method: 'POST' })).json();
    out({ step: 'not_connected', header: before.x_socket_id });
    const page = connect('ann');
    const { channel: pageChannel } = await subscribe(page, 'news');
    const found = await (await fetch(`${cfg.flask}/test/header`, { method: 'POST' })).json();
    out({ step: 'found', header_is_page: found.x_socket_id === page.connection.socket_id });
    // This process holds a second client too: name the page's (else: the last connected).
    FlaskPusher.use(page);
    const other = connect('bob');
    const { channel: otherChannel } = await subscribe(other, 'news');
    const pageSaw = [];
    pageChannel.bind('said', (d) => pageSaw.push(d));
    const otherGot = next(otherChannel, 'said');
    const said = await post('/test/say', { channel: 'news', event: 'said', data: { n: 1 } });
    out({ step: 'said', header_is_page: said.x_socket_id === page.connection.socket_id });
    out({ step: 'other_got', data: (await otherGot).data });
    // A later event that the page does get: anything of the first would be before it.
    const pageGot = next(pageChannel, 'after');
    await trigger('news', 'after', { n: 2 });
    await pageGot;
    out({ step: 'page_saw', said: pageSaw });
    const xhrLike = new Request(`${cfg.flask}/test/header`, { method: 'POST' });
    const fromRequest = await (await fetch(xhrLike)).json();
    out({ step: 'request_object', header_is_page: fromRequest.x_socket_id === page.connection.socket_id });
    const crossOrigin = cfg.flask.replace('127.0.0.1', 'localhost');
    const cross = await (await fetch(`${crossOrigin}/test/header`, { method: 'POST' })).json();
    out({ step: 'cross_origin', header: cross.x_socket_id });
  },

  async channel_routes() {
    const ann = connect('ann');
    const { channel: order } = await subscribe(ann, 'private-orders.42');
    out({ step: 'order_42', subscribed: order.subscribed });
    const refused = ann.subscribe('private-orders.13');
    const error = await next(refused, 'pusher:subscription_error');
    out({ step: 'order_13', status: error.data.status });
    const { channel: team } = await subscribe(ann, 'presence-team.red');
    out({ step: 'team', me: team.members.me });
    const got = next(order, 'shipped');
    await trigger('private-orders.42', 'shipped', { at: 'noon' });
    out({ step: 'event', data: (await got).data });
  },

  async batch() {
    const PusherBatchAuthorizer = require('pusher-js-auth');
    // No channelAuthorization key at all, or pusher-js ignores the authorizer (§1.1).
    const pusher = new Pusher(cfg.key, {
      ...LOCAL,
      authorizer: PusherBatchAuthorizer,
      authEndpoint: `${cfg.flask}/pusher/auth`,
      auth: { params: { user: 'carol' } },
    });
    clients.push(pusher);
    await next(pusher.connection, 'connected');
    const names = cfg.channels || ['private-a', 'private-b', 'presence-c', 'private-forbidden'];
    const results = names.map((name) => {
      const channel = pusher.subscribe(name);
      return Promise.race([
        next(channel, 'pusher:subscription_succeeded').then(() => ({ name, ok: true })),
        next(channel, 'pusher:subscription_error').then(() => ({ name, ok: false })),
      ]).then((result) => {
        if (result.ok && name.startsWith('presence-')) result.me = channel.members.me.id;
        return result;
      });
    });
    for (const result of await Promise.all(results)) out(result);
  },
};

module.exports = { Pusher, cfg, clients, connect, next, subscribe, signin, members, out };

if (main) (async () => {
  if (!scenarios[scenario]) fail(`unknown scenario ${scenario}`);
  await scenarios[scenario]();
  for (const client of clients) client.disconnect();
  clearTimeout(timer);
  out({ done: true });
  // Let the close frames go out before exiting.
  setTimeout(() => process.exit(0), 50);
})().catch(fail);
