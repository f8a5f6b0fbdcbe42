-- {'ack', entry id}: a webhook stream entry was sent.
OPS.ack = function(op)
  redis.call('XACK', WH, 'senders', op[2])
  redis.call('XDEL', WH, op[2])
end
