-- {'conn', app, -1}: a connection of this node's to an app with max_connections
-- is gone (admissions are mode 'admit', limits.lua).
OPS.conn = function(op) conns(op[2], op[3]) end
