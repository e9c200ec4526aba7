-- Appends one journal entry to the bucket stream. ctx = {journal, account, credit_type, now};
-- fields = flat list of optional name/value pairs (empty values are left out to save memory).
local function journal_add(ctx, id, kind, amount, balance_after, fields)
  local args = {ctx.journal, '*', 'id', id, 'k', kind, 'a', ctx.account, 't', ctx.credit_type,
    'm', int_str(amount), 'b', int_str(balance_after), 'ts', int_str(ctx.now)}
  if fields then
    for i = 1, #fields, 2 do
      local v = fields[i + 1]
      if v ~= nil and v ~= '' then
        args[#args + 1] = fields[i]
        args[#args + 1] = v
      end
    end
  end
  redis.call('XADD', unpack(args))
end

-- Appends a charge's journal entry, packed: its fixed fields in one value (meter.wire
-- CHARGE_PACKED_FIELDS; an XADD of one field instead of ten costs Redis ~0.7 us less per
-- charge), then the optional name/value pairs of fields, empty ones left out. The idempotency
-- key is left out too when it is the entry's id (a charge without its own key): the parser
-- (sync.journal) puts it back, 36 bytes a charge not kept.
local function journal_add_charge(ctx, id, amount, balance_after, tool, quantity, breakdown,
                                  idempotency_key, fields)
  local args = {ctx.journal, '*', 'c', table.concat({id, ctx.account, ctx.credit_type,
    int_str(amount), int_str(balance_after), int_str(ctx.now), tool, quantity, breakdown}, '\31')}
  if idempotency_key ~= id then
    args[#args + 1] = 'ik'
    args[#args + 1] = idempotency_key
  end
  for i = 1, #fields, 2 do
    local v = fields[i + 1]
    if v ~= nil and v ~= '' then
      args[#args + 1] = fields[i]
      args[#args + 1] = v
    end
  end
  redis.call('XADD', unpack(args))
end
