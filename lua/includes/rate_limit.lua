-- Rate limit per (account, tool): GCRA, the generic cell rate algorithm (as redis-cell): a
-- rate of `count` calls per `period_ms`, all of them at once after a quiet period. The key holds the theoretical arrival time (TAT, ms, fractional):
-- each counted call moves it one interval (period / count) on; a call passes while TAT stays
-- within one period of now. One key per (account, tool), gone when the limit is whole again.
-- The catalog replica's value "cost|credit_type|active|count|period_ms" names the limit.

-- Returns nil and the TAT to store when the call passes, or the refusal reply
-- {E_RATE_LIMITED, tool, limit, retry_after_ms, reset_ms}. Reads only: rate_count stores.
local function rate_check(key, tool, t, now)
  if not t[4] then return nil, nil end
  local count, period_ms = tonumber(t[4]), tonumber(t[5])
  local tat = math.max(tonumber(redis.call('GET', key) or 0), now)
  local next_tat = tat + period_ms / count
  if next_tat - period_ms > now then
    return {E_RATE_LIMITED, tool, count, math.ceil(next_tat - period_ms - now),
      math.ceil(tat - now)}, nil
  end
  return nil, next_tat
end

-- Counts a call that rate_check let pass (next_tat nil: the tool has no limit).
local function rate_count(key, next_tat, now)
  if not next_tat then return end
  redis.call('SET', key, string.format('%.3f', next_tat), 'PX', math.ceil(next_tat - now))
end
