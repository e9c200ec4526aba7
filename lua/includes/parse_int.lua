-- A signed integer from an ARGV string within [-max, max], or nil. Plain digits only.
local function parse_int(s, max)
  if type(s) ~= 'string' then return nil end
  if string.sub(s, 1, 1) == '-' then
    local n = parse_uint(string.sub(s, 2), max)
    if n == nil then return nil end
    return -n
  end
  return parse_uint(s, max)
end
