-- {'sync', {{field, count, info}, ...}}: this node's whole state (at start, after
-- a reconnection, or when it was reaped while alive), written as a difference.
OPS.sync = function(op)
  redis.call('ZADD', NODES, now, node)
  live = nil
  sync(op[2])
end
