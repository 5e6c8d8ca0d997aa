"""Progress bars of an operation: one per stage, with done/total, elapsed time and an ETA, and the queue position
while the job waits. A ticker refreshes the bar every second, so elapsed time moves when no update comes."""
from __future__ import annotations

import sys
import threading

from gigaudit.v1 import operation_metadata_pb2 as metadata_pb

TICK_S = 1.0


def stage_label(meta: metadata_pb.OperationMetadata) -> str:
    """"queued (2 ahead)", "decompose", "running" …"""
    state = metadata_pb.OperationState.Name(meta.state).removeprefix("OPERATION_STATE_").lower()
    if meta.state == metadata_pb.OPERATION_STATE_QUEUED:
        return f"queued ({meta.queue_position} ahead)" if meta.queue_position else "queued (next)"
    label = meta.stage or _KIND_LABELS.get(meta.kind, state)
    return f"{label} (attempt {meta.attempt})" if meta.attempt > 1 else label


_KIND_LABELS = {"validate_model": "checking the weights", "list_layers": "listing layers"}
_FINISHED = (metadata_pb.OPERATION_STATE_SUCCEEDED, metadata_pb.OPERATION_STATE_FAILED,
             metadata_pb.OPERATION_STATE_CANCELLED)


class OperationProgress:
    """A tqdm bar per stage of an operation's metadata (disabled: does nothing)."""

    def __init__(self, enabled: bool, file=None):
        self.enabled, self.file = enabled, file or sys.stderr
        self.bar, self.stage = None, None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None

    def update(self, meta: metadata_pb.OperationMetadata) -> None:
        if not self.enabled:
            return
        from tqdm import tqdm

        label = stage_label(meta)
        stage_key = "queued" if meta.state == metadata_pb.OPERATION_STATE_QUEUED else label
        if meta.state in _FINISHED and (self.bar is None or not meta.stage):
            return  # the last stage's bar already shows the end; no bar of its own for "succeeded"
        with self._lock:
            if stage_key != self.stage:
                self._close_bar()
                fmt = ("{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}]"
                       if meta.total else "{desc} [{elapsed}]")
                self.bar = tqdm(desc=label, total=meta.total or None, unit="", leave=True, file=self.file,
                                bar_format=fmt, dynamic_ncols=True)
                self.stage = stage_key
            self.bar.set_description_str(label, refresh=False)
            if meta.total and self.bar.total != meta.total:
                self.bar.total = meta.total
            self.bar.n = meta.done
            self.bar.refresh()
        if self._ticker is None:
            self._ticker = threading.Thread(target=self._tick, name="gigaudit-progress", daemon=True)
            self._ticker.start()

    def _tick(self) -> None:
        while not self._stop.wait(TICK_S):
            with self._lock:
                if self.bar is not None:
                    self.bar.refresh()

    def _close_bar(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def close(self) -> None:
        self._stop.set()
        with self._lock:
            self._close_bar()
