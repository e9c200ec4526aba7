--[[
  catalog_set: write tools into one bucket's catalog replica, read atomically by charge and
  hold. The field '~' marks the replica as loaded (an empty catalog is still a catalog).
  Input:
    KEYS[1] catalog (bucket replica)
    ARGV[1] mode ('merge' upserts the given tools, 'replace' makes the replica them)
    ARGV[2 + 5i .. 6 + 5i] per tool i: tool (name), cost (0..CREDITS_MAX), credit_type,
      active (1 | 0), rate_limit ('' none, or "<count>/<period_ms>": includes/rate_limit)
  Output: {0, written (tools)}   {-12, field} bad argument
]]
--- @include "includes/common"

local mode = ARGV[1]
if mode ~= 'merge' and mode ~= 'replace' then return {E_BAD_ARGUMENT, 'mode'} end
local n = (#ARGV - 1) / 5
if n ~= math.floor(n) then return {E_BAD_ARGUMENT, 'tools'} end
local fields = {KEYS[1], '~', '1'}
for i = 0, n - 1 do
  local b = 2 + 5 * i
  if not valid_tool(ARGV[b]) then return {E_BAD_ARGUMENT, 'tool'} end
  if not parse_uint(ARGV[b + 1], CREDITS_MAX) then return {E_BAD_ARGUMENT, 'cost'} end
  if not valid_credit_type(ARGV[b + 2]) then return {E_BAD_ARGUMENT, 'credit_type'} end
  if ARGV[b + 3] ~= '1' and ARGV[b + 3] ~= '0' then return {E_BAD_ARGUMENT, 'active'} end
  local value = ARGV[b + 1] .. '|' .. ARGV[b + 2] .. '|' .. ARGV[b + 3]
  if ARGV[b + 4] ~= '' then
    local limit = split(ARGV[b + 4], '/')
    local count = parse_uint(limit[1], RATE_LIMIT_COUNT_MAX)
    local period_ms = parse_uint(limit[2] or '', RATE_LIMIT_PERIOD_MS_MAX)
    if #limit ~= 2 or not count or count < 1 or not period_ms or period_ms < 1 then
      return {E_BAD_ARGUMENT, 'rate_limit'}
    end
    value = value .. '|' .. limit[1] .. '|' .. limit[2]
  end
  fields[#fields + 1] = ARGV[b]
  fields[#fields + 1] = value
end
if mode == 'replace' then
  redis.call('DEL', KEYS[1])
end
redis.call('HSET', unpack(fields))
return {E_OK, n}
