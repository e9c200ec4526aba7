-- Balance events: after its writes, every script that changes a wallet's balance or holds
-- PUBLISHes the wallet's new state on the bucket's events channel (a KEYS entry), which
-- GET /v1/accounts/{id}/events streams. One message per changed wallet per script call (a
-- batched charge call publishes each wallet's last state once); PUBLISH with no subscriber
-- costs about half a microsecond. Message:
--   {"account_id":"..","credit_type":"..","available":n,"held":n,"balance":n,
--    "entry_id":"..","kind":".."}
-- entry_id and kind name the journal entry of the change (a hold's id for hold_* kinds).
-- Built by hand, not with cjson: cjson prints numbers above 1e14 in exponent form, and every
-- string here is validated ([%w_.:@-] only), so nothing needs JSON escaping.
local function balance_event_msg(ctx, balance, held, entry_id, kind)
  return '{"account_id":"' .. ctx.account .. '","credit_type":"' .. ctx.credit_type
    .. '","available":' .. int_str(balance - held) .. ',"held":' .. int_str(held)
    .. ',"balance":' .. int_str(balance) .. ',"entry_id":"' .. entry_id
    .. '","kind":"' .. kind .. '"}'
end

-- ctx = {events, account, credit_type}: the wallet's state after the change.
local function balance_event(ctx, balance, held, entry_id, kind)
  redis.call('PUBLISH', ctx.events, balance_event_msg(ctx, balance, held, entry_id, kind))
end

-- Publishes what wallet_expire changed (noted in w.exp_entry / w.exp_kind), if anything:
-- for a refused request, whose only writes are those expiries, and for the sweep.
local function balance_event_expired(ctx, w)
  if w.exp_entry then
    balance_event(ctx, wallet_balance(w), w.held, w.exp_entry, w.exp_kind)
    w.exp_entry = nil
  end
end

-- Saves a wallet after a refused request: only wallet_expire changed it, published as such.
local function wallet_save_refused(w, ctx)
  wallet_save(w)
  balance_event_expired(ctx, w)
end
