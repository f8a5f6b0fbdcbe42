-- The app's limits across nodes (flask_pusher/server/limits.py), run at once,
-- outside the write queue, since a handshake or an HTTP API request waits.
-- Mode 'admit' (ARGV[5] JSON [app, max_connections, address,
-- max_connections_per_address], 0 for no quota): 0 and this node's counts one
-- higher if the cluster's connections are under both quotas, else 1 (the
-- app's quota is full) or 2 (the address's), taking nothing.
local function admit(app, limit, addr, per)
  if limit > 0 then
    local n = tonumber(redis.call('GET', P .. ':' .. app .. ':conns') or '0')
    if n >= limit then return 1 end
  end
  if per > 0 then
    local n = tonumber(redis.call('HGET', P .. ':' .. app .. ':addr', addr) or '0')
    if n >= per then return 2 end
  end
  redis.call('ZADD', NODES, 'XX', now, node)
  if limit > 0 then conns(app, 1) end
  if per > 0 then addrs(app, addr, 1) end
  return 0
end
-- Mode 'take' (ARGV[5] JSON [app, bucket, amount, limit]): add amount to this
-- second's count of the bucket if it stays within the limit (1), else 0 (a
-- refused request takes nothing).
local function take(app, bucket, amount, limit)
  local key = P .. ':' .. app .. ':rate:' .. bucket .. ':' .. math.floor(now / 1000)
  local n = tonumber(redis.call('GET', key) or '0')
  if n + amount > limit then return 0 end
  redis.call('INCRBY', key, amount)
  if n == 0 then redis.call('PEXPIRE', key, 2000) end
  return 1
end
