// The load generator of benchmarks/inbound.py: the same client, in one Node
// process, for every server it compares (this tree, an older tree, soketi).
// Raw WebSockets from the `ws` package (no pusher-js), so that the client's
// own cost stays small and identical whatever the server.
//
//   node benchmarks/inbound_load.js '{"mode": "ping", "port": 6001, ...}'
//
// It prints one JSON line per step on stdout: {"ready": ...} once its
// connections are set up (none for "storm"), then, after a "go" line on
// stdin, the figures of the measured step {"result": ...}; a "close" line on
// stdin closes every connection and exits. Anything that goes wrong (an error
// frame, a refused subscription, a closed socket, a timeout) is counted in
// the result's "errors" and described in "first_error": the parent fails
// loudly on any error or loss.
//
// Modes (the Pusher Channels protocol, version 7: pusher-protocol §5;
// https://pusher.com/docs/channels/library_auth_reference/pusher-websockets-protocol/):
//   ping    N connections send `pusher:ping` at `rate` per connection per
//           second for `seconds`; every `pusher:pong` is matched (in order)
//           to its ping: pongs received and their delays (§5.4).
//   storm   N connections opened at once, each sending `pusher:subscribe`
//           (public channel `storm-<i % channels>`) on
//           `pusher:connection_established`: the wall time until every one has
//           its `pusher_internal:subscription_succeeded` (§5.3, §5.5).
//   events  N connections over `channels` private channels (authorization
//           signed here with the app secret: HMAC-SHA256 of
//           `socket_id:channel`, §5.5), each sending `client-tick` events at
//           `rate` per second for `seconds`, stamped with this process's
//           monotonic clock; every other member of the channel must receive
//           each one (never the sender: §5.7): deliveries and their latency.
//   fanout  N connections subscribed to the public channel `fanout` receive
//           `tick` events triggered through the signed HTTP API (pusher-protocol
//           §4.3) at `rate` per second for `seconds`, stamped as above: every
//           connection must receive every one. The baseline of the others:
//           what the server sends, not what clients send.
'use strict';

const crypto = require('crypto');
const http = require('http');
const readline = require('readline');
const { performance } = require('perf_hooks');
const WebSocket = require('ws');

const cfg = JSON.parse(process.argv[2]);
const url =
  `ws://${cfg.host || '127.0.0.1'}:${cfg.port}/app/${cfg.key}` +
  '?protocol=7&client=js&version=8.6.0&flash=false';
const TICK_MS = 5; // the pacer's period
const MAX_BEHIND_MS = 50; // a pacer further behind than this skips, never bursts
const now = () => performance.now();

const errors = { count: 0, first: null };
function fail(what) {
  errors.count += 1;
  if (errors.first === null) errors.first = String(what).slice(0, 300);
}

function out(object) {
  process.stdout.write(JSON.stringify(object) + '\n');
}

function percentiles(values) {
  if (values.length === 0) return { p50_ms: null, p99_ms: null, max_ms: null };
  values.sort((a, b) => a - b);
  const at = (q) => values[Math.min(values.length - 1, Math.floor(values.length * q))];
  const round = (x) => Math.round(x * 1000) / 1000;
  return { p50_ms: round(at(0.5)), p99_ms: round(at(0.99)), max_ms: round(values[values.length - 1]) };
}

function decode(text) {
  let message;
  try {
    message = JSON.parse(text);
  } catch (error) {
    fail(`not JSON: ${text}`);
    return null;
  }
  if (typeof message.data === 'string' && message.data.length && message.data[0] === '{') {
    try {
      message.data = JSON.parse(message.data); // double encoding (§5.2)
    } catch (error) {
      // a string that is not JSON stays a string
    }
  }
  return message;
}

// One connection: `handlers[event](message)` for the events a mode cares
// about; pusher:error, subscription errors and an early close are errors.
function open(index, handlers) {
  const ws = new WebSocket(url, { perMessageDeflate: false, handshakeTimeout: 120000 });
  const conn = { index, ws, socketId: null, closing: false };
  ws.on('message', (text) => {
    const message = decode(text);
    if (message === null) return;
    const handler = handlers[message.event];
    if (handler) handler(conn, message);
    else if (message.event === 'pusher:ping') ws.send('{"event":"pusher:pong","data":{}}');
    else if (message.event === 'pusher:error' || message.event === 'pusher:subscription_error')
      fail(`connection ${index}: ${text}`);
  });
  ws.on('error', (error) => fail(`connection ${index}: ${error.message}`));
  ws.on('close', (code) => {
    if (!conn.closing) fail(`connection ${index} closed by the server with ${code}`);
  });
  return conn;
}

function established(conn, message) {
  conn.socketId = message.data.socket_id;
}

