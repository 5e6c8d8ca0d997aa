"""Progress bars: what the label says while a job waits or runs, and no bar of its own for the end."""
from __future__ import annotations

import io

from gigaudit.progress import OperationProgress, stage_label
from gigaudit.v1 import operation_metadata_pb2 as metadata_pb


def meta(**fields) -> metadata_pb.OperationMetadata:
    return metadata_pb.OperationMetadata(**fields)


def test_labels_say_the_queue_position_the_stage_and_retries():
    assert stage_label(meta(state=metadata_pb.OPERATION_STATE_QUEUED, queue_position=3)) == "queued (3 ahead)"
    assert stage_label(meta(state=metadata_pb.OPERATION_STATE_QUEUED)) == "queued (next)"
    assert stage_label(meta(state=metadata_pb.OPERATION_STATE_RUNNING, kind="validate_model")) == \
        "checking the weights"
    assert stage_label(meta(state=metadata_pb.OPERATION_STATE_RUNNING, stage="graph", attempt=2)) == \
        "graph (attempt 2)"


def test_bars_show_done_of_total_and_the_end_adds_no_bar():
    out = io.StringIO()
    bars = OperationProgress(True, file=out)
    bars.update(meta(state=metadata_pb.OPERATION_STATE_RUNNING, stage="graph", done=40, total=320))
    bars.update(meta(state=metadata_pb.OPERATION_STATE_SUCCEEDED, stage="graph", done=320, total=320))
    bars.update(meta(state=metadata_pb.OPERATION_STATE_SUCCEEDED))
    bars.close()
    text = out.getvalue()
    assert "40/320" in text and "succeeded" not in text
