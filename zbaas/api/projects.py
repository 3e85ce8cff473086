"""Project lifecycle."""

from __future__ import annotations

from fastapi import APIRouter, Response

from zbaas.api.deps import ControlConn, OrgDep, ProjectDep, ServicesDep
from zbaas.api.models import ERRORS, ProjectCreate, ProjectResponse, ProjectUpdate
from zbaas.platform import projects

router = APIRouter(prefix="/projects", tags=["projects"], responses=ERRORS)


def _shape(project: projects.Project) -> ProjectResponse:
    return ProjectResponse(
        id=project.id,
        name=project.name,
        slug=project.slug,
        description=project.description,
        db_name=project.db_name,
        status=project.status,
        created_at=project.created_at,
    )


@router.post("", status_code=201, response_model=ProjectResponse)
async def create_project(
    body: ProjectCreate, org: OrgDep, conn: ControlConn, services: ServicesDep
) -> ProjectResponse:
    """Create a project: its database, roles, ``auth`` schema and ``default`` bucket."""
    project = await projects.create(
        conn,
        services.pools,
        services.box,
        org.id,
        body.name,
        body.slug,
        body.description,
    )
    return _shape(project)


@router.get("", response_model=list[ProjectResponse])
async def list_projects(org: OrgDep, conn: ControlConn) -> list[ProjectResponse]:
    """Projects of the acting organization (the X-Org-Id header, else the first one)."""
    return [_shape(p) for p in await projects.list_for_org(conn, org.id)]


@router.get("/by-slug/{slug}", response_model=ProjectResponse)
async def get_project_by_slug(slug: str, org: OrgDep, conn: ControlConn) -> ProjectResponse:
    """Resolve a slug of the acting organization to its project."""
    return _shape(await projects.get_by_slug(conn, org.id, slug))


@router.get("/{project_id}", response_model=ProjectResponse)
async def get_project(access: ProjectDep) -> ProjectResponse:
    """One project."""
    return _shape(access.project)


@router.patch("/{project_id}", response_model=ProjectResponse)
async def update_project(
    body: ProjectUpdate, access: ProjectDep, conn: ControlConn
) -> ProjectResponse:
    """Rename or describe a project; the slug is fixed because the database name derives from it."""
    access.require_developer("update the project")
    return _shape(await projects.update(conn, access.project, body.name, body.description))


@router.delete("/{project_id}", status_code=204)
async def delete_project(access: ProjectDep, conn: ControlConn, services: ServicesDep) -> Response:
    """Drop the database and roles, purge storage and remove keys and all rows."""
    access.require_manager("delete projects")
    await projects.delete(conn, services.pools, services.storage, access.project)
    return Response(status_code=204)
