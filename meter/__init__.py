"""creditmeter's hot path: Redis-resident balances changed only by atomic Lua scripts.

from meter import Meter, AsyncMeter, InsufficientCredits
"""

from meter.aclient import AsyncMeter
from meter.api_async import AsyncHold
from meter.api_sync import Hold
from meter.client import Meter
from meter.errors import (
    AccountSuspended,
    AmountOverflow,
    CatalogNotLoaded,
    ChargeNotFound,
    ClockSkew,
    GrantExists,
    HoldNotActive,
    HoldNotFound,
    IdempotencyConflict,
    InsufficientCredits,
    InvalidArgument,
    LimitExceeded,
    MeterError,
    OverRefund,
    RateLimited,
    ToolDisabled,
    UnknownTool,
    WalletNotLoaded,
)
from meter.keys import Keys
from meter.loaders import Loader, NewAccountLoader
from meter.models import Tool

__all__ = [
    "AccountSuspended",
    "AmountOverflow",
    "AsyncHold",
    "AsyncMeter",
    "CatalogNotLoaded",
    "ChargeNotFound",
    "ClockSkew",
    "GrantExists",
    "Hold",
    "HoldNotActive",
    "HoldNotFound",
    "IdempotencyConflict",
    "InsufficientCredits",
    "InvalidArgument",
    "Keys",
    "LimitExceeded",
    "Loader",
    "Meter",
    "MeterError",
    "NewAccountLoader",
    "OverRefund",
    "RateLimited",
    "Tool",
    "ToolDisabled",
    "UnknownTool",
    "WalletNotLoaded",
]
