"""lean_graph_notes: an unrolled GRU's expected slices are told apart from per-step indexing worth removing."""

from edgekd.host.export.graph import lean_graph_notes, movement_share


def test_strided_slices_of_the_split_gru_are_expected():
    notes = lean_graph_notes({"STRIDED_SLICE": 38, "FULLY_CONNECTED": 40}, steps=11)
    assert len(notes) == 1 and "expected for an unrolled GRU" in notes[0]


def test_per_step_gathers_and_many_slices_are_flagged():
    notes = lean_graph_notes({"GATHER": 11, "STRIDED_SLICE": 60, "FULLY_CONNECTED": 10}, steps=11)
    assert sum("per-step indexing" in n for n in notes) == 2


def test_few_movement_ops_give_no_notes_and_share_counts_them():
    assert lean_graph_notes({"STRIDED_SLICE": 3, "CONV_2D": 5}, steps=11) == []
    assert movement_share({"RESHAPE": 1, "CONV_2D": 3}, "tflite") == 0.25
