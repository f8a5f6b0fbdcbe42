-- Shared by every operation of the cluster's script (flask_pusher/server/cluster/script.py
-- joins this file, one file per operation and main.lua into one script).
-- ARGV: prefix, node id, mode, the apps' settings as JSON {app_id: {"h": webhooks 0/1,
-- "c": subscription counts 0/1, "d": webhook delay in ms}}, then the mode's argument.
local P = ARGV[1]
local node = ARGV[2]
local mode = ARGV[3]
local apps = cjson.decode(ARGV[4])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local WH = P .. ':wh'
local WHD = P .. ':whd'
local WHK = P .. ':whk'
local NODES = P .. ':nodes'
local nodekey = P .. ':node:' .. node
local to_node = P .. ':to:' .. node
local OPS = {}

-- Every node has a pub/sub channel of its own: one subscription, so it sees
-- all messages in the order Redis published them, and none of its own echoed.
local live = nil
local function send(text, others)
  if live == nil then live = redis.call('ZRANGE', NODES, 0, -1) end
  for _, n in ipairs(live) do
    if not (others and n == node) then redis.call('PUBLISH', P .. ':to:' .. n, text) end
  end
end
local function pub(msg) send(cjson.encode(msg), false) end
local function reply(msg) redis.call('PUBLISH', to_node, cjson.encode(msg)) end

