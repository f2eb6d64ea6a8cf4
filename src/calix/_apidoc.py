"""Writes the API reference (``docs/api.md``) from the public modules' docstrings.

Run ``python -m calix._apidoc docs/api.md`` (``make docs``). Every name in a public module's
``__all__`` gets its signature and its docstring; classes list their public methods.
"""

from __future__ import annotations

import importlib
import inspect
import re
import sys
from pathlib import Path

#: public modules, in the order data flows through them
MODULES = (
    "calix.models", "calix.perturb", "calix.calibrate", "calix.explain", "calix.metrics",
    "calix.uncertainty", "calix.train", "calix.data", "calix.zoo", "calix.nets",
    "calix.model_io", "calix.plot", "calix.parallel", "calix.report", "calix.exceptions",
)

_ADDRESS = re.compile(r" at 0x[0-9a-f]+")


def _signature(obj: object) -> str:
    try:
        sig = str(inspect.signature(obj))
    except (TypeError, ValueError):
        return "(...)"
    return _ADDRESS.sub("", sig)


def _doc(obj: object) -> str:
    return inspect.cleandoc(obj.__doc__) if obj.__doc__ else "*(no docstring)*"


def _members(cls: type) -> list[tuple[str, object]]:
    out = []
    for name, member in vars(cls).items():
        if name.startswith("_") or not (inspect.isfunction(member) or
                                         isinstance(member, (property, classmethod,
                                                             staticmethod))):
            continue
        out.append((name, member))
    return out


def module_section(name: str) -> str:
    """The reference of one module, as Markdown."""
    mod = importlib.import_module(name)
    lines = [f"## `{name}`", "", _doc(mod), ""]
    for attr in getattr(mod, "__all__", []):
        obj = getattr(mod, attr, None)
        if obj is None:
            continue
        if inspect.isclass(obj):
            lines += [f"### class `{attr}{_signature(obj)}`", "", _doc(obj), ""]
            for meth, member in _members(obj):
                target = member.fget if isinstance(member, property) else getattr(
                    member, "__func__", member)
                sig = "" if isinstance(member, property) else _signature(target)
                lines += [f"#### `{attr}.{meth}{sig}`", "", _doc(target), ""]
        elif callable(obj):
            lines += [f"### `{attr}{_signature(obj)}`", "", _doc(obj), ""]
        else:
            lines += [f"### `{attr}`", "", f"`{_ADDRESS.sub('', repr(obj))[:300]}`", ""]
    return "\n".join(lines)


def render() -> str:
    """The whole API reference."""
    head = ["# calix API reference", "",
            "Generated from the docstrings by `python -m calix._apidoc docs/api.md` "
            "(`make docs`); do not edit by hand.", ""]
    toc = [f"- [`{m}`](#{m.replace('.', '')})" for m in MODULES]
    return "\n".join(head + toc + [""] + [module_section(m) for m in MODULES]) + "\n"


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    text = render()
    if args:
        Path(args[0]).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)


if __name__ == "__main__":
    main()
