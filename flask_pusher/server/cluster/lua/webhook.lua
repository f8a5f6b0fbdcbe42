-- {'webhook', app, event JSON}: a webhook event for the shared stream.
OPS.webhook = function(op) stream(op[2], op[3]) end
