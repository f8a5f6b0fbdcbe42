-- {'cache_set', key, value, ttl in ms}: a cache channel's last event.
OPS.cache_set = function(op) redis.call('SET', op[2], op[3], 'PX', op[4]) end
