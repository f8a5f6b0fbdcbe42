-- {'member', app, channel, user, +1 or -1, info JSON or nil, socket id or nil}:
-- a connection of a presence member (added while joined, removed on leave).
OPS.member = function(op) member(op[2], op[3], op[4], op[5], op[6], op[7]) end
