"""A real kernel driven the way JupyterLab drives it: execute requests carrying the cell id."""

from __future__ import annotations

import json
import os
import queue
from pathlib import Path
from typing import Any

from jupyter_client.manager import start_new_kernel


class KernelSession:
    def __init__(self, cwd: Path, env: dict[str, str] | None = None, kernel_name: str = "python3") -> None:
        full_env = dict(os.environ)
        full_env.update(env or {})
        self.km, self.kc = start_new_kernel(kernel_name=kernel_name, cwd=str(cwd), env=full_env)

    def run(self, code: str, cell_id: str | None = None, *, timeout: float = 120) -> dict[str, Any]:
        """Execute ``code`` as a notebook cell; return status, text output and rich outputs."""
        content = {"code": code, "silent": False, "store_history": True, "user_expressions": {},
                   "allow_stdin": False, "stop_on_error": True}
        msg = self.kc.session.msg("execute_request", content, metadata={"cellId": cell_id} if cell_id else {})
        self.kc.shell_channel.send(msg)
        msg_id = msg["header"]["msg_id"]
        text: list[str] = []
        data: list[dict] = []
        error = None
        while True:
            try:
                reply = self.kc.get_iopub_msg(timeout=timeout)
            except queue.Empty as exc:
                raise TimeoutError(f"no output from the kernel within {timeout}s") from exc
            if reply["parent_header"].get("msg_id") != msg_id:
                continue
            kind = reply["msg_type"]
            if kind == "stream":
                text.append(reply["content"]["text"])
            elif kind in ("display_data", "execute_result"):
                data.append(reply["content"]["data"])
            elif kind == "error":
                error = reply["content"]
            elif kind == "status" and reply["content"]["execution_state"] == "idle":
                break
        while True:  # the reply to this request, not one left over from an earlier one
            shell = self.kc.get_shell_msg(timeout=timeout)
            if shell["parent_header"].get("msg_id") == msg_id:
                break
        return {"status": shell["content"]["status"], "text": "".join(text), "data": data, "error": error,
                "execution_count": shell["content"].get("execution_count")}

    def ok(self, code: str, cell_id: str | None = None) -> dict[str, Any]:
        result = self.run(code, cell_id)
        if result["status"] != "ok":
            raise AssertionError(f"cell failed: {result['error']}\n{code}")
        return result

    def restart(self) -> None:
        self.km.restart_kernel(now=True)
        self.kc.wait_for_ready(timeout=60)

    def close(self) -> None:
        self.kc.stop_channels()
        self.km.shutdown_kernel(now=True)


def export_in_kernel(kernel: KernelSession, *args: str) -> dict:
    """Run %capsule export in the kernel and return the capsule as a dict."""
    out = kernel.ok("import json\n_c = get_ipython().run_line_magic('capsule', " + repr("export " + " ".join(args))
                    + ")\nprint('RESULT' + json.dumps(_c.to_dict()))")
    line = next(line for line in out["text"].splitlines() if line.startswith("RESULT"))
    return json.loads(line[len("RESULT"):])


def crate_manifest(capsule: dict) -> dict:
    """``capsule.json`` of an exported folder capsule."""
    return json.loads((Path(capsule["crate"]) / "capsule.json").read_text())
