-- The app's limits across nodes (flask_pusher/server/limits.py), run at once,
-- outside the write queue, since a handshake or an HTTP API request waits.
-- Mode 'admit' (ARGV[5] JSON [app, max_connections]): 1 and this node's count
-- one higher if the cluster's connections are under the quota, else 0.
local function admit(app, limit)
  local n = tonumber(redis.call('GET', P .. ':' .. app .. ':conns') or '0')
  if n >= limit then return 0 end
  redis.call('ZADD', NODES, 'XX', now, node)
  conns(app, 1)
  return 1
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
