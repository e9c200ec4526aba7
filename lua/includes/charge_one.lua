-- Queues a balance event (channel, message) for charge_flush: published after the writes.
local function charge_event(cache, ctx, balance, held, entry_id, kind)
  local ev = cache.events
  ev[#ev + 1] = ctx.events
  ev[#ev + 1] = balance_event_msg(ctx, balance, held, entry_id, kind)
end

-- One charge: tool cost x quantity taken from the wallet atomically, or nothing.
-- k = {wallet, idem, catalog, journal, record, events, rate}; a = {entry_id, account, credit_type,
-- tool, quantity, fingerprint, idempotency_key, description, metadata, dry_run}; cache = {tools = {},
-- wallets = {}, events = {}} shared by the charges of one call: each tool and wallet is read
-- once, and the caller saves every cached wallet once at the end, then publishes the queued
-- balance events, one per charge (charge_flush). Returns the reply. A dry run (dry_run '1')
-- passes the same checks, then answers charge_dry's reply and writes nothing: no idempotency
-- record is read or stored (a dry run has nothing to replay) and its wallet is left as read.
local function charge_one(k, now, idem_ttl_s, a, cache)
  local bad = check_common(now, a.account, a.credit_type, a.fingerprint, a.idempotency_key,
    idem_ttl_s)
  if bad then return bad end
  if not valid_id(a.entry_id) then return {E_BAD_ARGUMENT, 'entry_id'} end
  if not valid_tool(a.tool) then return {E_BAD_ARGUMENT, 'tool'} end
  local qty = parse_uint(a.quantity, QUANTITY_MAX)
  if not qty or qty < 1 then return {E_BAD_ARGUMENT, 'quantity'} end
  if not valid_text(a.description, DESCRIPTION_LEN_MAX) then
    return {E_BAD_ARGUMENT, 'description'}
  end
  if not valid_metadata(a.metadata) then return {E_BAD_ARGUMENT, 'metadata'} end
  if a.dry_run ~= '0' and a.dry_run ~= '1' then return {E_BAD_ARGUMENT, 'dry_run'} end
  local dry = a.dry_run == '1'

  local replay = not dry and idem_check(k.idem, a.fingerprint)
  if replay then return replay end
  local cost, err, tool_fields = tool_lookup(k.catalog, a.tool, a.credit_type, cache.tools)
  if err then return err end
  local limited, rate_tat = rate_check(k.rate, a.tool, tool_fields, tonumber(now))
  if limited then return limited end
  local amount = cost * qty
  if amount > CREDITS_MAX then return {E_AMOUNT_OVERFLOW, string.format('%.0f', amount)} end
  local w = cache.wallets[k.wallet]
  if not w then
    w = wallet_load(k.wallet)
    if not w then return dry and {E_NOT_LOADED, amount} or {E_NOT_LOADED} end
    cache.wallets[k.wallet] = w
  end
  local refused = account_refusal(w, a.account)
  if refused then return refused end
  if dry then return charge_dry(w, amount, tonumber(now)) end

  local ctx = {journal = k.journal, events = k.events, account = a.account,
    credit_type = a.credit_type, now = tonumber(now)}
  wallet_expire(w, ctx)
  local available = wallet_available(w)
  if available - amount < -w.od then
    if w.exp_entry then  -- refused, but expiries changed the wallet (saved by charge_flush)
      charge_event(cache, ctx, wallet_balance(w), w.held, w.exp_entry, w.exp_kind)
      w.exp_entry = nil
    end
    return {E_INSUFFICIENT, wallet_balance(w), available, amount}
  end
  local parts = wallet_burn(w, amount)
  local balance = wallet_balance(w)
  local breakdown = breakdown_str(parts)
  journal_add(ctx, a.entry_id, 'charge', -amount, balance, {'tool', a.tool, 'q', a.quantity,
    'g', breakdown, 'ik', a.idempotency_key, 'desc', a.description, 'meta', a.metadata,
    'al', crossing_flags(w, available, available - amount)})
  charge_record_write(k.record, a.account, a.credit_type, a.tool, amount, 0, charge_parts(parts),
    CHARGE_RECORD_TTL_S)
  charge_event(cache, ctx, balance, w.held, a.entry_id, 'charge')
  w.exp_entry = nil  -- this event shows the expiries too
  rate_count(k.rate, rate_tat, ctx.now)
  return idem_store(k.idem, a.fingerprint, idem_ttl_s,
    {E_OK, a.entry_id, amount, balance, available - amount, w.held, breakdown})
end

-- Writes back every wallet the charges of this call changed, then publishes their events.
local function charge_flush(cache)
  for _, w in pairs(cache.wallets) do
    wallet_save(w)
  end
  local ev = cache.events
  for i = 1, #ev, 2 do
    redis.call('PUBLISH', ev[i], ev[i + 1])
  end
end
