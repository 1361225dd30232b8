"""`checks:` what a service serves, beyond /health: requests the testinfra services suite sends
after each rollout (seed 002's "check every endpoint"), each with the answer it expects."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, model_validator

from .base import Duration, Line, StrictModel, check_json_value

JsonObject = Annotated[dict[Line, Any], AfterValidator(check_json_value)]
UrlPath = Annotated[str, Field(pattern=r"^/[A-Za-z0-9._~!$&()*+,;=:@%/?-]*$", max_length=1024)]


class CheckSpec(StrictModel):
    name: Line = Field(min_length=1, max_length=120, description="What the check shows")
    path: UrlPath = Field(description="URL path on the service's port")
    method: Literal["GET", "POST", "WS"] = Field(
        default="GET", description="GET, POST (body sent as JSON) or WS (one WebSocket exchange)")
    body: JsonObject | None = Field(default=None, description="POST: the JSON body")
    send_hex: str | None = Field(
        default=None, pattern=r"^([0-9a-f]{2}){1,4096}$",
        description="WS: one binary frame to send, as hex (e.g. 16-bit PCM samples)")
    send_text: Line | None = Field(default=None, description="WS: one text frame to send")
    status: int = Field(default=200, ge=100, le=599, description="Expected HTTP status (GET, POST)")
    expect: JsonObject = Field(default_factory=dict,
                               description="Keys and values the JSON answer must contain")
    fields: list[Line] = Field(default_factory=list,
                               description="Keys the JSON answer must have, whatever their value")
    timeout: Duration = Field(default=5.0, gt=0, le=120, description="Time the check may take")
    gate: bool = Field(
        default=False,
        description="Part of the rollout's health gate: a new container passes only once /health "
                    "has held for min_healthy AND this check answers as expected (a model server "
                    "answers /health before its model is loaded; list the model here)")

    @model_validator(mode="after")
    def _shape(self) -> CheckSpec:
        if self.method == "WS":
            if (self.send_hex is None) == (self.send_text is None):
                raise ValueError("a WS check sends exactly one frame: send_hex or send_text")
            if self.body is not None:
                raise ValueError("body is for POST; a WS check uses send_hex or send_text")
        else:
            if self.send_hex is not None or self.send_text is not None:
                raise ValueError("send_hex and send_text are for method: WS")
            if self.body is not None and self.method != "POST":
                raise ValueError("a body needs method: POST")
        return self
