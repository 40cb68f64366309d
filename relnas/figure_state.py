"""A figure's state as a key, so that ``relnas.figures.savefig`` writes a figure file only when
its bytes would change.

The key is the SHA-256 of everything that decides a saved figure: the pickled ``Figure`` (its
artists, data, texts, layout and size), the dpi (the format is in the ``marker``; savefig's
fixed options are ``RECIPE``), the rcParams, the matplotlib and Pillow versions and the fonts
matplotlib can choose from. What in a pickled figure is not its content is left out: the ids
of the transforms' weak back-references (``TransformNode._parents``, different in every
process), pyplot's number of the figure (how many came before it) and the location of classes
defined inside functions (pickled by their name, with their state). Computing it took 8 % of
saving Boston's figures as PNG and PDF (BENCHMARKS.md "Figures written only when they
change"). A file holds a key when the key's text is in it and it ends as a complete PNG or PDF
does (``holds``); ``savefig`` writes the key into each file's metadata.
"""
from __future__ import annotations

import hashlib
import io
import os
import pickle

# Bumped when savefig's way of writing a figure changes in a way the key does not see.
RECIPE = "relnas-figure-1"
ENDINGS = {"png": b"IEND\xaeB`\x82", "pdf": b"%%EOF"}  # how a complete file ends


def _unpicklable(name: str):  # stands for a function-local class; never called
    raise TypeError(f"{name} is a class defined inside a function")


class _Pickler(pickle.Pickler):
    def reducer_override(self, obj):
        from matplotlib.figure import Figure
        from matplotlib.transforms import TransformNode
        for kind, left_out in ((TransformNode, "_parents"), (Figure, "_number")):
            if isinstance(obj, kind):
                state = dict(obj.__getstate__())
                state.pop(left_out, None)
                return type(obj), (), state
        kind = obj if isinstance(obj, type) else type(obj)
        if "<locals>" in getattr(kind, "__qualname__", ""):
            name = f"{kind.__module__}.{kind.__qualname__}"
            if obj is kind:
                return _unpicklable, (name,)
            state = obj.__getstate__() if hasattr(obj, "__getstate__") else vars(obj)
            return _unpicklable, (name,), state
        return NotImplemented


def _environment() -> bytes:
    import matplotlib
    import PIL
    from matplotlib import font_manager
    params = sorted((k, repr(v)) for k, v in matplotlib.rcParams.items() if k != "backend")
    fonts = sorted(os.path.basename(f.fname) for f in font_manager.fontManager.ttflist)
    return repr((RECIPE, matplotlib.__version__, PIL.__version__, params, fonts)).encode()


def state_key(fig, dpi: int) -> str | None:
    """The key of ``fig`` saved at ``dpi`` (hex SHA-256; ``marker`` adds the format), or None
    when something in the figure cannot be pickled (then its files are always written)."""
    buf = io.BytesIO()
    try:
        _Pickler(buf, protocol=pickle.HIGHEST_PROTOCOL).dump(fig)
    except (pickle.PicklingError, TypeError, AttributeError):
        return None
    digest = hashlib.sha256(_environment())
    digest.update(repr(dpi).encode())
    digest.update(buf.getvalue())
    return digest.hexdigest()


def marker(fmt: str, key: str) -> str:
    """The metadata text that names ``key`` in a ``fmt`` figure file."""
    return f"relnas figure state {fmt} {key}"


# Left out of a file so that a rerun gives the same bytes: dates and software versions.
_UNDATED = {"png": {"Software": None}, "pdf": {"Creator": None, "Producer": None,
                                              "CreationDate": None}}
_KEY_FIELD = {"png": "Comment", "pdf": "Keywords"}


def metadata(fmt: str, key: str | None) -> dict | None:
    """``savefig``'s metadata for a ``fmt`` file: no dates or versions, and ``marker`` (PNG and
    PDF, when there is a key)."""
    undated = _UNDATED.get(fmt)
    if undated is None or key is None:
        return undated
    return {**undated, _KEY_FIELD[fmt]: marker(fmt, key)}


def holds(path: str | os.PathLike, fmt: str, key: str) -> bool:
    """Whether the file at ``path`` is a complete ``fmt`` file written for ``key``."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return False
    return (fmt in ENDINGS and marker(fmt, key).encode() in data
            and data.rstrip(b"\r\n").endswith(ENDINGS[fmt]))