-- The webhook stream holds at most WH_MAX entries (made by script.py from
-- stream.STREAM_MAX). When full, the oldest state event (FLOODS, made from
-- webhook_queue.FLOODS: what anyone can cause in bulk) is dropped first, so a
-- churn flood cannot evict the app's member, client and cache-miss events;
-- only with no state event left is the oldest entry dropped. WHS lists the
-- state entries ("id\ntype\napp", oldest first; ids already sent are skipped).
-- What is dropped is told to the node that ran the script ({app, type} in
-- DROPS), which counts it in webhooks_dropped_full_total.
local WHS = P .. ':whs'
local DROPS = {}
local function evict()
  while true do
    local s = redis.call('LPOP', WHS)
    if not s then break end
    local i = string.find(s, '\n', 1, true)
    local j = string.find(s, '\n', i + 1, true)
    if redis.call('XDEL', WH, string.sub(s, 1, i - 1)) == 1 then
      DROPS[#DROPS + 1] = {string.sub(s, j + 1), string.sub(s, i + 1, j - 1)}
      return
    end
  end
  local oldest = redis.call('XRANGE', WH, '-', '+', 'COUNT', 1)[1]
  if not oldest then return end
  redis.call('XDEL', WH, oldest[1])
  local f = {}
  for k = 1, #oldest[2], 2 do f[oldest[2][k]] = oldest[2][k + 1] end
  local ok, ev = pcall(cjson.decode, f.e or '')
  local name = (ok and type(ev) == 'table' and type(ev.name) == 'string') and ev.name or '?'
  DROPS[#DROPS + 1] = {f.a or '', name}
end

-- DROPS as JSON for the calling node, '' if none.
local function drops()
  if #DROPS == 0 then return '' end
  return cjson.encode(DROPS)
end

local function stream(app, event_json, name)
  if redis.call('XLEN', WH) >= WH_MAX then evict() end
  local id = redis.call('XADD', WH, '*', 'a', app, 'e', event_json)
  if FLOODS[name] then
    if redis.call('RPUSH', WHS, id .. '\n' .. name .. '\n' .. app) > WH_MAX then
      redis.call('LPOP', WHS)
    end
    -- Forget up to two entries already sent from its head: WHS stays about
    -- as long as the state events still in the stream.
    for _ = 1, 2 do
      local head = redis.call('LINDEX', WHS, 0)
      local hid = string.sub(head, 1, string.find(head, '\n', 1, true) - 1)
      if hid == id or #redis.call('XRANGE', WH, hid, hid) > 0 then break end
      redis.call('LPOP', WHS)
    end
  end
end

-- The vacate delay, in Redis because a cancel must see every node's hold
-- atomically: each webhook of DELAYED (channel_vacated, member_removed) waits
-- cfg.d ms in a sorted set, where its canceller of the same channel and user
-- (channel_occupied, member_added) cancels it. DELAYED and CANCELS are made by
-- script.py from flask_pusher.names.DELAYED_WEBHOOKS, the rule that
-- flask_pusher/server/webhooks.py applies in one process.
local function hook(app, ev)
  local cfg = apps[app]
  if not cfg or cfg.h == 0 then return end
  local key = app .. '\n' .. ev.channel .. '\n' .. (ev.user_id or '')
  local name = ev.name
  if DELAYED[name] then
    if cfg.d > 0 then
      local seq = redis.call('INCR', P .. ':whseq')
      local held = cjson.encode({a = app, e = ev, k = key, n = seq})
      redis.call('ZADD', WHD, now + cfg.d, held)
      redis.call('HSET', WHK, key, held)
      return
    end
  elseif CANCELS[name] then
    local held = redis.call('HGET', WHK, key)
    if held then
      redis.call('ZREM', WHD, held)
      redis.call('HDEL', WHK, key)
      return
    end
  end
  stream(app, cjson.encode(ev), name)
end

-- This node's own count of a field changes by d (never below 0); returns the change made.
local function nodeadd(f, d)
  local cur = tonumber(redis.call('HGET', nodekey, f) or '0')
  if cur + d < 0 then d = -cur end
  if d == 0 then return 0 end
  if cur + d == 0 then
    redis.call('HDEL', nodekey, f)
  else
    redis.call('HINCRBY', nodekey, f, d)
  end
  return d
end

-- First and last, cluster-wide: the totals beside each node's counts say
-- whether a change made a channel occupied or vacant, a member added or removed,
-- a user online or offline (the same question AppState answers in one process).
local function sub(app, chan, d)
  d = nodeadd('s\n' .. app .. '\n' .. chan, d)
  if d == 0 then return end
  local key = P .. ':' .. app .. ':ch'
  local total = redis.call('HINCRBY', key, chan, d)
  if total <= 0 then
    redis.call('HDEL', key, chan)
    total = 0
  end
  local before = total - d
  if before <= 0 and total > 0 then hook(app, {name = 'channel_occupied', channel = chan}) end
  if total == 0 and before > 0 then hook(app, {name = 'channel_vacated', channel = chan}) end
  local cfg = apps[app]
  if cfg and cfg.c == 1 and string.sub(chan, 1, 9) ~= 'presence-' then
    pub({kind = 'count', app = app, channel = chan, count = total, origin = node})
  end
end

local function member(app, chan, user, d, info, sid)
  d = nodeadd('m\n' .. app .. '\n' .. chan .. '\n' .. user, d)
  if d == 0 then return end
  local pm = P .. ':' .. app .. ':pm:' .. chan
  local pi = P .. ':' .. app .. ':pi:' .. chan
  local n = redis.call('HINCRBY', pm, user, d)
  if n <= 0 then
    redis.call('HDEL', pm, user)
    redis.call('HDEL', pi, user)
    if n - d > 0 then
      pub({kind = 'member_removed', app = app, channel = chan, user = user})
      hook(app, {name = 'member_removed', channel = chan, user_id = user})
    end
  elseif n - d <= 0 then
    redis.call('HSET', pi, user, info or 'null')
    pub({kind = 'member_added', app = app, channel = chan, user = user, info = info or 'null',
         exclude = sid or ''})
    hook(app, {name = 'member_added', channel = chan, user_id = user})
  end
end

local function signed(app, uid, d)
  d = nodeadd('u\n' .. app .. '\n' .. uid, d)
  if d == 0 then return end
  local key = P .. ':' .. app .. ':users'
  local n = redis.call('HINCRBY', key, uid, d)
  if n <= 0 then
    redis.call('HDEL', key, uid)
    if n - d > 0 then pub({kind = 'offline', app = app, user = uid}) end
  elseif n - d <= 0 then
    pub({kind = 'online', app = app, user = uid})
  end
end

-- The app's connections across nodes (kept for an app with max_connections only):
-- this node's count in its hash ("c\napp"), the cluster's total beside it.
local function conns(app, d)
  d = nodeadd('c\n' .. app, d)
  if d == 0 then return end
  local key = P .. ':' .. app .. ':conns'
  if redis.call('INCRBY', key, d) <= 0 then redis.call('DEL', key) end
end

-- The app's connections by client address across nodes (kept for an app with
-- max_connections_per_address only): this node's count in its hash
-- ("a\napp\naddress"), the cluster's in the hash P:app:addr.
local function addrs(app, addr, d)
  d = nodeadd('a\n' .. app .. '\n' .. addr, d)
  if d == 0 then return end
  local key = P .. ':' .. app .. ':addr'
  if redis.call('HINCRBY', key, addr, d) <= 0 then redis.call('HDEL', key, addr) end
end

-- One field of a node's hash ("s\napp\nchannel", "m\napp\nchannel\nuser",
-- "u\napp\nuser", "c\napp", "a\napp\naddress") changed by d.
local function change(f, d, info)
  local kind = string.sub(f, 1, 1)
  if kind == 'c' then return conns(string.sub(f, 3), d) end
  local count = (kind == 'm') and 4 or 3
  local parts = {}
  local start = 1
  for i = 1, count - 1 do
    local j = string.find(f, '\n', start, true)
    parts[i] = string.sub(f, start, j - 1)
    start = j + 1
  end
  parts[count] = string.sub(f, start)
  if kind == 's' then sub(parts[2], parts[3], d)
  elseif kind == 'm' then member(parts[2], parts[3], parts[4], d, info, nil)
  elseif kind == 'a' then addrs(parts[2], parts[3], d)
  else signed(parts[2], parts[3], d) end
end

-- Make this node's counts those of `desired` ({{field, count, info}, ...}):
-- removals first (members before subscriptions), then additions.
local function sync(desired)
  local want, infos, cur = {}, {}, {}
  for _, e in ipairs(desired) do
    want[e[1]] = e[2]
    infos[e[1]] = e[3]
  end
  local flat = redis.call('HGETALL', nodekey)
  for i = 1, #flat, 2 do cur[flat[i]] = tonumber(flat[i + 1]) end
  for _, kind in ipairs({'m', 's', 'u', 'c', 'a'}) do
    for f, c in pairs(cur) do
      local d = (want[f] or 0) - c
      if string.sub(f, 1, 1) == kind and d < 0 then change(f, d, nil) end
    end
  end
  for _, kind in ipairs({'s', 'm', 'u', 'c', 'a'}) do
    for f, n in pairs(want) do
      local d = n - (cur[f] or 0)
      if string.sub(f, 1, 1) == kind and d > 0 then change(f, d, infos[f]) end
    end
  end
end
