"""Rewrite a generated block of a README (``<!-- NAME:begin ... -->`` ... ``<!-- NAME:end -->``)."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path


def update_block(readme, source_path, begin: str, end: str, render: Callable[[str], str], *,
                 check: bool = False) -> bool:
    """Replace the text from ``begin`` through ``end`` in ``readme`` by ``render(source)``.

    ``source`` is ``source_path`` relative to the README's folder when it lies below it (else as
    given); ``render`` returns the whole block, markers included. Returns True when the block
    already matched. With ``check=True`` nothing is written.

    Raises:
        ValueError: ``readme`` has no ``begin ... end`` block.
    """
    readme, source_path = Path(readme), Path(source_path)
    text = readme.read_text(encoding="utf-8")
    i, j = text.find(begin), text.find(end)
    if i < 0 or j < i:
        raise ValueError(f"readme: {readme} has no {begin} ... {end} block")
    try:
        source = source_path.resolve().relative_to(readme.resolve().parent).as_posix()
    except ValueError:
        source = source_path.as_posix()
    new = text[:i] + render(source) + text[j + len(end):]
    if not check and new != text:
        readme.write_text(new, encoding="utf-8")
    return new == text
