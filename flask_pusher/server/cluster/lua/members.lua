-- {'members', app, channel, socket id, join number}: a presence channel's members,
-- for a repeated subscription.
OPS.members = function(op)
  local members = redis.call('HGETALL', P .. ':' .. op[2] .. ':pi:' .. op[3])
  reply({kind = 'joined', app = op[2], channel = op[3], socket = op[4], number = op[5],
         members = members})
end
