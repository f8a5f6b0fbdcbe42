-- {'join', app, channel, user, info JSON, socket id, member limit, join number}:
-- a presence subscription, decided atomically: refused when the channel is
-- full, else counted, and answered to this node with the members.
OPS.join = function(op)
  local pm = P .. ':' .. op[2] .. ':pm:' .. op[3]
  if redis.call('HEXISTS', pm, op[4]) == 0 and redis.call('HLEN', pm) >= op[7] then
    reply({kind = 'joined', app = op[2], channel = op[3], socket = op[6], number = op[8]})
  else
    sub(op[2], op[3], 1)
    member(op[2], op[3], op[4], 1, op[5], op[6])
    local members = redis.call('HGETALL', P .. ':' .. op[2] .. ':pi:' .. op[3])
    reply({kind = 'joined', app = op[2], channel = op[3], socket = op[6], number = op[8],
           members = members})
  end
end
