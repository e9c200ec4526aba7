"""An AI app that charges per request with one dependency: a runnable example.

    CREDITMETER_REDIS_URL=redis://127.0.0.1:6379/0 uvicorn examples.ai_app:app --port 8001

(or run it next to `creditmeter up`, with the Redis URL and database it prints). Then:

    curl -X POST localhost:8001/generate -H 'X-Account-Id: user_1' \
         -H 'Content-Type: application/json' -d '{"prompt": "a red fox"}'

Each call costs IMAGE_GEN's price (examples/catalog.toml). With too few credits the answer
is 402 problem+json and nothing is generated; a generation that fails (prompt "fail") is
refunded automatically.
"""

from __future__ import annotations

import asyncio
import hashlib
from typing import Annotated

from fastapi import Depends, FastAPI
from pydantic import BaseModel, Field

from api.deps import charge
from meter.models import ChargeResult

FAKE_GENERATION_S = 0.05  # stands in for a model call


class GenerateIn(BaseModel):
    prompt: str = Field(min_length=1, max_length=2000)


class GenerateOut(BaseModel):
    image_url: str
    charged: int
    balance: int


class GenerationFailed(RuntimeError):
    pass


app = FastAPI(title="example AI app")


async def fake_generate(prompt: str) -> str:
    await asyncio.sleep(FAKE_GENERATION_S)
    if "fail" in prompt:
        raise GenerationFailed("the model gave up")
    return f"https://images.example/{hashlib.sha256(prompt.encode()).hexdigest()[:16]}.png"


@app.post("/generate", response_model=GenerateOut)
async def generate(
    body: GenerateIn, paid: Annotated[ChargeResult, Depends(charge("IMAGE_GEN"))]
) -> GenerateOut:
    url = await fake_generate(body.prompt)
    return GenerateOut(image_url=url, charged=paid.amount, balance=paid.balance)


@app.post("/variation", dependencies=[Depends(charge("IMAGE_GEN", quantity=2))])
async def variation(body: GenerateIn) -> dict[str, str]:
    """The dependency-only form: charged twice the tool's cost, refunded if this raises."""
    return {"image_url": await fake_generate(body.prompt + " (variation)")}
