"""Every limit of the durable side, each with the reason it has that value."""

from typing import Final

SQLITE_BUSY_TIMEOUT_S: Final = 30  # A writer waits this long for SQLite's lock before failing.
SQLITE_LOCKED_ATTEMPTS: Final = 8  # Then the whole transaction is retried with backoff.
SQL_POOL_SIZE: Final = 5  # A worker uses one connection at a time; the API a few.
SQL_CONNECT_TIMEOUT_S: Final = 5  # A stopped database fails a flush fast; the next one retries.

FLUSH_BATCH_MAX: Final = 2_000  # Entries per SQL transaction: big enough for COPY to pay off.
FLUSH_JOB_BUDGET_S: Final = 20.0  # A flush job yields after this long; traffic re-triggers it.
FLUSH_WORKERS: Final = 2  # Buckets flushed at once on PostgreSQL: one builds, one waits on SQL.
FLUSH_LOCK_TTL_MS: Final = (
    15_000  # A killed flusher's bucket frees up after this; renewed per batch.
)
FLUSH_TRIGGER_DEBOUNCE_MS: Final = 50  # New entries within this window share one flush job.
FLUSH_SAFETY_INTERVAL_S: Final = 10  # The periodic flush that catches anything a trigger missed.
SWEEP_INTERVAL_S: Final = 5  # Expiry sweep period; scripts enforce expiry anyway, this journals it.
SWEEP_WALLETS_MAX: Final = 1_000  # Due wallets expired per bucket per sweep (bounds one job).
TRIGGER_BLOCK_MS: Final = 1_000  # The trigger blocks on the journals this long, then runs cron.
# On a cluster one XREAD cannot block on journals of several slots: the trigger polls every
# journal's newest id this often (one XREVRANGE per bucket, one pipeline round per master).
TRIGGER_POLL_MS: Final = 100
DEAD_LETTER_ERROR_LEN_MAX: Final = 2_000  # Error text kept per dead letter.
JOB_TIMEOUT_S: Final = 120  # RQ kills a job past this; its entries stay pending and are reclaimed.
FAILED_JOB_TTL_S: Final = 86_400  # Failed jobs stay visible in status for a day.
RECONCILE_DRAIN_SLACK_S: Final = 10  # Reconcile waits a dead flusher's lock TTL plus this.
STRIPE_JOB_RETRIES: Final = (
    8  # Then the event stays failed in status; `stripe replay` re-drives it.
)
# Backoff between attempts: an event that waits for another one (out of order) usually finds
# it within seconds; a SQL or Redis outage gets about half an hour in all.
STRIPE_RETRY_INTERVALS_S: Final = (2, 5, 15, 30, 60, 120, 300, 1_200)
STRIPE_WEBHOOK_TOLERANCE_S: Final = 300  # SPEC §9: a signed timestamp older than this is refused.
STRIPE_ROLLOVER_DELAY_S: Final = 5  # After a period ends, before its unused credits are read.
STRIPE_TIMEOUT_S: Final = 10  # One Stripe API call; a checkout request then answers 502.
STRIPE_SYNC_PAGE: Final = 100  # Events per page when `stripe sync` lists what Stripe sent.
# A flusher cut off by a Redis restart keeps trying to free its bucket this long: else the
# lock, kept in the AOF, holds the bucket back for its whole TTL after Redis is back.
FLUSH_RELEASE_RETRY_S: Final = 5.0
FLUSH_RELEASE_RETRY_DELAY_S_MAX: Final = 0.5
FLUSH_ERROR_LEN_MAX: Final = 300  # The flush error kept in Redis for status: one readable line.
RECONCILE_FLUSH_BUDGET_S: Final = 2.0  # Reconcile flushes a bucket up to a point, not all load.
RECONCILE_LOCK_WAIT_S: Final = 0.05  # Between looks at the cursor while another flusher works.
RECONCILE_WALLET_ATTEMPTS: Final = 5  # A wallet changing under each comparison is skipped.
