-- Reads a wallet hash into a table, or nil when the wallet is not loaded (never zero).
-- Fields: o = overdraft limit (always present), d = debt, g:<id> = "rem|prio|exp_ms|cat",
-- h:<hold id> = "amount|exp_ms", s = "1" while the account is suspended (includes/account_status),
-- r = the account's own rate limits (includes/rate_overrides), rt:<tool> = that tool's rate
-- limit state, its GCRA theoretical arrival time in ms (includes/rate_limit),
-- lt / tt = the low-balance / top-up alert thresholds (includes/crossings).
-- exp_ms 0 = never expires; cat p = paid, r = promotional.
local function wallet_load(key)
  local raw = redis.call('HGETALL', key)
  if #raw == 0 then
    return nil
  end
  local w = {key = key, od = 0, debt = 0, held = 0, grants = {}, holds = {}, tats = {},
    sets = {}, dels = {}}
  for i = 1, #raw, 2 do
    local f, v = raw[i], raw[i + 1]
    local p = string.sub(f, 1, 2)
    local rp = string.sub(f, 1, 3)
    if p == 'g:' then
      local a = split(v, '|')
      w.grants[#w.grants + 1] = {id = string.sub(f, 3), rem = tonumber(a[1]),
        prio = tonumber(a[2]), exp = tonumber(a[3]), cat = a[4]}
    elseif p == 'h:' then
      local a = split(v, '|')
      local h = {id = string.sub(f, 3), amount = tonumber(a[1]), exp = tonumber(a[2])}
      w.holds[#w.holds + 1] = h
      w.held = w.held + h.amount
    elseif rp == 'rt:' then
      w.tats[string.sub(f, 4)] = tonumber(v)
    elseif f == 'o' then
      w.od = tonumber(v)
    elseif f == 'd' then
      w.debt = tonumber(v)
    elseif f == 's' then
      w.suspended = v == '1'
    elseif f == 'r' then
      w.rates = v
    elseif f == 'lt' then
      w.low = tonumber(v)
    elseif f == 'tt' then
      w.topup = tonumber(v)
    end
  end
  return w
end
