-- The heartbeat (mode 'beat', ARGV[5] the node timeout in ms): this node is
-- alive; held webhooks whose delay is over go to the stream; nodes silent for
-- the timeout are reaped (their counts removed as if their clients had left).
-- Returns {1 if this node was still registered else 0, {reaped node, ...},
-- the webhook events dropped from the full stream as JSON (see stream)}.
local function beat(timeout)
  local existed = redis.call('ZSCORE', NODES, node)
  redis.call('ZADD', NODES, now, node)
  local due = redis.call('ZRANGEBYSCORE', WHD, '-inf', now, 'LIMIT', 0, 500)
  for _, held in ipairs(due) do
    redis.call('ZREM', WHD, held)
    local h = cjson.decode(held)
    if redis.call('HGET', WHK, h.k) == held then redis.call('HDEL', WHK, h.k) end
    stream(h.a, cjson.encode(h.e), h.e.name)
  end
  local dead = redis.call('ZRANGEBYSCORE', NODES, '-inf', now - timeout, 'LIMIT', 0, 10)
  for _, d in ipairs(dead) do
    nodekey = P .. ':node:' .. d
    sync({})
    redis.call('DEL', nodekey)
    redis.call('ZREM', NODES, d)
  end
  return {existed and 1 or 0, dead, drops()}
end
