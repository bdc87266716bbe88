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
