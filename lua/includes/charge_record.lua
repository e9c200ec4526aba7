-- Charge record: one key per charge, serving both its refunds and its idempotency replays.
--   "<fingerprint>\31<entry id>\31account\31credit_type\31tool\31charged\31refunded\31balance
--    \31available\31held\31parts", parts "<grant id>:<delta>:<after>:<prio>:<exp_ms>:<cat>;..."
-- in burn order: the charge's reply (a replay answers it) and what refunds need. Entry id ''
-- when the record is at the charge's own key (a charge without its own idempotency key);
-- with one, the record is at the idempotency key and the charge key holds a pointer,
-- "\29account\31credit_type\31idempotency key", that refunds follow (meter.ops). A part's
-- refundable is not stored: refunds take the parts last first, so the refunded total says it.
-- The plain record serves refunds only: "account\31credit_type\31tool\31charged\31refunded
-- \31parts", parts "<grant id>:<refundable>:<prio>:<exp_ms>:<cat>;...". Settle writes it (its
-- replays answer the settle's own idempotency record), so does the SQL restore (meter.ops),
-- and charges did before the full record: theirs, alive for 25 h after an upgrade, sit beside
-- an idempotency record (includes/idem) and keep working.
local CHARGE_RECORD_FIELDS = 11
local CHARGE_RECORD_FIELDS_PLAIN = 6
local CHARGE_POINTER = '\29'

local function charge_record_value(r)
  local out = {}
  for i, p in ipairs(r.parts) do
    out[i] = p.id .. ':' .. int_str(p.delta) .. ':' .. int_str(p.after) .. ':' .. int_str(p.prio)
      .. ':' .. int_str(p.exp) .. ':' .. p.cat
  end
  return table.concat({r.fingerprint, r.entry_id, r.account, r.credit_type, r.tool,
    int_str(r.charged), int_str(r.refunded), int_str(r.balance), int_str(r.available),
    int_str(r.held), table.concat(out, ';')}, '\31')
end

-- A new charge's record; r as charge_record_value reads it. ttl_s = the longer of the
-- idempotency window and CHARGE_RECORD_TTL_S: the one record serves both.
local function charge_record_write(key, r, ttl_s)
  redis.call('SET', key, charge_record_value(r), 'EX', ttl_s)
end

local function charge_pointer_write(key, account, credit_type, idempotency_key)
  redis.call('SET', key, CHARGE_POINTER .. account .. '\31' .. credit_type .. '\31'
    .. idempotency_key, 'EX', CHARGE_RECORD_TTL_S)
end

-- The parts' refundable amounts: refunds took the refunded total from the last part first.
local function charge_refundable(parts, refunded)
  local left = refunded
  for i = #parts, 1, -1 do
    local p = parts[i]
    local taken = math.min(-p.delta, left)
    p.refundable = -p.delta - taken
    left = left - taken
  end
end

-- A record of either format from its fields -> rec ({plain = true} for a plain record),
-- or nil when the value is no charge record (a pointer, an idempotency record).
local function charge_record_parse(f)
  if #f == CHARGE_RECORD_FIELDS then
    local rec = {fingerprint = f[1], entry_id = f[2], account = f[3], credit_type = f[4],
      tool = f[5], charged = tonumber(f[6]), refunded = tonumber(f[7]), balance = tonumber(f[8]),
      available = tonumber(f[9]), held = tonumber(f[10]), parts = {}}
    if f[11] ~= '' then
      for _, item in ipairs(split(f[11], ';')) do
        local a = split(item, ':')
        rec.parts[#rec.parts + 1] = {id = a[1], delta = tonumber(a[2]), after = tonumber(a[3]),
          prio = tonumber(a[4]), exp = tonumber(a[5]), cat = a[6]}
      end
    end
    charge_refundable(rec.parts, rec.refunded)
    return rec
  end
  if #f ~= CHARGE_RECORD_FIELDS_PLAIN or string.sub(f[1], 1, 1) == CHARGE_POINTER then
    return nil
  end
  local rec = {plain = true, account = f[1], credit_type = f[2], tool = f[3],
    charged = tonumber(f[4]), refunded = tonumber(f[5]), parts = {}}
  if f[6] ~= '' then
    for _, item in ipairs(split(f[6], ';')) do
      local a = split(item, ':')
      rec.parts[#rec.parts + 1] = {id = a[1], refundable = tonumber(a[2]), prio = tonumber(a[3]),
        exp = tonumber(a[4]), cat = a[5]}
    end
  end
  return rec
end

local function charge_record_read(key)
  local raw = redis.call('GET', key)
  if not raw then
    return nil
  end
  return charge_record_parse(split(raw, '\31'))
end

local function charge_record_plain_value(rec)
  local out = {}
  for i, p in ipairs(rec.parts) do
    out[i] = p.id .. ':' .. int_str(p.refundable) .. ':' .. int_str(p.prio) .. ':'
      .. int_str(p.exp) .. ':' .. p.cat
  end
  return table.concat({rec.account, rec.credit_type, rec.tool, int_str(rec.charged),
    int_str(rec.refunded), table.concat(out, ';')}, '\31')
end

-- A settled hold's plain record; rec = {account, credit_type, tool, charged, refunded, parts}.
local function charge_record_plain_write(key, rec)
  redis.call('SET', key, charge_record_plain_value(rec), 'EX', CHARGE_RECORD_TTL_S)
end

-- Saves a refund's new refunded total in the record's own format, its TTL kept. The parts'
-- refundable amounts must be the refund's (a full record derives them from the total).
local function charge_record_refunded(key, rec, refunded)
  local after = {}
  for name, v in pairs(rec) do after[name] = v end
  after.refunded = refunded
  local value = rec.plain and charge_record_plain_value(after) or charge_record_value(after)
  redis.call('SET', key, value, 'KEEPTTL')
end

-- Burn parts (negative deltas) as refundable record parts.
local function charge_parts(burn_parts)
  local out = {}
  for i, p in ipairs(burn_parts) do
    out[i] = {id = p.id, refundable = -p.delta, prio = p.prio, exp = p.exp, cat = p.cat}
  end
  return out
end
