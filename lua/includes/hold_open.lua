-- Checks a hold record against the request; returns the record or nil and an error reply.
-- Hold record hash: a = account, t = credit type, tool, m = amount, x = expires_ms,
-- s = active | settled | released | expired.
local function hold_record(key, account, credit_type)
  local raw = redis.call('HGETALL', key)
  if #raw == 0 then
    return nil, {E_HOLD_NOT_FOUND}
  end
  local rec = {}
  for i = 1, #raw, 2 do
    rec[raw[i]] = raw[i + 1]
  end
  if rec.a ~= account or rec.t ~= credit_type then
    return nil, {E_BAD_ARGUMENT, 'hold_id'}
  end
  if rec.s ~= 'active' then
    return nil, {E_HOLD_NOT_ACTIVE, rec.s}
  end
  return rec, nil
end

-- After wallet_expire: the wallet's entry for the hold, or nil when it has just expired
-- (then the record says so too).
local function hold_in_wallet(w, record_key, hold_id)
  for _, h in ipairs(w.holds) do
    if h.id == hold_id then
      return h
    end
  end
  redis.call('HSET', record_key, 's', 'expired')
  return nil
end

local function hold_remove(w, h)
  w.held = w.held - h.amount
  w.dels['h:' .. h.id] = true
  for i, x in ipairs(w.holds) do
    if x.id == h.id then
      table.remove(w.holds, i)
      return
    end
  end
end
