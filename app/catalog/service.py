from __future__ import annotations

from collections.abc import Sequence

from pydantic import BaseModel
from sqlalchemy import func, select

from app.catalog.chartrepo import semver_key
from app.catalog.schemas import (
    ApplicationIn,
    ApplicationOut,
    ApplicationStatus,
    ApplicationVersionIn,
    ApplicationVersionOut,
    application_out,
    application_version_out,
    version_name,
)
from app.errors import Conflict, invalid_field
from app.kit.repository import ResourceRepository
from app.kit.service import ResourceService
from app.models.catalog import Application, ApplicationVersion, ChartArchive
from app.models.deployments import Rollout
from app.models.references import refuse_if_used


class ApplicationRepository(ResourceRepository[Application]):
    model = Application
    kind = "Application"


class ApplicationVersionRepository(ResourceRepository[ApplicationVersion]):
    model = ApplicationVersion
    kind = "ApplicationVersion"


class ApplicationService(ResourceService[Application, ApplicationIn, ApplicationOut]):
    in_model = ApplicationIn

    def new_row(self, name: str) -> Application:
        return Application(name=name)

    async def apply_spec(self, row: Application, body: ApplicationIn) -> None:
        spec = body.spec
        if row.provisioner not in (None, spec.provisioner):
            count = await self.session.scalar(
                select(func.count()).where(ApplicationVersion.application == row.name)
            )
            if count:
                raise Conflict("spec.provisioner cannot change while the application has versions")
        row.display_name = spec.displayName
        row.description = spec.description
        row.category = spec.category
        row.icon = spec.icon
        row.provisioner = spec.provisioner

    def render(self, row: Application) -> ApplicationOut:
        return application_out(row)

    async def live_status(
        self, names: list[str], rows: Sequence[Application] | None = None
    ) -> dict[str, BaseModel] | None:
        found = await self.session.execute(
            select(ApplicationVersion.application, ApplicationVersion.version).where(
                ApplicationVersion.application.in_(names)
            )
        )
        versions: dict[str, list[str]] = {}
        for application, version in found.all():
            versions.setdefault(application, []).append(version)
        return {
            name: ApplicationStatus(
                latestVersion=max(versions[name], key=semver_key) if name in versions else None,
                versionCount=len(versions.get(name, [])),
            )
            for name in names
        }

    async def check_delete(self, row: Application) -> None:
        names = (
            await self.session.scalars(
                select(ApplicationVersion.name)
                .where(ApplicationVersion.application == row.name)
                .order_by(ApplicationVersion.name)
            )
        ).all()
        if names:
            raise Conflict(
                f"application {row.name!r} still has versions: {', '.join(names)}",
                code="ApplicationHasVersions",
            )


class ApplicationVersionService(
    ResourceService[ApplicationVersion, ApplicationVersionIn, ApplicationVersionOut]
):
    in_model = ApplicationVersionIn

    def new_row(self, name: str) -> ApplicationVersion:
        return ApplicationVersion(name=name)

    async def check_delete(self, row: ApplicationVersion) -> None:
        await refuse_if_used(
            self.session,
            f"application version {row.name!r}",
            Rollout.application_version == row.name,
        )

    async def check_spec(self, body: ApplicationVersionIn) -> None:
        spec = body.spec
        expected = version_name(spec.application, spec.version)
        if body.metadata.name not in (None, expected):
            raise invalid_field("metadata.name", f"must be {expected!r} (<application>-v<version>)")
        provisioner = await self.session.scalar(
            select(Application.provisioner).where(Application.name == spec.application)
        )
        if provisioner is None:
            raise invalid_field(
                "spec.application", f"application {spec.application!r} does not exist"
            )
        source = "helm" if spec.helm is not None else "workload"
        if source != provisioner:
            raise invalid_field(
                f"spec.{source}",
                f"application {spec.application!r} is provisioned by {provisioner}",
            )
        helm = spec.helm
        if helm is not None and helm.repository is None:
            stored = await self.session.scalar(
                select(ChartArchive.id).where(
                    ChartArchive.name == helm.chart, ChartArchive.version == helm.version
                )
            )
            if stored is None:
                raise invalid_field(
                    "spec.helm",
                    f"chart {helm.chart} {helm.version} is not in this platform's repository",
                )

    async def apply_spec(self, row: ApplicationVersion, body: ApplicationVersionIn) -> None:
        spec = body.spec
        if row.version is not None and self.render(row).spec != spec:
            raise Conflict(
                "application versions are immutable; create a new version instead",
                code="Immutable",
            )
        row.application = spec.application
        row.version = spec.version
        row.helm = spec.helm.model_dump(mode="json") if spec.helm else None
        row.workload = spec.workload.model_dump(mode="json") if spec.workload else None

    def render(self, row: ApplicationVersion) -> ApplicationVersionOut:
        return application_version_out(row)
