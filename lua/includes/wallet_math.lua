-- Balance = unexpired grant remainders minus debt; available = balance - held.
local function wallet_balance(w)
  local sum = 0
  for _, g in ipairs(w.grants) do
    sum = sum + g.rem
  end
  return sum - w.debt
end

local function wallet_available(w)
  return wallet_balance(w) - w.held
end

-- Records a field write or delete, applied by wallet_save.
local function wallet_set_grant(w, g)
  local f = 'g:' .. g.id
  if g.rem > 0 then
    w.sets[f] = int_str(g.rem) .. '|' .. int_str(g.prio) .. '|' .. int_str(g.exp) .. '|' .. g.cat
    w.dels[f] = nil
  else
    w.dels[f] = true
    w.sets[f] = nil
  end
end

local function wallet_set_debt(w)
  if w.debt > 0 then
    w.sets['d'] = int_str(w.debt)
    w.dels['d'] = nil
  else
    w.dels['d'] = true
    w.sets['d'] = nil
  end
end

local function wallet_save(w)
  local hset = {w.key}
  for f, v in pairs(w.sets) do
    hset[#hset + 1] = f
    hset[#hset + 1] = v
  end
  if #hset > 1 then
    redis.call('HSET', unpack(hset))
  end
  local hdel = {w.key}
  for f, _ in pairs(w.dels) do
    hdel[#hdel + 1] = f
  end
  if #hdel > 1 then
    redis.call('HDEL', unpack(hdel))
  end
  w.sets, w.dels = {}, {}
end

-- Burn order: priority, then soonest expiry (never-expiring last), then oldest id.
local function grant_before(a, b)
  if a.prio ~= b.prio then
    return a.prio < b.prio
  end
  local ae, be = a.exp, b.exp
  if ae == 0 then ae = math.huge end
  if be == 0 then be = math.huge end
  if ae ~= be then
    return ae < be
  end
  return a.id < b.id
end

-- Breakdown text: "<grant id>:<delta>:<remaining after>;..." with the pseudo-grant "debt"
-- whose remaining is minus the debt. The deltas add up to the entry amount.
local function breakdown_str(parts)
  local out = {}
  for i, p in ipairs(parts) do
    out[i] = p.id .. ':' .. int_str(p.delta) .. ':' .. int_str(p.after)
  end
  return table.concat(out, ';')
end

-- Takes amount from the grants in burn order; what they cannot cover becomes debt.
-- The caller has already checked the overdraft limit. Returns the breakdown parts.
local function wallet_burn(w, amount)
  if #w.grants > 1 then
    table.sort(w.grants, grant_before)
  end
  local parts = {}
  local left = amount
  for _, g in ipairs(w.grants) do
    if left == 0 then break end
    if g.rem > 0 then
      local take = math.min(g.rem, left)
      g.rem = g.rem - take
      left = left - take
      wallet_set_grant(w, g)
      parts[#parts + 1] = {id = g.id, delta = -take, after = g.rem, prio = g.prio, exp = g.exp,
        cat = g.cat}
    end
  end
  if left > 0 then
    w.debt = w.debt + left
    wallet_set_debt(w)
    parts[#parts + 1] = {id = 'debt', delta = -left, after = -w.debt, prio = 0, exp = 0, cat = 'd'}
  end
  return parts
end

-- Adds credits: debt is paid off first, the rest goes to grant g (created if new).
-- Returns the breakdown parts.
local function wallet_credit(w, g, amount)
  local parts = {}
  local left = amount
  if w.debt > 0 then
    local pay = math.min(w.debt, left)
    w.debt = w.debt - pay
    left = left - pay
    wallet_set_debt(w)
    parts[#parts + 1] = {id = 'debt', delta = pay, after = -w.debt}
  end
  if left > 0 then
    g.rem = g.rem + left
    if not g.present then
      w.grants[#w.grants + 1] = g
      g.present = true
    end
    wallet_set_grant(w, g)
    parts[#parts + 1] = {id = g.id, delta = left, after = g.rem}
  end
  return parts
end

local function wallet_find_grant(w, id)
  for _, g in ipairs(w.grants) do
    if g.id == id then
      g.present = true
      return g
    end
  end
  return nil
end
