"""Request and response bodies of the HTTP API (SPEC §7).

Requests are strict: integers must be JSON integers ("10", 10.5, 10.0, true and 1e3 are
422), bounds are SPEC §4's, and an unknown field is 422 (no mass assignment). The meter
checks every value again; these models only make the 422 name the failing field early.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, get_args

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from meter import bounds, rate_limits, validate
from meter.errors import InvalidArgument
from meter.times import parse_rfc3339_ms
from sync.thresholds import THRESHOLD_MAX, THRESHOLD_MIN, THRESHOLDS_PER_CHANGE_MAX

DISPLAY_NAME_LEN_MAX = 255  # the tools.display_name column, String(255)

AccountId = Annotated[str, Field(pattern=validate.ACCOUNT_RE.pattern)]
CreditType = Annotated[str, Field(pattern=validate.CREDIT_TYPE_RE.pattern)]
ToolName = Annotated[str, Field(pattern=validate.TOOL_RE.pattern)]
EntityId = Annotated[str, Field(pattern=validate.ID_RE.pattern)]
Credits = Annotated[int, Field(ge=1, le=bounds.CREDITS_MAX)]
Cost = Annotated[int, Field(ge=0, le=bounds.CREDITS_MAX)]


def _rate_limit(text: str) -> str:
    if text:
        try:
            rate_limits.parse(text)
        except InvalidArgument as exc:
            raise ValueError(str(exc)) from None
    return text


# "N/second|minute|hour" per (account, tool) (meter.rate_limits); "" means none.
RateLimitText = Annotated[
    str,
    Field(pattern=r"^$|^[1-9][0-9]{0,9}/(second|minute|hour)$", examples=["60/minute"]),
    AfterValidator(_rate_limit),
]
Quantity = Annotated[int, Field(ge=1, le=bounds.QUANTITY_MAX)]
TtlSeconds = Annotated[int, Field(ge=1, le=bounds.HOLD_TTL_S_MAX)]
Priority = Annotated[int, Field(ge=0, le=bounds.PRIORITY_MAX)]
# Text every SQL backend stores as given (meter.validate.storable): no NUL, no lone
# surrogate (strict str already refuses one: it is not UTF-8). The pattern tells clients
# and schemathesis; the validator names the reason. Lengths are characters (code points),
# as PostgreSQL's varchar(n) counts them.
NO_NUL_PATTERN = r"^[^\x00]*$"


def _storable(value: str) -> str:
    try:
        return validate.storable("text", value)
    except InvalidArgument as exc:  # pydantic names the field; keep only the reason
        raise ValueError(str(exc).partition(": ")[2]) from None


def _text(*, max_length: int, min_length: int | None = None) -> Any:
    return Field(
        json_schema_extra={"pattern": NO_NUL_PATTERN}, min_length=min_length, max_length=max_length
    )


Description = Annotated[
    str, _text(max_length=bounds.DESCRIPTION_LEN_MAX), AfterValidator(_storable)
]
Reason = Annotated[
    str, _text(min_length=1, max_length=bounds.DESCRIPTION_LEN_MAX), AfterValidator(_storable)
]
Reference = Annotated[
    str, _text(min_length=1, max_length=bounds.REFERENCE_LEN_MAX), AfterValidator(_storable)
]
DisplayName = Annotated[  # the tools.display_name column, String(255)
    str, _text(max_length=DISPLAY_NAME_LEN_MAX), AfterValidator(_storable)
]
SearchText = Annotated[str, AfterValidator(_storable)]
Category = Literal["paid", "promotional"]


def _metadata(value: Any) -> Any:
    """Depth, storable keys and strings, serialized size: checked before pydantic reads the
    keys, whose errors would carry an unencodable key into the answer."""
    if isinstance(value, dict):
        validate.metadata(value)
    return value


METADATA_VALUE_REF = "#/components/schemas/MetadataValue"  # api/openapi_doc.py defines it
Metadata = Annotated[
    dict[str, Any],
    BeforeValidator(_metadata),
    WithJsonSchema(
        {
            "type": "object",
            "description": f"a JSON object: at most {bounds.METADATA_BYTES_MAX} bytes "
            f"serialized, {bounds.METADATA_DEPTH_MAX} levels deep, no NUL in keys or strings",
            "patternProperties": {NO_NUL_PATTERN: {"$ref": METADATA_VALUE_REF}},
            "additionalProperties": False,
        }
    ),
]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    @model_validator(mode="before")
    @classmethod
    def _storable_names(cls, data: Any) -> Any:
        """An unknown field is 422 naming it: a name that is not valid Unicode (a lone
        surrogate) could not be written into that answer, so it is refused here first."""
        if isinstance(data, dict):
            for name in data:
                if isinstance(name, str) and validate.SURROGATE_RE.search(name):
                    raise ValueError("a field name is not valid Unicode (lone surrogate)")
        return data


# --- tools ---------------------------------------------------------------------------


class ToolPut(Strict):
    display_name: DisplayName
    description: Description = ""
    cost: Cost
    credit_type: CreditType
    active: bool = True
    rate_limit: RateLimitText = ""  # PUT replaces the tool: left out, it has no limit


def _optional_not_null() -> Any:
    """A field that may be left out but never sent as null: its default None marks it unsent
    (model_dump(exclude_unset=True) drops it) while the schema keeps the type non-nullable."""
    return Field(default=None)


class ToolPatch(Strict):
    """Only the fields sent change; none of them can be set to null (the schema says so)."""

    display_name: DisplayName = _optional_not_null()
    description: Description = _optional_not_null()
    cost: Cost = _optional_not_null()
    active: bool = _optional_not_null()
    rate_limit: RateLimitText = _optional_not_null()  # "" removes the limit


class ToolOut(BaseModel):
    name: str
    display_name: str
    description: str
    cost: int
    credit_type: str
    active: bool
    rate_limit: str  # "" when the tool has none


class ToolList(BaseModel):
    data: list[ToolOut]


# --- charges, holds, refunds --------------------------------------------------------


class ChargeIn(Strict):
    account_id: AccountId
    tool: ToolName
    quantity: Quantity = 1
    description: Description | None = None
    metadata: Metadata | None = None
    # true: answer whether this charge would succeed now and change nothing (200 ChargeCheckOut)
    dry_run: bool = False


class ChargeOut(BaseModel):
    id: str
    account_id: str
    tool: str
    credit_type: str
    amount: int
    balance: int
    available: int


class ChargeCheckOut(BaseModel):
    """A dry run's answer (Autumn's `check`): the price and the wallet as it is now."""

    would_succeed: bool
    account_id: str
    tool: str
    credit_type: str
    amount: int = Field(description="what the charge would take")
    balance: int = Field(description="the wallet's balance now (expired grants left out)")
    available: int = Field(
        description="balance - held now; the charge needs available - amount >= -overdraft_limit"
    )
    reason: str | None = Field(
        None, description="when would_succeed is false: the problem slug the charge would get"
    )


def _present(*names: str, kind: str = "integer") -> dict[str, Any]:
    """JSON Schema (draft 4): each of `names` is sent and not null."""
    return {"required": list(names), "properties": {n: {"type": kind} for n in names}}


def _absent(*names: str) -> dict[str, Any]:
    """JSON Schema (draft 4): none of `names` is sent, or each is null."""
    return {"properties": {n: {"enum": [None]} for n in names}}


class HoldIn(Strict):
    model_config = ConfigDict(json_schema_extra={"not": _present("quantity", "amount")})

    account_id: AccountId
    tool: ToolName
    quantity: Quantity | None = None
    amount: Credits | None = None
    ttl_seconds: TtlSeconds = bounds.HOLD_TTL_S_DEFAULT

    @model_validator(mode="after")
    def _one_size(self) -> HoldIn:
        if self.quantity is not None and self.amount is not None:
            raise ValueError("give quantity (priced by the tool) or amount, not both")
        return self


class HoldOut(BaseModel):
    id: str
    account_id: str
    tool: str
    amount: int
    credit_type: str
    expires_at: str
    balance: int
    available: int


class SettleIn(Strict):
    amount: Annotated[int, Field(ge=0, le=bounds.CREDITS_MAX)] | None = None
    description: Description | None = None
    metadata: Metadata | None = None


class SettleOut(BaseModel):
    entry_id: str
    hold_id: str
    charged: int
    released: int
    balance: int
    available: int


class ReleaseOut(BaseModel):
    hold_id: str
    released: int
    balance: int
    available: int


class ExtendIn(Strict):
    ttl_seconds: TtlSeconds


class ExtendOut(BaseModel):
    hold_id: str
    expires_at: str


class RefundIn(Strict):
    charge_id: EntityId
    amount: Credits | None = None
    reason: Description | None = None
    metadata: Metadata | None = None


class RefundOut(BaseModel):
    id: str
    charge_id: str
    amount: int
    balance: int
    available: int
    refunded_total: int


# --- accounts -----------------------------------------------------------------------


class GrantIn(Strict):
    credit_type: CreditType
    amount: Credits
    category: Category
    priority: Priority = bounds.PRIORITY_DEFAULT
    expires_at: Annotated[str, Field(json_schema_extra={"format": "date-time"})] | None = None
    reason: Description | None = None
    reference_id: Reference | None = None
    metadata: Metadata | None = None

    @field_validator("expires_at")
    @classmethod
    def _timestamp(cls, v: str | None) -> str | None:
        if v is not None:
            parse_rfc3339_ms(v)
        return v


class GrantOut(BaseModel):
    id: str
    grant_id: str
    account_id: str
    credit_type: str
    amount: int
    balance: int
    available: int


class AdjustmentIn(Strict):
    credit_type: CreditType
    amount: Annotated[
        int,
        Field(
            ge=-bounds.CREDITS_MAX,
            le=bounds.CREDITS_MAX,
            json_schema_extra={"not": {"enum": [0]}},
        ),
    ]
    reason: Reason
    metadata: Metadata | None = None

    @field_validator("amount")
    @classmethod
    def _not_zero(cls, v: int) -> int:
        if v == 0:
            raise ValueError("must not be 0")
        return v


class AdjustmentOut(BaseModel):
    id: str
    account_id: str
    credit_type: str
    amount: int
    balance: int
    available: int


class WalletOut(BaseModel):
    credit_type: str
    available: int
    held: int
    balance: int


class GrantInfoOut(BaseModel):
    id: str
    credit_type: str
    remaining: int
    category: str
    priority: int
    expires_at: str | None


class BalanceOut(BaseModel):
    account_id: str
    balances: list[WalletOut]
    grants: list[GrantInfoOut]


class EntryOut(BaseModel):
    id: str
    account_id: str
    credit_type: str
    kind: str
    amount: int
    balance_after: int
    tool: str | None
    quantity: int | None
    hold_id: str | None
    idempotency_key: str | None
    reference_id: str | None
    description: str | None
    metadata: dict[str, Any] | None
    created_at: str


class EntryPage(BaseModel):
    data: list[EntryOut]
    next_cursor: str | None


# --- account settings --------------------------------------------------------------------

AccountStatus = Literal["active", "suspended"]
EMAIL_LEN_MAX = 254  # RFC 5321: the longest address a mail server (and Stripe) takes
# One @, a dot in the domain, no spaces or NUL: the shape, not deliverability (Stripe and
# the mail server judge that); every backend stores what passes.
EMAIL_PATTERN = r"^[^@\s\x00]+@[^@\s\x00]+\.[^@\s\x00]+$"
Email = Annotated[str, Field(min_length=3, max_length=EMAIL_LEN_MAX, pattern=EMAIL_PATTERN)]
OverdraftLimit = Annotated[int, Field(ge=0, le=bounds.OVERDRAFT_LIMIT_MAX)]


def _rate_limit_override(text: str) -> str:
    try:
        rate_limits.parse(text, zero_blocks=True)
    except InvalidArgument as exc:
        raise ValueError(str(exc)) from None
    return text


# An account's own limit for a tool, or for all its tools ("*"): "0/minute" blocks the tool.
RateLimitTool = Annotated[
    str, Field(pattern=rf"^(\{rate_limits.ALL_TOOLS}|{validate.TOOL_RE.pattern[1:-1]})$")
]
RateLimitOverride = Annotated[
    str,
    Field(pattern=r"^(0|[1-9][0-9]{0,9})/(second|minute|hour)$", examples=["600/minute"]),
    AfterValidator(_rate_limit_override),
]
RateLimitChanges = Annotated[
    dict[RateLimitTool, RateLimitOverride | None],
    Field(max_length=bounds.RATE_LIMIT_OVERRIDES_MAX, examples=[{"IMAGE_GEN": "600/minute"}]),
]


# The default of a field that refuses null: left out, it is not in model_fields_set (typed
# Any so the field keeps its own type; pydantic never validates a default).
NOT_GIVEN: Any = None


Threshold = Annotated[int, Field(ge=THRESHOLD_MIN, le=THRESHOLD_MAX)]
# credit type -> its balance.low threshold; null removes it (sync/thresholds.py).
LowBalanceThresholds = Annotated[
    dict[CreditType, Threshold | None],
    Field(max_length=THRESHOLDS_PER_CHANGE_MAX, examples=[{"credits": 100}]),
]


class AccountPatchIn(Strict):
    """Only the fields given change; `email` or `metadata` null clears it. status and
    overdraft_limit are never null (None below means "not given"). rate_limits changes the
    tools it names: a limit replaces the catalog's for this account, null gives the
    catalog's back; "*" is every tool without its own. low_balance_thresholds changes the
    credit types it names: a number sets the balance.low threshold (the webhook fires when
    available drops below it), null removes it."""

    status: AccountStatus = NOT_GIVEN
    overdraft_limit: OverdraftLimit = NOT_GIVEN
    email: Email | None = None
    metadata: Metadata | None = None
    rate_limits: RateLimitChanges = NOT_GIVEN
    low_balance_thresholds: LowBalanceThresholds = NOT_GIVEN


class AccountOut(BaseModel):
    id: str
    status: AccountStatus
    overdraft_limit: int
    email: str | None
    metadata: dict[str, Any] | None
    created_at: str
    rate_limits: dict[str, str]  # the account's own, beating the catalog's ({}: none)
    low_balance_thresholds: dict[str, int]  # credit type -> balance.low threshold


class TokenIn(Strict):
    ttl_seconds: Annotated[int, Field(ge=1)] | None = None


class TokenOut(BaseModel):
    token: str
    account_id: str
    expires_at: str


# --- purchases ---------------------------------------------------------------------------

CUSTOM = ("credit_type", "credits")
Url = Annotated[str, Field(min_length=1, max_length=2048, pattern=r"^https?://\S+$")]
PackId = Annotated[str, Field(pattern=r"^[a-z0-9-]{1,64}$")]


class CheckoutIn(Strict):
    """A pack, a custom amount (credit_type and credits) or a plan: exactly one."""

    model_config = ConfigDict(
        json_schema_extra={
            "oneOf": [
                {"allOf": [_present("pack_id", kind="string"), _absent(*CUSTOM, "plan_id")]},
                {
                    "allOf": [
                        _present("credit_type", kind="string"),
                        _present("credits"),
                        _absent("pack_id", "plan_id"),
                    ]
                },
                {"allOf": [_present("plan_id", kind="string"), _absent(*CUSTOM, "pack_id")]},
            ]
        }
    )

    account_id: AccountId
    pack_id: PackId | None = None
    credit_type: CreditType | None = None
    credits: Credits | None = None
    plan_id: PackId | None = None
    success_url: Url
    cancel_url: Url

    @model_validator(mode="after")
    def one_thing_bought(self) -> CheckoutIn:
        custom = self.credit_type is not None or self.credits is not None
        if custom and (self.credit_type is None or self.credits is None):
            raise ValueError("a custom amount needs both credit_type and credits")
        if sum((self.pack_id is not None, custom, self.plan_id is not None)) != 1:
            raise ValueError("give exactly one of pack_id, (credit_type, credits), plan_id")
        return self


class CheckoutOut(BaseModel):
    id: str
    url: str
    amount: int | None
    currency: str | None
    mode: str


class WebhookOut(BaseModel):
    received: bool
    duplicate: bool


# --- outgoing webhooks -----------------------------------------------------------------------

# The same names as sync.webhooks.EVENT_TYPES (tests/api/test_webhook_routes.py checks it).
WebhookEventType = Literal[
    "balance.low",
    "balance.depleted",
    "grant.expiring",
    "purchase.completed",
    "refund.applied",
    "hold.expired",
    "topup.failed",
]
WebhookStatus = Literal["pending", "succeeded", "failed"]
WebhookId = Annotated[str, Field(min_length=1, max_length=64)]


class WebhookEndpointIn(Strict):
    url: Url
    events: list[WebhookEventType] = Field(min_length=1, max_length=len(get_args(WebhookEventType)))


class WebhookEndpointOut(BaseModel):
    id: str
    url: str
    events: list[str]
    active: bool
    created_at: str


class WebhookEndpointCreated(WebhookEndpointOut):
    secret: str = Field(description="whsec_<base64>: shown in this answer only")


class WebhookEndpointList(BaseModel):
    data: list[WebhookEndpointOut]


class WebhookDeliveryOut(BaseModel):
    id: str
    event_id: str
    event_type: str
    account_id: str | None
    endpoint_id: str
    url: str
    status: str
    attempts: int
    last_response_code: int | None
    last_error: str | None
    next_attempt_at: str | None
    delivered_at: str | None
    created_at: str


class WebhookDeliveryList(BaseModel):
    data: list[WebhookDeliveryOut]
