-- Rate limit per (account, tool): GCRA, the generic cell rate algorithm (as redis-cell): a
-- rate of `count` calls per `period_ms`, all of them at once after a quiet period. The state
-- is the theoretical arrival time (TAT, ms, fractional): each counted call moves it one
-- interval (period / count) on; a call passes while TAT stays within one period of now. It is
-- a field rt:<tool> of the wallet the tool charges (includes/wallet_load), read and saved with
-- it: no key of its own to pass and look up per charge. A tool charges one credit type, so
-- (account, tool) has one field; a field whose TAT has passed means a whole limit, the same
-- as none, and a charge that succeeds drops it (rate_prune) so the hash keeps one field per busy tool.
-- Redis losing the wallet loses its fields too: hydrate restores it from SQL without them.
-- The limit in force: the account's own for the tool, else its own for all its tools ('*'),
-- both read from the wallet the charge loads anyway (includes/rate_overrides), else the
-- catalog's (replica value "cost|credit_type|active|count|period_ms").

-- count, period_ms of the limit in force, or nil when the call has none.
local function rate_limit_of(w, tool, t)
  if w.rates then
    local all
    for _, item in ipairs(split(w.rates, ';')) do
      local f = split(item, ':')
      if f[1] == tool then return tonumber(f[2]), tonumber(f[3]) end
      if f[1] == '*' then all = f end
    end
    if all then return tonumber(all[2]), tonumber(all[3]) end
  end
  if t[4] then return tonumber(t[4]), tonumber(t[5]) end
  return nil
end

-- Returns the refusal reply {E_RATE_LIMITED, tool, limit, retry_after_ms, reset_ms}, or nil
-- and the limit's state r (nil: no limit) for rate_count and rate_reply. Reads only.
-- A limit of 0 refuses every call; its client may ask again in a period. A TAT left by an
-- earlier, slower limit (the account's own was raised) counts as one period of the limit in
-- force at most, so a raised limit lets calls through within one of its intervals.
local function rate_check(tool, w, t, now)
  local count, period_ms = rate_limit_of(w, tool, t)
  if not count then return nil, nil end
  if count == 0 then return {E_RATE_LIMITED, tool, 0, period_ms, period_ms}, nil end
  local tat = math.min(math.max(w.tats[tool] or 0, now), now + period_ms)
  local next_tat = tat + period_ms / count
  if next_tat - period_ms > now then
    return {E_RATE_LIMITED, tool, count, math.ceil(next_tat - period_ms - now),
      math.ceil(tat - now)}, nil
  end
  return nil, {count = count, period_ms = period_ms, tat = tat, next_tat = next_tat, now = now}
end

-- Counts a call that rate_check let pass (r nil: the call has no limit), in the wallet's
-- fields that wallet_save writes. Rounded to 0.001 ms as stored, so a later charge of this
-- call reads what a later call would.
local function rate_count(w, tool, r)
  if not r then return end
  local f, tat = 'rt:' .. tool, string.format('%.3f', r.next_tat)
  w.tats[tool] = tonumber(tat)
  w.sets[f] = tat
  w.dels[f] = nil
end

-- Drops the fields whose TAT has passed (a whole limit, as if absent): called by a charge
-- that succeeds, which saves its wallet anyway; a refusal or a dry run writes nothing.
local function rate_prune(w, now)
  for tool, tat in pairs(w.tats) do
    if tat <= now then
      w.tats[tool] = nil
      w.dels['rt:' .. tool] = true
      w.sets['rt:' .. tool] = nil
    end
  end
end

-- Appends the limit's fields to a charge or dry-run reply: limit, remaining (calls that
-- would pass now), reset_ms (until the whole limit is back); none without a limit, so a call
-- of a tool without one reads three fields fewer.
-- counted: the state after this call counted (a charge), else before it (a dry run).
local function rate_reply(reply, r, counted)
  if not r then return reply end
  local n = #reply
  local tat = counted and r.next_tat or r.tat
  -- 1e-6: the stored TAT is rounded to 0.001 ms; a whole interval must not read as 0.999...
  local remaining = math.floor((r.now + r.period_ms - tat) * r.count / r.period_ms + 1e-6)
  reply[n + 1] = r.count
  reply[n + 2] = math.max(0, math.min(r.count, remaining))
  reply[n + 3] = math.ceil(tat - r.now)
  return reply
end
