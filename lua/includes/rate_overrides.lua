-- An account's own rate limits, on each of its wallet hashes (field r, like the status s):
-- "TOOL:count:period_ms;..." with '*' for all its tools, "" for none (meter/rate_limits.py
-- builds it). count 0 refuses every call of the tool (Unkey's override of limit 0).
-- Returns true when s is well formed: checked before account_set or hydrate writes it.
local function valid_rate_overrides(s)
  if s == '' then return true end
  local items = split(s, ';')
  if #items > RATE_LIMIT_OVERRIDES_MAX then return false end
  for _, item in ipairs(items) do
    local f = split(item, ':')
    if #f ~= 3 or (f[1] ~= '*' and not valid_tool(f[1])) then return false end
    local period_ms = parse_uint(f[3], RATE_LIMIT_PERIOD_MS_MAX)
    if not parse_uint(f[2], RATE_LIMIT_COUNT_MAX) or not period_ms or period_ms < 1 then
      return false
    end
  end
  return true
end
