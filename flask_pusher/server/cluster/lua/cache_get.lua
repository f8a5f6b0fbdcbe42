-- {'cache_get', app, key, socket id, channel}: a cache channel's last event and its ttl.
OPS.cache_get = function(op)
  local value = redis.call('GET', op[3])
  local ttl = redis.call('PTTL', op[3])
  reply({kind = 'cached', app = op[2], socket = op[4], channel = op[5], value = value, ttl = ttl})
end
