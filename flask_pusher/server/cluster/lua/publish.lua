-- {'publish', message JSON}: a message for every other live node.
OPS.publish = function(op) send(op[2], true) end
