-- Charge record, kept for refunds: "account\31credit_type\31tool\31charged\31refunded\31parts"
-- with parts "<grant id>:<refundable>:<prio>:<exp_ms>:<cat>;..." in burn order.
local function charge_record_write(key, account, credit_type, tool, charged, refunded, parts,
                                   ttl_s)
  local out = {}
  for i, p in ipairs(parts) do
    out[i] = p.id .. ':' .. int_str(p.refundable) .. ':' .. int_str(p.prio) .. ':'
      .. int_str(p.exp) .. ':' .. p.cat
  end
  local value = table.concat({account, credit_type, tool, int_str(charged), int_str(refunded),
    table.concat(out, ';')}, '\31')
  if ttl_s then
    redis.call('SET', key, value, 'EX', ttl_s)
  else
    redis.call('SET', key, value, 'KEEPTTL')
  end
end

local function charge_record_read(key)
  local raw = redis.call('GET', key)
  if not raw then
    return nil
  end
  local f = split(raw, '\31')
  local rec = {account = f[1], credit_type = f[2], tool = f[3], charged = tonumber(f[4]),
    refunded = tonumber(f[5]), parts = {}}
  if f[6] ~= '' then
    for _, item in ipairs(split(f[6], ';')) do
      local a = split(item, ':')
      rec.parts[#rec.parts + 1] = {id = a[1], refundable = tonumber(a[2]), prio = tonumber(a[3]),
        exp = tonumber(a[4]), cat = a[5]}
    end
  end
  return rec
end

-- Burn parts (negative deltas) as refundable record parts.
local function charge_parts(burn_parts)
  local out = {}
  for i, p in ipairs(burn_parts) do
    out[i] = {id = p.id, refundable = -p.delta, prio = p.prio, exp = p.exp, cat = p.cat}
  end
  return out
end
