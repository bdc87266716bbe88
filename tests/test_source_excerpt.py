"""source_excerpt shows the current lines of the library and fails when its markers are gone."""
import inspect

import pytest

from tood_lib.analysis.source import source_excerpt
from tood_lib.model.t_head import TaskAlignedHead


def test_excerpt_is_the_current_source_with_its_line_numbers():
    shown = source_excerpt(TaskAlignedHead.forward_level, "inter_feats = []", "inter_feat = torch.cat").data
    lines, start = inspect.getsourcelines(TaskAlignedHead.forward_level)
    first = next(i for i, line in enumerate(lines) if "inter_feats = []" in line)
    assert f"lines {start + first}–" in shown and "tood_lib/model/t_head.py" in shown
    assert "for conv in self.inter_convs:" in shown and shown.rstrip().endswith("```")
    assert "\n    x = conv(x)" in shown  # dedented to the first line's level


def test_missing_marker_is_a_loud_error():
    with pytest.raises(ValueError, match="out of date"):
        source_excerpt(TaskAlignedHead.forward_level, "no such line")
    with pytest.raises(ValueError, match="out of date"):
        source_excerpt(TaskAlignedHead.forward_level, "inter_feats = []", "no such line")


def test_a_function_is_shown_whole_by_default():
    from tood_lib.assign import tal

    shown = source_excerpt(tal._pair_metric).data
    assert "def _pair_metric(" in shown and "return s * u.pow(beta), u" in shown
    # the heading's line range covers the whole function
    lines, start = inspect.getsourcelines(tal._pair_metric)
    assert f"lines {start}–{start + len(lines) - 1}" in shown


def test_a_decorated_function_is_attributed_to_its_own_file():
    # task_aligned_assign wears @torch.no_grad(): the excerpt is ours, not torch's _contextlib.py
    from tood_lib.assign.tal import task_aligned_assign

    shown = source_excerpt(task_aligned_assign, "def task_aligned_assign", "def task_aligned_assign").data
    assert "tood_lib/assign/tal.py" in shown and "_contextlib" not in shown
    assert "(`task_aligned_assign`)" in shown