// Resolves when `predicate()` holds, or at the first error (the run is lost
// anyway), or after `seconds` (an error).
function waitFor(predicate, seconds, what) {
  return new Promise((resolve) => {
    const deadline = now() + seconds * 1000;
    const check = () => {
      if (predicate() || errors.count > 0) resolve(true);
      else if (now() > deadline) {
        fail(`timed out after ${seconds} s waiting for ${what}`);
        resolve(false);
      } else setTimeout(check, 2);
    };
    check();
  });
}

// Calls `send(i)` for i = 0, 1, ... at `perSecond` in total, spread evenly,
// for `seconds`; resolves with the number sent and the number skipped because
// this process fell behind by more than MAX_BEHIND_MS (never a catch-up burst,
// which a server's rate limit would rightly refuse).
function pace(perSecond, seconds, send) {
  return new Promise((resolve) => {
    const started = now();
    const total = Math.round(perSecond * seconds);
    let sent = 0;
    let skipped = 0;
    const timer = setInterval(() => {
      const elapsed = now() - started;
      let due = Math.min(total, Math.floor((elapsed / 1000) * perSecond));
      const floor = Math.floor(((elapsed - MAX_BEHIND_MS) / 1000) * perSecond);
      if (sent + skipped < floor) skipped += floor - (sent + skipped);
      while (sent + skipped < due) {
        send(sent + skipped);
        sent += 1;
      }
      if (sent + skipped >= total) {
        clearInterval(timer);
        resolve({ sent, skipped });
      }
    }, TICK_MS);
  });
}

function sign(socketId, channel) {
  const signature = crypto
    .createHmac('sha256', cfg.secret)
    .update(`${socketId}:${channel}`)
    .digest('hex');
  return `${cfg.key}:${signature}`;
}

function subscribe(conn, channel, auth) {
  const data = { channel };
  if (auth) data.auth = auth;
  conn.ws.send(JSON.stringify({ event: 'pusher:subscribe', data }));
}

const agent = new http.Agent({ keepAlive: true, maxSockets: 4 });

// POST /apps/{app_id}/events, signed with the app secret (pusher-protocol §4.3:
// auth_key, auth_timestamp, auth_version, body_md5, then the HMAC-SHA256 of
// "POST\n<path>\n<sorted query>"); resolves when answered, an error unless 200.
function trigger(event) {
  const body = JSON.stringify(event);
  const path = `/apps/${cfg.appId}/events`;
  const params = {
    auth_key: cfg.key,
    auth_timestamp: String(Math.floor(Date.now() / 1000)),
    auth_version: '1.0',
    body_md5: crypto.createHash('md5').update(body).digest('hex'),
  };
  const query = Object.keys(params)
    .sort()
    .map((k) => `${k}=${params[k]}`)
    .join('&');
  const signature = crypto
    .createHmac('sha256', cfg.secret)
    .update(`POST\n${path}\n${query}`)
    .digest('hex');
  return new Promise((resolve) => {
    const request = http.request(
      {
        host: cfg.host || '127.0.0.1',
        port: cfg.port,
        path: `${path}?${query}&auth_signature=${signature}`,
        method: 'POST',
        agent,
        headers: { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body) },
      },
      (response) => {
        let text = '';
        response.on('data', (chunk) => (text += chunk));
        response.on('end', () => {
          if (response.statusCode !== 200) fail(`trigger: ${response.statusCode} ${text}`);
          resolve();
        });
      },
    );
    request.on('error', (error) => {
      fail(`trigger: ${error.message}`);
      resolve();
    });
    request.end(body);
  });
}

