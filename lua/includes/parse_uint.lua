-- A non-negative integer from an ARGV string, or nil when it is not one or exceeds max.
-- Only plain digits are accepted: "10.0", "1e3", "-1" and "" are not integers.
local function parse_uint(s, max)
  if type(s) ~= 'string' or #s == 0 or #s > 16 or not string.match(s, '^%d+$') then
    return nil
  end
  local n = tonumber(s)
  if n > max then
    return nil
  end
  return n
end
