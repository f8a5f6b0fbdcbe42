-- {'addr', app, address, -1}: a connection of this node's from a client
-- address, to an app with max_connections_per_address, is gone (admissions
-- are mode 'admit', limits.lua).
OPS.addr = function(op) addrs(op[2], op[3], op[4]) end
