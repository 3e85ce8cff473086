"""PostgreSQL extensions of a project database."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, Field

from zbaas.api.deps import ProjectDep, ServicesDep
from zbaas.api.models import ERRORS
from zbaas.tenant import extensions

router = APIRouter(
    prefix="/projects/{project_id}/database/extensions", tags=["extensions"], responses=ERRORS
)

# PostgreSQL extension names are at most 63 bytes (NAMEDATALEN - 1).
ExtensionName = Annotated[str, Path(min_length=1, max_length=63)]


class ExtensionResponse(BaseModel):
    name: str
    comment: str | None
    default_version: str | None
    installed_version: str | None
    enabled: bool
    allowed: bool = Field(description="Whether zbaas may enable it on this project.")
    available: bool = Field(description="Whether this PostgreSQL server has it installed.")
    schema_name: str | None = Field(
        serialization_alias="schema", description="Schema it is installed in, when enabled."
    )
    package: str | None = Field(description="Debian package to install when not available.")
    message: str | None = Field(description="Why it is not allowed or not available.")


def _shape(extension: extensions.Extension) -> ExtensionResponse:
    return ExtensionResponse(
        name=extension.name,
        comment=extension.comment,
        default_version=extension.default_version,
        installed_version=extension.installed_version,
        enabled=extension.enabled,
        allowed=extension.allowed,
        available=extension.available,
        schema_name=extension.schema,
        package=extension.package,
        message=extension.message,
    )


@router.get("", response_model=list[ExtensionResponse], response_model_by_alias=True)
async def list_extensions(access: ProjectDep, services: ServicesDep) -> list[ExtensionResponse]:
    """List the extensions the server can install, and allowed ones it lacks, with their status."""
    found = await extensions.list_extensions(services, access.project)
    return [_shape(extension) for extension in found]


@router.post("/{ext_name}/enable", response_model=ExtensionResponse, response_model_by_alias=True)
async def enable_extension(
    ext_name: ExtensionName, access: ProjectDep, services: ServicesDep
) -> ExtensionResponse:
    """Install an allowed extension and the ones it requires; idempotent."""
    access.require_developer("enable extensions")
    return _shape(await extensions.enable(services, access.project, ext_name))


@router.post("/{ext_name}/disable", response_model=ExtensionResponse, response_model_by_alias=True)
async def disable_extension(
    ext_name: ExtensionName,
    access: ProjectDep,
    services: ServicesDep,
    cascade: Annotated[
        bool, Query(description="Also drop the objects that depend on the extension.")
    ] = False,
) -> ExtensionResponse:
    """Drop an extension; 409 lists the objects that depend on it unless cascade is true."""
    access.require_developer("disable extensions")
    extension = await extensions.disable(services, access.project, ext_name, cascade=cascade)
    return _shape(extension)
