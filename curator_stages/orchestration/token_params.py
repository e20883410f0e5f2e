"""The token-count parameters that flows share: on or off, and which BPE encoding."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, ValidationInfo, field_validator


class TokenCountParams(BaseModel):
    """Mixed into a flow's parameters: ``count_tokens`` and ``token_encoding``, checked before
    any work starts (an encoding whose data is not installed is refused, naming the fix)."""

    count_tokens: bool = Field(False, description="Count tokens (offline BPE): tokens read and "
                               "written in the summary and report, a tokens column in the output")
    token_encoding: Literal["cl100k_base", "o200k_base"] = Field(
        "cl100k_base", description="BPE encoding of count_tokens (o200k_base needs the "
        "bpe-openai package)")

    @field_validator("token_encoding")
    @classmethod
    def _encoding_installed(cls, value: str, info: ValidationInfo) -> str:
        if info.data.get("count_tokens"):
            from curator_stages.text.tokens import encoding_problem

            problem = encoding_problem(value)
            if problem:
                raise ValueError(f"{problem} (or set count_tokens to false)")
        return value
