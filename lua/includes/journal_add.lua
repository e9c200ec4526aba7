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
