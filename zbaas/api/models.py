"""Request and response bodies shared by the routers."""

from __future__ import annotations

import unicodedata
from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import AfterValidator, BaseModel, ConfigDict, EmailStr, Field


def _plain_text(value: str) -> str:
    """Reject control and format characters (zero-width, bidi overrides) and blank text."""
    if not value.strip():
        raise ValueError("must not be empty or blank")
    if value != value.strip():
        raise ValueError("must not start or end with whitespace")
    for char in value:
        if unicodedata.category(char) in ("Cc", "Cf", "Co", "Cs", "Zl", "Zp"):
            raise ValueError(f"contains the invisible or control character U+{ord(char):04X}")
    return value


Name = Annotated[str, Field(min_length=1, max_length=100), AfterValidator(_plain_text)]
Description = Annotated[str, Field(max_length=2000)]


class Request(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)


class ErrorBody(BaseModel):
    code: str
    message: str
    details: Any = None


class ErrorResponse(BaseModel):
    error: ErrorBody


ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse} for status in (401, 403, 404, 409, 422)
}


class SignupRequest(Request):
    email: EmailStr
    password: str = Field(min_length=8, max_length=1024)
    full_name: Name


class LoginRequest(Request):
    email: str = Field(min_length=1, max_length=320)
    password: str = Field(min_length=1, max_length=1024)


class RefreshRequest(Request):
    refresh_token: str = Field(min_length=1, max_length=200)


class LogoutRequest(Request):
    refresh_token: str | None = Field(default=None, max_length=200)


class TokenResponse(BaseModel):
    access_token: str
    refresh_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_in: int


class UserResponse(BaseModel):
    id: UUID
    email: str
    full_name: str
    created_at: datetime


class OrgCreate(Request):
    name: Name


class OrgResponse(BaseModel):
    id: str
    name: str
    role: str
    created_at: datetime


class MemberCreate(Request):
    email: EmailStr
    role: Literal["owner", "admin", "member"] = "member"


class MemberResponse(BaseModel):
    user_id: UUID
    email: str
    full_name: str
    role: str
    created_at: datetime


class ProjectCreate(Request):
    name: Name
    slug: str = Field(min_length=1, max_length=100)
    description: Description = ""


class ProjectUpdate(Request):
    name: Name | None = None
    description: Description | None = None


class ProjectResponse(BaseModel):
    id: UUID
    name: str
    slug: str
    description: str
    db_name: str
    status: str
    created_at: datetime


class KeyCreate(Request):
    name: Name
    type: Literal["publishable", "secret"] = "publishable"


class KeyResponse(BaseModel):
    id: UUID
    name: str
    type: str
    prefix: str
    created_at: datetime
    last_used_at: datetime | None


class KeyCreated(KeyResponse):
    key: str = Field(description="The plain key; it is shown only in this response.")


class HealthResponse(BaseModel):
    status: Literal["ok"]
    version: str
