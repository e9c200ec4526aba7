-- An account's status lives on each of its wallet hashes (field s, written by hydrate from
-- SQL and by account_set), so the wallet a charge or hold already reads decides it: no extra
-- key per call, and it survives Redis data loss as the wallet does. Returns the refusal
-- reply for a suspended account, nil otherwise; called before the script writes anything.
local function account_refusal(w, account)
  if w.suspended then
    return {E_ACCOUNT_SUSPENDED, account}
  end
  return nil
end
