"""What every request and result of the application layer is made of.

A request is a frozen pydantic model with a `kind` literal, so that a job can store it as JSON
and read it back as the same type (`shipyard.jobs` keeps a discriminated union of them). A
result says in one line what happened (`summary()`), which is what a job shows as its outcome.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Request(BaseModel):
    """An ops request: frozen, no extra fields, JSON in and out."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class Result(BaseModel):
    """An ops result: frozen, JSON out; `summary()` is its one line for people."""

    model_config = ConfigDict(frozen=True)

    def summary(self) -> str:
        raise NotImplementedError
