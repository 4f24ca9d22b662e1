"""A real Jupyter server (or JupyterLab) in a subprocess, isolated from the user's configuration."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class JupyterProcess:
    """``python -m <module>`` serving ``root_dir`` on 127.0.0.1 with a token; logs go to ``home/server.log``."""

    def __init__(self, module: str, root_dir: Path, home: Path, *, token: str = "test-token-0123456789",
                 args: list[str] | None = None, env: dict[str, str] | None = None) -> None:
        self.token = token
        self.port = free_port()
        self.root_dir = root_dir
        self.url = f"http://127.0.0.1:{self.port}/"
        for name in ("config", "data", "runtime", "workspaces", "settings"):
            (home / name).mkdir(parents=True, exist_ok=True)
        full_env = dict(os.environ)
        full_env.update({
            "JUPYTER_CONFIG_DIR": str(home / "config"),
            "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
            "JUPYTER_DATA_DIR": str(home / "data"),
            "JUPYTERLAB_WORKSPACES_DIR": str(home / "workspaces"),
            "JUPYTERLAB_SETTINGS_DIR": str(home / "settings"),
            "JUPYTER_PLATFORM_DIRS": "1",
        })
        full_env.update(env or {})
        news = home / "settings" / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
        news.parent.mkdir(parents=True, exist_ok=True)
        news.write_text('{"fetchNews": "false", "checkForUpdates": false}')
        self.log_path = home / "server.log"
        self._log = open(self.log_path, "wb")
        command = [sys.executable, "-m", module, "--no-browser", f"--port={self.port}", "--ip=127.0.0.1",
                   f"--IdentityProvider.token={token}", "--allow-root", f"--ServerApp.root_dir={root_dir}",
                   "--ServerApp.port_retries=0", *(args or [])]
        self.process = subprocess.Popen(command, env=full_env, stdout=self._log, stderr=subprocess.STDOUT,
                                        cwd=str(root_dir))
        self._wait_ready()

    def _wait_ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the Jupyter server exited early:\n{self.log()}")
            try:
                if requests.get(self.url + "api/status", headers=self.auth, timeout=2).status_code == 200:
                    return
            except requests.ConnectionError:
                pass
            time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"the Jupyter server did not answer within {timeout}s:\n{self.log()}")

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"token {self.token}"}

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")[-6000:]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self._log.close()
