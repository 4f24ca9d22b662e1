"""Tornado handlers of the capsule API: parse the request, call the registry or verification, answer JSON.

Authentication and authorisation are jupyter_server's own (token, cookies,
XSRF for browser POSTs, the configured authorizer). Registry calls block, so
they run in the IO loop's executor and the server stays responsive.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import APIHandler
from tornado import web
from tornado.ioloop import IOLoop

from ..errors import CapsuleError, CapsuleNotFound, InvalidId
from .app import CapsuleServer, check_capsule_id, jsonable

AUTH_RESOURCE = "capsules"
CHUNK = 1 << 20
REGISTER_FIELDS = ("path", "git_commit", "git_tree_hash", "swh_origin_url", "swh_snapshot_id")
LIST_FILTERS = ("author", "commit", "status", "text")
MAX_LIMIT = 1000


class CapsuleHTTPError(web.HTTPError):
    """A :class:`CapsuleError` on its way to the client, with the status the error class chose."""

    def __init__(self, error: CapsuleError) -> None:
        super().__init__(error.http_status, reason=None)
        self.error = error


class BaseHandler(APIHandler):
    """Errors as ``{"error": message}``; blocking calls off the IO loop."""

    auth_resource = AUTH_RESOURCE

    @property
    def service(self) -> CapsuleServer:
        return self.settings["scidex_nbcapsule"]

    async def call(self, function: Callable[..., Any], *args: Any) -> Any:
        try:
            return await IOLoop.current().run_in_executor(None, function, *args)
        except CapsuleError as exc:
            raise CapsuleHTTPError(exc) from exc

    async def from_registry(self, method: str, *args: Any) -> Any:
        """Call one registry method off the event loop."""
        def run() -> Any:
            with self.service.registry() as registry:
                return getattr(registry, method)(*args)

        return await self.call(run)

    def body(self, allowed: tuple[str, ...]) -> dict[str, Any]:
        try:
            data = json.loads(self.request.body or b"{}")
        except ValueError as exc:
            raise CapsuleHTTPError(InvalidId(f"the request body is not JSON: {exc}")) from exc
        if not isinstance(data, dict):
            raise CapsuleHTTPError(InvalidId("the request body must be a JSON object"))
        unknown = sorted(set(data) - set(allowed))
        if unknown:
            raise CapsuleHTTPError(InvalidId(f"unknown field(s) {', '.join(unknown)}; allowed: {', '.join(allowed)}"))
        for key, value in data.items():
            if value is not None and not isinstance(value, str):
                raise CapsuleHTTPError(InvalidId(f"{key} must be a string"))
        return data

    def capsule_id(self, value: str) -> str:
        try:
            return check_capsule_id(value)
        except CapsuleError as exc:
            raise CapsuleHTTPError(exc) from exc

    def reply(self, data: Any, status: int = 200) -> None:
        self.set_status(status)
        self.finish(json.dumps(jsonable(data)))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, CapsuleHTTPError):
            message = str(exc.error)
        elif isinstance(exc, web.HTTPError):
            message = exc.log_message or self._reason
        else:
            message = "internal server error; the server log has the details"
        self.finish(json.dumps({"error": message}))

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        if isinstance(value, CapsuleHTTPError):
            self.log.info("capsule API %s %s: %s %s", self.request.method, self.request.path, value.status_code,
                          str(value.error).splitlines()[0])
        else:
            super().log_exception(typ, value, tb)


class CapsulesHandler(BaseHandler):
    """``GET`` lists registered capsules; ``POST`` registers a crate lying under the server's root_dir."""

    @web.authenticated
    @authorized
    async def get(self) -> None:
        filters = {key: self.get_query_argument(key, None) for key in LIST_FILTERS}
        filters = {k: v for k, v in filters.items() if v}
        limit = self._integer("limit", 50, 1, MAX_LIMIT)
        offset = self._integer("offset", 0, 0, None)

        def run() -> Any:
            with self.service.registry() as registry:
                return registry.list_capsules(limit=limit, offset=offset, **filters)

        capsules = await self.call(run)
        self.reply({"capsules": capsules, "limit": limit, "offset": offset})

    def _integer(self, name: str, default: int, low: int, high: int | None) -> int:
        text = self.get_query_argument(name, None)
        if text is None or text == "":
            return default
        try:
            value = int(text)
        except ValueError:
            value = low - 1
        if value < low or (high is not None and value > high):
            bound = f"between {low} and {high}" if high is not None else f"at least {low}"
            raise CapsuleHTTPError(InvalidId(f"{name} must be a whole number {bound}"))
        return value

    @web.authenticated
    @authorized
    async def post(self) -> None:
        data = self.body(REGISTER_FIELDS)
        if not data.get("path"):
            raise CapsuleHTTPError(InvalidId("path is required: the crate's path relative to the server's root"))
        extra = {k: v for k, v in data.items() if k != "path" and v}

        def run() -> Any:
            crate = self.service.crate_path(data["path"])
            if not crate.exists():
                raise CapsuleNotFound(f"there is no crate at {data['path']!r}",
                                      hint="give the crate folder or zip relative to the server's root folder")
            with self.service.registry() as registry:
                return registry.register_capsule(crate, **extra)

        result = await self.call(run)
        self.set_header("Location", self.request.path.rstrip("/") + "/" + result.capsule_id)
        self.reply({"capsule_id": result.capsule_id, "created": bool(result.created), "version": result.version,
                    "parent_id": result.parent_id}, 201 if result.created else 200)


