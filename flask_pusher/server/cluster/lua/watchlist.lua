-- {'watchlist', app, socket id, {user, ...}}: who of a signed-in connection's
-- watchlist is online anywhere.
OPS.watchlist = function(op)
  local key = P .. ':' .. op[2] .. ':users'
  local on = {}
  for _, id in ipairs(op[4]) do
    if redis.call('HEXISTS', key, id) == 1 then on[#on + 1] = id end
  end
  reply({kind = 'watchlist', app = op[2], socket = op[3], online = on})
end
