-- {'webhook', app, event JSON}: a webhook event for the shared stream.
OPS.webhook = function(op)
  local ok, ev = pcall(cjson.decode, op[3])
  stream(op[2], op[3], (ok and type(ev) == 'table') and ev.name or nil)
end
