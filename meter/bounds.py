"""Every limit and TTL of the hot path, each with the reason it has that value.

The Lua scripts receive the same numbers (see `LUA_CONSTANTS`), so Python and Lua can
never disagree about a bound.
"""

from typing import Final

CREDITS_MAX: Final = 2**53 - 1  # Lua numbers are doubles: integers are exact up to 2**53.
QUANTITY_MAX: Final = 10**9  # SPEC §4; with cost <= CREDITS_MAX the product is checked in Lua.
PRIORITY_MAX: Final = 100  # SPEC §4: grant priority 0..100.
PRIORITY_DEFAULT: Final = 50  # SPEC §4: lower burns first, default 50.
HOLD_TTL_S_MAX: Final = 86_400  # SPEC §4: a hold lives at most a day without a heartbeat.
HOLD_TTL_S_DEFAULT: Final = 300  # SPEC §7: POST /v1/holds default.
IDEMPOTENCY_TTL_S: Final = 90_000  # SPEC §5 wants >= 24 h; one hour more absorbs clock skew.
IDEMPOTENCY_TTL_S_MIN: Final = 86_400  # Scripts refuse a shorter window: it would break §11.3.
IDEMPOTENCY_TTL_S_MAX: Final = 30 * 86_400  # Guards against a unit mix-up (ms passed as s).
IDEMPOTENCY_KEY_LEN_MAX: Final = 255  # SPEC §4: 1-255 printable ASCII.
CHARGE_RECORD_TTL_S: Final = 90_000  # Refunds of older charges load the record from SQL.
HOLD_RECORD_TTL_S: Final = 7 * 86_400  # A settled hold answers 409 (not 404) for a week.
ACCOUNT_ID_LEN_MAX: Final = 128  # SPEC §4.
# An account may go this far below zero: a debt ~9 000x smaller than CREDITS_MAX keeps
# balance - overdraft - any charge exact in Lua's doubles; larger is a typo, not a policy.
OVERDRAFT_LIMIT_MAX: Final = 10**12
CREDIT_TYPE_LEN_MAX: Final = 32  # SPEC §4.
TOOL_LEN_MAX: Final = 64  # SPEC §4.
ID_LEN_MAX: Final = 64  # Entry, hold and grant ids are UUIDs (36); room for external ids.
METADATA_BYTES_MAX: Final = 4096  # SPEC §4: a JSON object of at most 4 KiB serialized.
DESCRIPTION_LEN_MAX: Final = 1024  # Free text lands in every journal entry: keep it bounded.
SOURCE_LEN_MAX: Final = 32  # purchase, plan, welcome, admin, refund...
REFERENCE_LEN_MAX: Final = 255  # Stripe ids and the like.
GRANTS_PER_WALLET_MAX: Final = 1_000  # Every spend reads all grants of the wallet.
HOLDS_PER_WALLET_MAX: Final = 1_000  # Every spend reads all holds of the wallet.
BATCH_CHARGES_MAX: Final = 256  # One script call blocks Redis; ~256 charges stay under ~3 ms.
CLAWBACK_RECORD_TTL_S: Final = 400 * 86_400  # Disputes open up to ~120 days, refunds later.
BUCKETS_MAX: Final = 16_384  # One bucket per Redis Cluster slot at most.
HYDRATE_ATTEMPTS_MAX: Final = 3  # Load-then-retry; more means the loader is broken.
# Idempotency keys restored from SQL when an account is hydrated (after Redis lost its data):
IDEM_RESTORE_BATCH_MAX: Final = 1_000  # per script call: ~1 ms of Redis time each.
IDEM_RESTORE_MAX: Final = 100_000  # per account, newest first: ~8 MB of markers at most.

# A tool's rate limit per (account, tool) and period: more is no limit at all, likely a typo.
RATE_LIMIT_COUNT_MAX: Final = 1_000_000
RATE_LIMIT_PERIOD_MS_MAX: Final = 3_600_000  # "N/hour", the longest period the catalog names
# An account's own rate limits (per tool, or "*" for all its tools): each is read by every
# charge of the account (they ride on its wallet hash); a few dozen tools is a lot already.
RATE_LIMIT_OVERRIDES_MAX: Final = 32

LUA_CONSTANTS: Final[dict[str, int]] = {
    "CREDITS_MAX": CREDITS_MAX,
    "QUANTITY_MAX": QUANTITY_MAX,
    "PRIORITY_MAX": PRIORITY_MAX,
    "PRIORITY_DEFAULT": PRIORITY_DEFAULT,
    "HOLD_TTL_S_MAX": HOLD_TTL_S_MAX,
    "IDEMPOTENCY_TTL_S_MIN": IDEMPOTENCY_TTL_S_MIN,
    "IDEMPOTENCY_TTL_S_MAX": IDEMPOTENCY_TTL_S_MAX,
    "IDEMPOTENCY_KEY_LEN_MAX": IDEMPOTENCY_KEY_LEN_MAX,
    "CHARGE_RECORD_TTL_S": CHARGE_RECORD_TTL_S,
    "HOLD_RECORD_TTL_S": HOLD_RECORD_TTL_S,
    "ACCOUNT_ID_LEN_MAX": ACCOUNT_ID_LEN_MAX,
    "OVERDRAFT_LIMIT_MAX": OVERDRAFT_LIMIT_MAX,
    "CREDIT_TYPE_LEN_MAX": CREDIT_TYPE_LEN_MAX,
    "TOOL_LEN_MAX": TOOL_LEN_MAX,
    "ID_LEN_MAX": ID_LEN_MAX,
    "METADATA_BYTES_MAX": METADATA_BYTES_MAX,
    "DESCRIPTION_LEN_MAX": DESCRIPTION_LEN_MAX,
    "SOURCE_LEN_MAX": SOURCE_LEN_MAX,
    "REFERENCE_LEN_MAX": REFERENCE_LEN_MAX,
    "GRANTS_PER_WALLET_MAX": GRANTS_PER_WALLET_MAX,
    "HOLDS_PER_WALLET_MAX": HOLDS_PER_WALLET_MAX,
    "BATCH_CHARGES_MAX": BATCH_CHARGES_MAX,
    "CLAWBACK_RECORD_TTL_S": CLAWBACK_RECORD_TTL_S,
    "IDEM_RESTORE_BATCH_MAX": IDEM_RESTORE_BATCH_MAX,
    "RATE_LIMIT_COUNT_MAX": RATE_LIMIT_COUNT_MAX,
    "RATE_LIMIT_PERIOD_MS_MAX": RATE_LIMIT_PERIOD_MS_MAX,
    "RATE_LIMIT_OVERRIDES_MAX": RATE_LIMIT_OVERRIDES_MAX,
}
# Nesting of a metadata object: deeper JSON only serves to exhaust parsers and serializers
# (pydantic refuses to serialize past 255 levels, json past ~1,000).
METADATA_DEPTH_MAX: Final = 32
# A worker's clock may differ from Redis TIME by this much in the scripts that change wallets
# (lua/includes/clock): NTP keeps hosts within milliseconds; 5 s is a broken clock, not drift.
CLOCK_SKEW_MS_MAX: Final = 5_000