class CapsuleHandler(BaseHandler):
    """The manifest of one capsule."""

    @web.authenticated
    @authorized
    async def get(self, capsule_id: str) -> None:
        self.reply(await self.from_registry("get_capsule_manifest", self.capsule_id(capsule_id)))


class CitationHandler(BaseHandler):
    """What a paper cites: capsule id, crate checksum, entities and archival references."""

    @web.authenticated
    @authorized
    async def get(self, capsule_id: str) -> None:
        self.reply(await self.from_registry("citation", self.capsule_id(capsule_id)))


class ExportFilesHandler(BaseHandler):
    """Write a registered capsule's files under the configured export root, never elsewhere."""

    @web.authenticated
    @authorized
    async def post(self, capsule_id: str) -> None:
        capsule_id = self.capsule_id(capsule_id)
        data = self.body(("dest",))
        dest_name = data.get("dest") or capsule_id

        def run() -> Path:
            dest = self.service.export_path(dest_name)
            with self.service.registry() as registry:
                return registry.export_files(capsule_id, dest)

        written = await self.call(run)
        self.reply({"capsule_id": capsule_id, "dest": self.service.shown(written)}, 201)


class VerifyHandler(BaseHandler):
    """Start a verification in the background; the job URL tells how it went."""

    @web.authenticated
    @authorized(action="execute")
    async def post(self, capsule_id: str) -> None:
        capsule_id = self.capsule_id(capsule_id)

        def run() -> Any:
            with self.service.registry() as registry:
                return registry.get_capsule(capsule_id)

        await self.call(run)
        job = self.service.submit_verification(capsule_id)
        location = self.request.path.rsplit("/", 2)[0] + "/jobs/" + job.job_id
        self.set_header("Location", location)
        self.reply({"job_id": job.job_id, "capsule_id": capsule_id, "status": job.status, "location": location}, 202)


class JobHandler(BaseHandler):
    """Status of a verification job and, once done, its report."""

    @web.authenticated
    @authorized
    async def get(self, job_id: str) -> None:
        job = self.service.job(job_id)
        if job is None:
            raise CapsuleHTTPError(CapsuleNotFound(f"no verification job {job_id[:80]!r} on this server",
                                                   hint="jobs are kept in memory and forgotten when it restarts"))
        self.reply(job.to_dict())


class CrateZipHandler(BaseHandler):
    """Download a registered capsule as one zip, streamed in chunks."""

    @web.authenticated
    @authorized
    async def get(self, capsule_id: str) -> None:
        capsule_id = self.capsule_id(capsule_id)
        workdir = Path(tempfile.mkdtemp(prefix="nbcapsule-zip-"))
        try:
            def run() -> Path:
                with self.service.registry() as registry:
                    registry.export_files(capsule_id, workdir / capsule_id)
                return Path(shutil.make_archive(str(workdir / "crate"), "zip", root_dir=workdir, base_dir=capsule_id))

            archive = await self.call(run)
            self.set_header("Content-Disposition", f'attachment; filename="{capsule_id}.zip"')
            self.set_header("Content-Length", str(archive.stat().st_size))
            self.set_header("Content-Type", "application/zip")
            with open(archive, "rb") as handle:
                while chunk := handle.read(CHUNK):
                    self.write(chunk)
                    await self.flush()
            self.finish(set_content_type="application/zip")
        finally:
            shutil.rmtree(workdir, ignore_errors=True)


def routes() -> list[tuple[str, type[BaseHandler]]]:
    """URL patterns relative to ``{base_url}capsules/api/``; ids are checked in the handlers."""
    segment = "([^/]+)"
    return [
        ("capsules/?", CapsulesHandler),
        (f"capsules/jobs/{segment}", JobHandler),
        (f"capsules/{segment}", CapsuleHandler),
        (f"capsules/{segment}/export", CitationHandler),
        (f"capsules/{segment}/export-files", ExportFilesHandler),
        (f"capsules/{segment}/verify", VerifyHandler),
        (f"capsules/{segment}/crate.zip", CrateZipHandler),
    ]
