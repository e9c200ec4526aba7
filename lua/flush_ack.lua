--[[
  flush_ack: after SQL committed a batch, acknowledge its entries, trim the journal below
  what SQL confirmed (never below an entry still pending), and renew or release the
  flusher's bucket lock if it still holds it.
  Input:
    KEYS[1] journal (bucket)   KEYS[2] lock (bucket flush lock)
    ARGV[1] group (consumer group)   ARGV[2] token (lock token)
    ARGV[3] lock_ttl_ms (0 = release the lock)
    ARGV[4] committed (highest stream id SQL committed; '' = trim nothing)
    ARGV[5 + i] per entry i to ack: stream_id
  Output: {0, acked, trimmed, lock_held (1/0: still held)}   {-12, field} bad argument
]]
--- @include "includes/common"

local ttl_ms = parse_uint(ARGV[3], HOLD_TTL_S_MAX * 1000)  -- longer than a day: a unit mix-up
if not ttl_ms then return {E_BAD_ARGUMENT, 'ttl_ms'} end

local function stream_id_less(a, b)
  local am, as = string.match(a, '^(%d+)-(%d+)$')
  local bm, bs = string.match(b, '^(%d+)-(%d+)$')
  am, as, bm, bs = tonumber(am), tonumber(as), tonumber(bm), tonumber(bs)
  if am ~= bm then return am < bm end
  return as < bs
end

local committed = ARGV[4]
if committed ~= '' and not string.match(committed, '^%d+%-%d+$') then
  return {E_BAD_ARGUMENT, 'committed'}
end

local acked = 0
for i = 5, #ARGV, 500 do  -- XACK in slices: unpack has a stack limit
  local ids = {}
  for j = i, math.min(i + 499, #ARGV) do ids[#ids + 1] = ARGV[j] end
  acked = acked + redis.call('XACK', KEYS[1], ARGV[1], unpack(ids))
end

local trimmed = 0
if committed ~= '' then
  local minid = committed
  local pending = redis.call('XPENDING', KEYS[1], ARGV[1])
  if tonumber(pending[1]) > 0 and stream_id_less(pending[2], minid) then minid = pending[2] end
  trimmed = redis.call('XTRIM', KEYS[1], 'MINID', minid)
end

local held = 0
if redis.call('GET', KEYS[2]) == ARGV[2] then
  held = 1
  if ttl_ms == 0 then
    redis.call('DEL', KEYS[2])
  else
    redis.call('PEXPIRE', KEYS[2], ttl_ms)
  end
end
return {E_OK, acked, trimmed, held}
