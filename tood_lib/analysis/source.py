"""Show the lines of ``tood_lib`` that compute an equation, read from the source itself.

A notebook that prints an equation next to a copy of the code drifts as soon as the code changes;
:func:`source_excerpt` reads the current source instead and fails loudly (so CI fails) when the lines
it was asked for are no longer there.
"""
from __future__ import annotations

import inspect
from pathlib import Path

from IPython.display import Markdown

PACKAGE_ROOT = Path(__file__).resolve().parents[1]


def source_excerpt(obj, first: str | None = None, last: str | None = None, title: str = "") -> Markdown:
    """The lines of ``obj``'s source from the first line containing ``first`` (default: its first line,
    decorators included) through the next line containing ``last`` (default: the function's last
    line), as a Markdown code block headed by the file and line numbers; so ``source_excerpt(f)`` is
    the whole of ``f``. A decorated function (``@torch.no_grad()``) is unwrapped first, so that the
    excerpt and its heading are the function's own and not the decorator's. Raises ValueError naming
    the object if either marker is missing."""
    obj = inspect.unwrap(obj)
    lines, start = inspect.getsourcelines(obj)
    begin = 0 if first is None else next((i for i, line in enumerate(lines) if first in line), None)
    if begin is None:
        raise ValueError(f"{obj.__qualname__}: no line contains {first!r}; the notebook's excerpt is out of date")
    end = len(lines) - 1 if last is None else next((i for i in range(begin, len(lines)) if last in lines[i]), None)
    if end is None:
        raise ValueError(f"{obj.__qualname__}: no line after {first!r} contains {last!r}; the excerpt is out of date")
    chunk = lines[begin:end + 1]
    indent = min(len(line) - len(line.lstrip()) for line in chunk if line.strip())
    code = "".join(line[indent:] if line.strip() else "\n" for line in chunk).rstrip()
    path = Path(inspect.getsourcefile(obj)).resolve()
    where = path.relative_to(PACKAGE_ROOT.parent) if path.is_relative_to(PACKAGE_ROOT.parent) else path.name
    head = f"{title + ' — ' if title else ''}`{where}`, lines {start + begin}–{start + end} (`{obj.__qualname__}`)"
    return Markdown(f"{head}\n\n```python\n{code}\n```")
