-- {'signin', app, user, +1 or -1}: a connection signed in as user, or gone.
OPS.signin = function(op) signed(op[2], op[3], op[4]) end
