--[[
  idem_restore: after Redis lost its data, mark the idempotency keys SQL holds for an
  account (used within the idempotency TTL), so a retry of a request that already reached
  SQL is answered from SQL instead of being applied again (includes/idem: IDEM_IN_SQL).
  Runs before the account's wallet is hydrated; a record already present (a request that
  ran after the loss) is kept.
  Input:
    KEYS[i] per record i: idempotency (record)
    ARGV[1] now_ms   ARGV[1 + i] per record i: expires_at_ms (the original use + the TTL)
  Output: {0, written}   {-12, field} bad argument
]]
--- @include "includes/parse_uint"

local n = #KEYS
if n > IDEM_RESTORE_BATCH_MAX or #ARGV ~= n + 1 then return {E_BAD_ARGUMENT, 'batch'} end
local now = parse_uint(ARGV[1], CREDITS_MAX)
if not now then return {E_BAD_ARGUMENT, 'now_ms'} end
for i = 1, n do
  if not parse_uint(ARGV[1 + i], CREDITS_MAX) then return {E_BAD_ARGUMENT, 'expires_at_ms'} end
end
local written = 0
for i = 1, n do
  local expires_ms = tonumber(ARGV[1 + i])
  -- PX from the caller's now, not PXAT: time comes in ARGV (tests drive it).
  if expires_ms > now and redis.call('SET', KEYS[i], '\30', 'NX', 'PX', expires_ms - now) then
    written = written + 1
  end
end
return {E_OK, written}
