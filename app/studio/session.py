"""What one browser tab owns: its plan, observation, imaginations, executed paths and log.

A `Session` lives in a `gr.State`, so every tab has its own; the robot and the model are
shared by all tabs (there is one of each). A background thread that watches a chunk writes
into its session's log and executed paths, hence the lock.

The plan is an ordered list of next-event instructions. Editing it drops the imaginations
of the events whose index or text changed: an imagination belongs to one event text.
"""

from __future__ import annotations

import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from backend.service import MAX_INSTRUCTION_CHARS, MAX_PLAN_EVENTS

SOURCES = ("Live robot", "Dataset episode")


class PlanError(ValueError):
    """A plan edit that cannot be made; the message is shown on the page."""


def check_event_text(text: str) -> str:
    text = " ".join(str(text or "").split())
    if not text:
        raise PlanError(
            "the event text is empty: describe the next event, e.g. 'grasp the red block'"
        )
    if len(text) > MAX_INSTRUCTION_CHARS:
        raise PlanError(
            f"the event text is {len(text)} characters; at most {MAX_INSTRUCTION_CHARS}: "
            "one event is one short sentence"
        )
    return text


def parse_plan(text: str) -> list[str]:
    """A plan pasted as text, one event per line (blank lines skipped)."""
    lines = [ln for ln in str(text or "").splitlines() if ln.strip()]
    if not lines:
        raise PlanError("the plan is empty: write one event per line")
    if len(lines) > MAX_PLAN_EVENTS:
        raise PlanError(
            f"the plan has {len(lines)} events; at most {MAX_PLAN_EVENTS}: split the task"
        )
    return [check_event_text(ln) for ln in lines]


@dataclass
class Session:
    """Per-tab state of the studio."""

    id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    source: str = SOURCES[0]
    task: str = ""
    seed: int = 0
    task_text: str = ""  # the task instruction (what unified mode and the VLM read)
    plan: list[str] = field(default_factory=list)
    active: int = 0  # the plan event Imagine and Approve & send act on
    obs: Any | None = None  # backend.model.wam.Observation the next imagination starts from
    obs_step: int = 0
    dataset: str = ""
    episode: int = 0
    frame: int = 0
    ground_truth: dict[str, Any] | None = (
        None  # dataset source: {"frames": {cam: (T,H,W,3)}, "actions": (T,7)}
    )
    imagined: dict[int, Any] = field(default_factory=dict)  # event index -> Imagination
    imagined_from: dict[int, np.ndarray] = field(
        default_factory=dict
    )  # event index -> start state (7,)
    executed: dict[int, list[np.ndarray]] = field(default_factory=dict)  # event index -> ee poses
    imagining: int | None = None  # the event an imagination is running for, until its final
    replacements: dict[str, tuple[Any, int]] = field(
        default_factory=dict
    )  # chunk id sent by Replace running chunk -> (its handle, its event index)
    log: list[str] = field(default_factory=list)
    last_mode: str = ""
    message: str = ""
    rec: Any | None = None  # app.studio.recording.Recording, from the tab's first recorded act
    demo_stop: threading.Event = field(default_factory=threading.Event, repr=False)  # Stop demo
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __deepcopy__(self, memo: dict) -> Session:
        # gr.State deep-copies the value its factory returns; that value is already this tab's
        # own, and its lock cannot be copied.
        return self

    # ------------------------------------------------------------ log

    def successor(self, ack: dict[str, Any]) -> tuple[Any, int] | None:
        """(handle, event index) of the chunk that replaced the one `ack` ended, if this tab
        sent it; None for any other end."""
        m = re.fullmatch(r"replaced by chunk '(.+)'", str(ack.get("reason") or ""))
        return self.replacements.get(m.group(1)) if m else None

    def note(self, text: str) -> None:
        """Append a line to the robot log, with the wall-clock time."""
        with self.lock:
            self.log.append(f"{time.strftime('%H:%M:%S')}  {text}")
            del self.log[:-500]

    def log_text(self) -> str:
        with self.lock:
            return "\n".join(reversed(self.log))

    # ------------------------------------------------------------ plan editing

    def set_plan(self, events: list[str]) -> None:
        self.plan = list(events)
        self.active = 0
        self.imagined.clear()
        self.imagined_from.clear()

    def _forget_from(self, index: int) -> None:
        for k in [k for k in self.imagined if k >= index]:
            self.imagined.pop(k)
            self.imagined_from.pop(k, None)

    def add_event(self, text: str) -> None:
        text = check_event_text(text)
        if len(self.plan) >= MAX_PLAN_EVENTS:
            raise PlanError(f"the plan already has {MAX_PLAN_EVENTS} events, the most it can hold")
        self.plan.append(text)
        self.active = len(self.plan) - 1

    def edit_event(self, index: int, text: str) -> None:
        self._check_index(index)
        self.plan[index] = check_event_text(text)
        self._forget_from(index)

    def insert_event(self, index: int, text: str) -> None:
        text = check_event_text(text)
        if len(self.plan) >= MAX_PLAN_EVENTS:
            raise PlanError(f"the plan already has {MAX_PLAN_EVENTS} events, the most it can hold")
        index = min(max(index, 0), len(self.plan))
        self.plan.insert(index, text)
        self._forget_from(index)
        self.active = index

    def move_event(self, index: int, offset: int) -> None:
        self._check_index(index)
        j = index + offset
        if not 0 <= j < len(self.plan):
            raise PlanError(f"event {index + 1} is already {'first' if offset < 0 else 'last'}")
        self.plan[index], self.plan[j] = self.plan[j], self.plan[index]
        self._forget_from(min(index, j))
        self.active = j

    def delete_event(self, index: int) -> None:
        self._check_index(index)
        del self.plan[index]
        self._forget_from(index)
        self.active = min(index, max(len(self.plan) - 1, 0))

    def _check_index(self, index: int) -> None:
        if not self.plan:
            raise PlanError("the plan is empty: add an event first")
        if not 0 <= index < len(self.plan):
            raise PlanError(f"no event {index + 1}: the plan has {len(self.plan)} events")

    # ------------------------------------------------------------ plan display

    def choices(self) -> list[str]:
        """Radio labels of the plan: '1. grasp the block', with a mark on imagined events."""
        return [plan_label(i, t, i in self.imagined) for i, t in enumerate(self.plan)]

    def active_label(self) -> str | None:
        return self.choices()[self.active] if self.plan else None


def plan_label(index: int, text: str, imagined: bool = False) -> str:
    return f"{index + 1}. {text}" + ("  ✓ imagined" if imagined else "")


def label_index(label: str | None) -> int | None:
    """The event index of a plan radio label ('3. push down' -> 2)."""
    if not label:
        return None
    head = str(label).split(".", 1)[0]
    return int(head) - 1 if head.isdigit() else None


def new_session() -> Session:
    """Factory for `gr.State`: a fresh Session per browser tab."""
    return Session()
