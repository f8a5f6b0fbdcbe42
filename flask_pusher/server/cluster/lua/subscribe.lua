-- {'subscribe', app, channel, +1 or -1}: a subscription of this node's.
OPS.subscribe = function(op) sub(op[2], op[3], op[4]) end
