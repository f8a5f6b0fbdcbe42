-- The script's entry: mode 'ops' runs ARGV[5], a JSON list of operations, in
-- order; mode 'beat' is the heartbeat; 'admit' and 'take' the limits (limits.lua).
if mode == 'ops' then
  for _, op in ipairs(cjson.decode(ARGV[5])) do
    local run = OPS[op[1]]
    if run ~= nil then run(op) end
  end
  return drops()
elseif mode == 'beat' then
  return beat(tonumber(ARGV[5]))
elseif mode == 'admit' then
  local a = cjson.decode(ARGV[5])
  return admit(a[1], a[2], a[3], a[4])
elseif mode == 'take' then
  local a = cjson.decode(ARGV[5])
  return take(a[1], a[2], a[3], a[4])
end
return redis.error_reply('unknown mode ' .. mode)
