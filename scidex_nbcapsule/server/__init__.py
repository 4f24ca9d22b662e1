"""Jupyter server extension: the capsule catalogue as a REST API under ``{base_url}capsules/api/``.

Enabled by ``jupyter-config/jupyter_server_config.d/scidex_nbcapsule.json``
(installed with the package) or ``jupyter server extension enable
scidex_nbcapsule.server``. Settings, e.g. ``--CapsuleServer.export_root=PATH``::

    c.CapsuleServer.db_url = "postgresql://..."   # default: $SCIDEX_NBCAPSULE_DB or the local SQLite
    c.CapsuleServer.export_root = "/srv/exports"  # default: <root_dir>/capsule-exports
"""

from __future__ import annotations

from typing import Any

API_PREFIX = "capsules/api"


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    return [{"module": "scidex_nbcapsule.server"}]


def _load_jupyter_server_extension(serverapp: Any) -> None:
    """Add the capsule handlers to the running server, configured from the server's own config."""
    from jupyter_server.utils import url_path_join

    from .app import CapsuleServer
    from .handlers import routes

    service = CapsuleServer(parent=serverapp, root_dir=serverapp.root_dir)
    serverapp.web_app.settings["scidex_nbcapsule"] = service
    base = url_path_join(serverapp.web_app.settings["base_url"], API_PREFIX)
    serverapp.web_app.add_handlers(".*$", [(url_path_join(base, pattern), handler) for pattern, handler in routes()])
    serverapp.log.info("scidex_nbcapsule: capsule API at %s/ (exports under %s)", base, service.export_dir)

