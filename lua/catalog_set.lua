--[[
  catalog_set: write tools into one bucket's catalog replica, read atomically by charge and
  hold. The field '~' marks the replica as loaded (an empty catalog is still a catalog).
  Input:
    KEYS[1] catalog (bucket replica)
    ARGV[1] mode ('merge' upserts the given tools, 'replace' makes the replica them)
    ARGV[2 + 4i .. 5 + 4i] per tool i: tool (name), cost (0..CREDITS_MAX), credit_type,
      active (1 | 0)
  Output: {0, written (tools)}   {-12, field} bad argument
]]
--- @include "includes/common"

local mode = ARGV[1]
if mode ~= 'merge' and mode ~= 'replace' then return {E_BAD_ARGUMENT, 'mode'} end
local n = (#ARGV - 1) / 4
if n ~= math.floor(n) then return {E_BAD_ARGUMENT, 'tools'} end
local fields = {KEYS[1], '~', '1'}
for i = 0, n - 1 do
  local b = 2 + 4 * i
  if not valid_tool(ARGV[b]) then return {E_BAD_ARGUMENT, 'tool'} end
  if not parse_uint(ARGV[b + 1], CREDITS_MAX) then return {E_BAD_ARGUMENT, 'cost'} end
  if not valid_credit_type(ARGV[b + 2]) then return {E_BAD_ARGUMENT, 'credit_type'} end
  if ARGV[b + 3] ~= '1' and ARGV[b + 3] ~= '0' then return {E_BAD_ARGUMENT, 'active'} end
  fields[#fields + 1] = ARGV[b]
  fields[#fields + 1] = ARGV[b + 1] .. '|' .. ARGV[b + 2] .. '|' .. ARGV[b + 3]
end
if mode == 'replace' then
  redis.call('DEL', KEYS[1])
end
redis.call('HSET', unpack(fields))
return {E_OK, n}
