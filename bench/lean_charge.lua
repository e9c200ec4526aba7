-- The lean ceiling's one charge (bench/lean_ceiling.py): the work any charge must do and
-- nothing else. A yardstick, not the product: no catalog, no idempotency check, no events.
-- KEYS: wallet hash, journal stream, charge record. ARGV: entry id, cost, record TTL (s).
-- Returns the balance after the charge, or -1 when it would go below zero.
local cost = tonumber(ARGV[2])
local balance = tonumber(redis.call('HGET', KEYS[1], 'balance') or '0')
if balance < cost then
  return -1
end
local left = redis.call('HINCRBY', KEYS[1], 'balance', -cost)
redis.call('HINCRBY', KEYS[1], 'spent', cost)
redis.call('XADD', KEYS[2], '*', 'e', ARGV[1] .. ' ' .. ARGV[2])
redis.call('SET', KEYS[3], ARGV[2], 'EX', ARGV[3])
return left
