"""Text progress bars (tqdm's text mode): only each bar's final state, its clocks and rate masked.

tqdm redraws a bar by writing ``\\r`` and the new state, as often as time
allows, so two runs write a different number of intermediate states, and each
state carries the elapsed and remaining time and the rate::

     50%|█████     | 5/10 [00:01<00:01,  4.97it/s]
    loop: 100%|██████████| 30/30 [00:00<00:00, 96.90it/s, loss=0.3]
    120it [00:02, 59.8it/s]

A line made of ``\\r``-separated updates whose last state is such a bar keeps
that last state only, and in every bar the ``[elapsed<remaining, rate`` part is
masked. The description, percentage, bar, count and total, and any postfix
(``loss=0.3``, a value the code computed) are still compared.
"""

from __future__ import annotations

import re

from .text import TextPass

_CLOCK = r"(?:\d+d, )?\d{1,2}(?::\d{2}){1,2}"
_RATE = r"(?:\?|\d+(?:\.\d+)?\s?[kMGTPEZY]?)[^\s,\]/]*/s|\d+(?:\.\d+)?\s?[kMGTPEZY]?s/[^\s,\]]+"
#: tqdm's ``[{elapsed}<{remaining}, {rate_fmt}{postfix}]`` (``remaining`` absent when the total is unknown).
BAR_TIMES = re.compile(rf"\[{_CLOCK}(?:<(?:\?|{_CLOCK}))?, *(?:{_RATE})(?=[,\]])")


def is_progress_bar(line: str) -> bool:
    return BAR_TIMES.search(line) is not None


def final_states(text: str) -> str:
    """Each line of ``\\r``-separated redraws whose last visible state is a progress bar, reduced to that state."""
    lines = text.replace("\r\n", "\n").split("\n")
    for i, line in enumerate(lines):
        if "\r" not in line:
            continue
        states = [state for state in line.split("\r") if state.strip()]
        if states and is_progress_bar(states[-1]):
            lines[i] = states[-1]
    return "\n".join(lines)


class ProgressBarPass(TextPass):
    """tqdm text bars: the last state of each bar, with its elapsed, remaining and rate fields masked."""

    name = "progress"
    priority = 80
    stage = "raw"  # before the clock masks, and while the ``\r`` between redraws is still there

    def prepare(self, text: str) -> str:
        if "[" not in text or "/" not in text:  # every bar has "[" and a rate in "…/s" or "s/…"
            return text
        return BAR_TIMES.sub("[<elapsed>, <rate>", final_states(text))