const modes = {
  async ping() {
    const pending = new Map(); // connection index -> send times of unanswered pings
    const delays = [];
    let pongs = 0;
    const handlers = {
      'pusher:connection_established': established,
      'pusher:pong': (conn) => {
        const queue = pending.get(conn.index);
        if (!queue || queue.length === 0) return fail(`connection ${conn.index}: pong unasked`);
        delays.push(now() - queue.shift());
        pongs += 1;
      },
    };
    const conns = [];
    for (let i = 0; i < cfg.connections; i += 1) {
      conns.push(open(i, handlers));
      pending.set(i, []);
    }
    await waitFor(() => conns.every((c) => c.socketId !== null), cfg.timeout, 'connections');
    return {
      conns,
      async measure() {
        const started = now();
        const { sent, skipped } = await pace(cfg.connections * cfg.rate, cfg.seconds, (i) => {
          const conn = conns[i % conns.length];
          pending.get(conn.index).push(now());
          conn.ws.send('{"event":"pusher:ping","data":{}}');
        });
        await waitFor(() => pongs >= sent, cfg.timeout, 'every pong');
        return {
          pings: sent,
          pongs,
          lost: sent - pongs,
          skipped,
          seconds: (now() - started) / 1000,
          ...percentiles(delays),
        };
      },
    };
  },

  async storm() {
    let subscribed = 0;
    const times = [];
    let started = 0;
    const handlers = {
      'pusher:connection_established': (conn, message) => {
        established(conn, message);
        subscribe(conn, `storm-${conn.index % cfg.channels}`);
      },
      'pusher_internal:subscription_succeeded': () => {
        times.push(now() - started);
        subscribed += 1;
      },
    };
    const conns = [];
    return {
      conns,
      async measure() {
        started = now();
        for (let i = 0; i < cfg.connections; i += 1) conns.push(open(i, handlers));
        await waitFor(() => subscribed >= cfg.connections, cfg.timeout, 'every subscription');
        return {
          connections: cfg.connections,
          subscribed,
          lost: cfg.connections - subscribed,
          wall_s: (now() - started) / 1000,
          ...percentiles(times),
        };
      },
    };
  },

  async events() {
    const latencies = [];
    let deliveries = 0;
    let expected = 0;
    const channelOf = (i) => `private-bench-${i % cfg.channels}`;
    const members = new Map();
    for (let i = 0; i < cfg.connections; i += 1)
      members.set(channelOf(i), (members.get(channelOf(i)) || 0) + 1);
    const handlers = {
      'pusher:connection_established': (conn, message) => {
        established(conn, message);
        const channel = channelOf(conn.index);
        subscribe(conn, channel, sign(conn.socketId, channel));
      },
      'pusher_internal:subscription_succeeded': (conn) => {
        conn.subscribed = true;
      },
      'client-tick': (conn, message) => {
        const data = message.data;
        if (data.c === conn.index) return fail(`connection ${conn.index} got its own event`);
        latencies.push(now() - data.t);
        deliveries += 1;
      },
    };
    const conns = [];
    for (let i = 0; i < cfg.connections; i += 1) conns.push(open(i, handlers));
    await waitFor(() => conns.every((c) => c.subscribed), cfg.timeout, 'subscriptions');
    return {
      conns,
      async measure() {
        const started = now();
        const { sent, skipped } = await pace(cfg.connections * cfg.rate, cfg.seconds, (i) => {
          const conn = conns[i % conns.length];
          const channel = channelOf(conn.index);
          expected += members.get(channel) - 1;
          const data = { c: conn.index, s: i, t: now() };
          conn.ws.send(JSON.stringify({ event: 'client-tick', channel, data }));
        });
        await waitFor(() => deliveries >= expected, cfg.timeout, 'every delivery');
        return {
          events: sent,
          expected,
          deliveries,
          lost: expected - deliveries,
          skipped,
          seconds: (now() - started) / 1000,
          ...percentiles(latencies),
        };
      },
    };
  },

  async fanout() {
    const latencies = [];
    let deliveries = 0;
    let answered = 0;
    const handlers = {
      'pusher:connection_established': (conn, message) => {
        established(conn, message);
        subscribe(conn, 'fanout');
      },
      'pusher_internal:subscription_succeeded': (conn) => {
        conn.subscribed = true;
      },
      tick: (conn, message) => {
        latencies.push(now() - message.data.t);
        deliveries += 1;
      },
    };
    const conns = [];
    for (let i = 0; i < cfg.connections; i += 1) conns.push(open(i, handlers));
    await waitFor(() => conns.every((c) => c.subscribed), cfg.timeout, 'subscriptions');
    return {
      conns,
      async measure() {
        const started = now();
        const { sent, skipped } = await pace(cfg.rate, cfg.seconds, (i) => {
          const data = JSON.stringify({ s: i, t: now() });
          trigger({ name: 'tick', channels: ['fanout'], data }).then(() => (answered += 1));
        });
        const expected = sent * conns.length;
        await waitFor(() => answered >= sent && deliveries >= expected, cfg.timeout, 'every delivery');
        return {
          triggers: sent,
          expected,
          deliveries,
          lost: expected - deliveries,
          skipped,
          seconds: (now() - started) / 1000,
          ...percentiles(latencies),
        };
      },
    };
  },
};

async function main() {
  const step = await modes[cfg.mode]();
  out({ ready: { connections: step.conns.length, errors: errors.count, first_error: errors.first } });
  const lines = readline.createInterface({ input: process.stdin });
  for await (const line of lines) {
    if (line === 'go') {
      const result = await step.measure();
      out({ result: { ...result, errors: errors.count, first_error: errors.first } });
    } else if (line === 'close') {
      for (const conn of step.conns) {
        conn.closing = true;
        conn.ws.terminate();
      }
      break;
    }
  }
  process.exit(0);
}

main().catch((error) => {
  out({ fatal: String(error && error.stack ? error.stack : error) });
  process.exit(1);
});
