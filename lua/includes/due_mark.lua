-- Keeps the bucket's due set at the earliest pending expiry of a wallet, so the sweep job
-- finds wallets whose holds or grants expire while nobody touches them.
local function due_mark(due_key, member, exp_ms)
  if exp_ms and exp_ms > 0 then
    redis.call('ZADD', due_key, 'LT', exp_ms, member)
  end
end
