"""The verification report: one verdict, the evidence for it, as JSON, text and HTML.

Everything the report shows passes through :func:`scidex_nbcapsule.redaction.redact`
first, so a credential printed by a notebook never reaches a report, a
terminal or the registry.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass, field
from typing import Any

from ..redaction import redact
from .accesses import IncompleteFile, NotCompared
from .compare import Difference
from .fixity import FixityProblem
from .normalizers import DIFFERENT, WITHIN_TOLERANCE
from .rerun import ExecutionProblem

VERIFIED = "verified"
VERIFIED_WITHIN_TOLERANCE = "verified-within-tolerance"
MISMATCH = "mismatch"
EXECUTION_FAILED = "execution-failed"
FIXITY_FAILED = "fixity-failed"
INCOMPLETE = "incomplete"
VERDICTS = (VERIFIED, VERIFIED_WITHIN_TOLERANCE, MISMATCH, EXECUTION_FAILED, FIXITY_FAILED, INCOMPLETE)

#: Exit status of ``nbcapsule verify`` per verdict (usage errors and other CapsuleErrors exit 2 to 5).
EXIT_CODES = {VERIFIED: 0, VERIFIED_WITHIN_TOLERANCE: 0, MISMATCH: 10, EXECUTION_FAILED: 11, FIXITY_FAILED: 12,
              INCOMPLETE: 13}

_COLOURS = {VERIFIED: "#0a7d27", VERIFIED_WITHIN_TOLERANCE: "#4f7d0a", MISMATCH: "#b35c00",
            EXECUTION_FAILED: "#b00020", FIXITY_FAILED: "#b00020", INCOMPLETE: "#8a1f8a"}


def clean(value: Any) -> Any:
    """``value`` with every credential-looking string redacted (data URIs of images are left alone)."""
    if isinstance(value, str):
        if value.startswith("data:image/"):
            return value
        return redact(value)[0]
    if isinstance(value, dict):
        return {k: clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v) for v in value]
    return value


def decide(fixity: list[FixityProblem], execution: ExecutionProblem | None, differences: list[Difference],
           incomplete: list[IncompleteFile] | tuple = (), not_compared: list[NotCompared] | tuple = ()) -> str:
    """fixity-failed > incomplete > execution-failed > mismatch > verified-within-tolerance > verified.

    Fixity first: nothing else counts on altered bytes (a recorded input missing from the crate is a fixity
    failure, found before anything runs). An incomplete capsule comes next, before an execution failure:
    when the notebook fails because a file is not in the crate, the capsule's gap is the cause and the
    library's ``FileNotFoundError`` only its symptom; and a run that read files from outside the crate says
    nothing about the capsule whether it then failed or not. Then execution, then the comparison. Files
    written but never recorded as outputs were compared with nothing, so at best the result is within
    tolerance, never ``verified``.
    """
    if fixity:
        return FIXITY_FAILED
    if incomplete:
        return INCOMPLETE
    if execution is not None:
        return EXECUTION_FAILED
    if any(d.status == DIFFERENT for d in differences):
        return MISMATCH
    if not_compared or any(d.status == WITHIN_TOLERANCE for d in differences):
        return VERIFIED_WITHIN_TOLERANCE
    return VERIFIED


@dataclass(repr=False)
class VerificationReport:
    """What a re-verification found; ``verdict`` is one of :data:`VERDICTS`."""

    verdict: str
    crate: str
    started: str
    finished: str
    seconds: float
    capsule_id: str | None = None
    title: str | None = None
    notebook: str | None = None
    fixity: list[FixityProblem] = field(default_factory=list)
    environment_drift: list[str] = field(default_factory=list)
    execution: ExecutionProblem | None = None
    differences: list[Difference] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    fresh_env: bool = False
    environment_digest: str | None = None
    recorded: bool = False
    notes: list[str] = field(default_factory=list)
    #: Inputs the re-run read that the crate does not hold (the verdict is then ``incomplete``).
    incomplete: list[IncompleteFile] = field(default_factory=list)
    #: Files the re-run wrote that the capsule has no recorded output for.
    not_compared: list[NotCompared] = field(default_factory=list)
    #: Whether the re-run's file accesses were traced; None when nothing was re-run.
    traced: bool | None = None

    @property
    def ok(self) -> bool:
        return self.verdict in (VERIFIED, VERIFIED_WITHIN_TOLERANCE)

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.verdict]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready and redacted: what the CLI prints with ``--json`` and the registry stores."""
        return clean({
            "verdict": self.verdict,
            "ok": self.ok,
            "crate": self.crate,
            "capsule_id": self.capsule_id,
            "title": self.title,
            "notebook": self.notebook,
            "started": self.started,
            "finished": self.finished,
            "seconds": round(self.seconds, 3),
            "fixity": [p.to_dict() for p in self.fixity],
            "environment_drift": list(self.environment_drift),
            "execution": self.execution.to_dict() if self.execution else None,
            "differences": [d.to_dict() for d in self.differences],
            "incomplete": [i.to_dict() for i in self.incomplete],
            "not_compared": [n.to_dict() for n in self.not_compared],
            "traced": self.traced,
            "settings": self.settings,
            "fresh_env": self.fresh_env,
            "environment_digest": self.environment_digest,
            "recorded": self.recorded,
            "notes": list(self.notes),
        })

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"

    def summary(self) -> str:
        """A few lines for a terminal: the verdict and what led to it."""
        data = self.to_dict()
        lines = [f"{data['verdict']}: {data['capsule_id'] or data['crate']} ({data['seconds']:.1f} s)"]
        lines += [f"  fixity:    {p['message']}" for p in data["fixity"]]
        lines += [f"  incomplete: {i['path']}: {i['message']}" for i in data["incomplete"]]
        if data["execution"]:
            ex = data["execution"]
            lines.append(f"  execution: {ex['message']}")
            if ex.get("traceback"):
                lines += ["    " + line for line in ex["traceback"].strip().splitlines()[-12:]]
        for d in data["differences"]:
            lines.append(f"  {d['status']}: {d['where']} [{d['what']}] {d['detail']}")
            if d.get("hint"):
                lines.append(f"    hint: {d['hint']}")
            if d["status"] == DIFFERENT and d["diff"]:
                lines += ["    " + line for line in d["diff"].splitlines()[:40]]
        lines += [f"  not compared: {n['path']}: {n['message']}" for n in data["not_compared"]]
        lines += [f"  drift:     {w}" for w in data["environment_drift"]]
        lines += [f"  note:      {n}" for n in data["notes"]]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()

    def __repr__(self) -> str:
        return f"<VerificationReport {self.verdict} {self.capsule_id or self.crate}>"

    def to_html(self) -> str:
        """A self-contained fragment: differing cells and files, unified diffs, images side by side."""
        data = self.to_dict()
        esc = html.escape
        colour = _COLOURS.get(data["verdict"], "#333")
        parts = [
            "<div class='nbcapsule-verification' style='font-family:sans-serif'>",
            f"<h3 style='margin:0 0 .3em 0'>Verification: <span style='color:{colour}'>{esc(data['verdict'])}"
            "</span></h3>",
            f"<p>Capsule <code>{esc(str(data['capsule_id']))}</code> · crate <code>{esc(data['crate'])}</code>"
            f"<br>{esc(data['started'])} → {esc(data['finished'])} ({data['seconds']:.1f} s)"
            f"{' · fresh environment' if data['fresh_env'] else ''}</p>",
        ]
        if data["fixity"]:
            parts.append("<h4>Fixity problems</h4><ul>" + "".join(
                f"<li><code>{esc(p['path'])}</code> ({esc(p['kind'])}): {esc(p['message'])}</li>"
                for p in data["fixity"]) + "</ul>")
        if data["incomplete"]:
            parts.append("<h4>Incomplete: inputs the crate does not hold</h4><ul>" + "".join(
                f"<li><code>{esc(i['path'])}</code> ({esc(i['kind'])}): {esc(i['message'])}</li>"
                for i in data["incomplete"]) + "</ul>")
        if data["execution"]:
            ex = data["execution"]
            parts.append(f"<h4>Execution failed</h4><p>{esc(ex['message'])}</p>")
            if ex.get("source"):
                parts.append(f"<pre style='background:#f6f6f6;padding:.5em'>{esc(ex['source'])}</pre>")
            if ex.get("traceback"):
                parts.append(f"<pre style='background:#fff0f0;padding:.5em;white-space:pre-wrap'>"
                             f"{esc(ex['traceback'])}</pre>")
        if data["differences"]:
            parts.append("<h4>Differences</h4>")
            for d in data["differences"]:
                parts.append(f"<details {'open' if d['status'] == DIFFERENT else ''}><summary><b>{esc(d['where'])}"
                             f"</b> <code>{esc(d['what'])}</code> — {esc(d['status'])}: {esc(d['detail'])}"
                             "</summary>")
                if d.get("hint"):
                    parts.append(f"<p class='nbcapsule-hint' style='margin:.3em 0;padding:.3em .5em;"
                                 f"background:#fff8e1'><b>hint:</b> {esc(d['hint'])}</p>")
                if d.get("diff"):
                    parts.append(_diff_html(d["diff"]))
                if d.get("images"):
                    parts.append("<table><tr><th>recorded</th><th>re-executed</th></tr><tr>" + "".join(
                        f"<td><img style='max-width:100%' src='{esc(uri, quote=True)}'></td>"
                        for uri in (d["images"]["recorded"], d["images"]["re-executed"])) + "</tr></table>")
                parts.append("</details>")
        elif data["verdict"] in (VERIFIED, VERIFIED_WITHIN_TOLERANCE):
            parts.append("<p>Every analysis cell and recorded output file matched.</p>")
        if data["not_compared"]:
            parts.append("<h4>Not compared: written by the re-run, not recorded as outputs</h4><ul>" + "".join(
                f"<li><code>{esc(n['path'])}</code>: {esc(n['message'])}</li>" for n in data["not_compared"])
                + "</ul>")
        if data["environment_drift"]:
            parts.append("<h4>Environment drift (warnings)</h4><ul>" + "".join(
                f"<li>{esc(w)}</li>" for w in data["environment_drift"]) + "</ul>")
        if data["notes"]:
            parts.append("<ul>" + "".join(f"<li>{esc(n)}</li>" for n in data["notes"]) + "</ul>")
        parts.append("</div>")
        return "".join(parts)

    def _repr_html_(self) -> str:
        return self.to_html()


def _diff_html(diff: str) -> str:
    rows = []
    for line in diff.splitlines():
        style = ""
        if line.startswith("+") and not line.startswith("+++"):
            style = "background:#e6ffec"
        elif line.startswith("-") and not line.startswith("---"):
            style = "background:#ffebe9"
        elif line.startswith("@@"):
            style = "color:#6a737d"
        rows.append(f"<span style='{style}'>{html.escape(line)}</span>")
    return "<pre style='padding:.5em;border:1px solid #ddd'>" + "\n".join(rows) + "</pre>"
