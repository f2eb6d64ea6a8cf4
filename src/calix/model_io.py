"""Loading a user's saved model: TorchScript, a torch ``state_dict``, scikit-learn files.

:func:`load_model` reads a model file and returns it as a calix :class:`~calix.models.Model`
(through :func:`calix.wrap`). The kind of file is read from its content, not its name:

- a **TorchScript** archive (``torch.jit.save``; ``torch.jit.load`` with
  ``map_location="cpu"``);
- a **state_dict** saved with ``torch.save(module.state_dict(), path)`` (read with
  ``torch.load(..., weights_only=True)``, which only builds tensors and plain containers), loaded
  into the module named by ``architecture``: a name of :data:`ARCHITECTURES` (the
  :mod:`calix.nets` networks and the zoo's ``cnn`` / ``mlp``) with ``architecture_kwargs``, a
  class or factory called with them, or an ``nn.Module`` instance to load into. Checkpoints
  that hold the weights under ``"state_dict"`` or ``"model_state_dict"`` are read as well;
- a **scikit-learn** estimator saved with joblib or pickle. Reading such a file *unpickles*
  it, and unpickling runs whatever code the file names: a file from someone else can take
  over the machine. It is refused unless ``trusted=True`` says that the file is your own (or
  comes from someone you trust);
- a **skops** file (``.skops``, :func:`skops.io.dump`), when the optional ``skops`` package is
  installed: skops loads only types it is told to trust, so it is the safe way to share a
  scikit-learn model. Types beyond skops' own defaults are named in the error; pass them as
  ``trusted=[...]`` (or ``trusted=True`` to trust every type the file names).

Every failure is a :class:`ModelFileError` (a ``ValueError``) naming the file and the fix.

Example
-------
>>> import torch
>>> from calix.model_io import load_model
>>> torch.save(net.state_dict(), "net.pt")                             # doctest: +SKIP
>>> model = load_model("net.pt", architecture="resnet18",
...                    architecture_kwargs={"num_classes": 10})          # doctest: +SKIP
>>> model = load_model("scripted.pt")                                  # doctest: +SKIP
>>> model = load_model("clf.joblib", trusted=True)  # your own file      # doctest: +SKIP
"""

from __future__ import annotations

import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from calix import _names
from calix.models import Model, wrap

__all__ = ["load_model", "ModelFileError", "ARCHITECTURES", "model_file_kind"]


class ModelFileError(ValueError):
    """A model file that cannot be loaded; the message names the file and the fix."""


def _architectures() -> dict[str, Callable[..., nn.Module]]:
    import calix.zoo  # noqa: F401 (registers the zoo's cnn and mlp)
    from calix.nets import ARCHITECTURES as registry

    return dict(registry)


#: architecture names :func:`load_model` builds a module from (called with
#: ``architecture_kwargs``): ``resnet18``, ``resnet50``, ``vit_tiny`` (:mod:`calix.nets`),
#: ``cnn`` and ``mlp`` (:class:`calix.zoo.CNN`, :class:`calix.zoo.MLP`): the names of the
#: registry :data:`calix.nets.ARCHITECTURES`
ARCHITECTURES = _names.ARCHITECTURES

_PICKLE_SUFFIXES = {".joblib", ".pkl", ".pickle", ".sav"}
_TORCH_SUFFIXES = {".pt", ".pth", ".bin", ".ckpt"}


def model_file_kind(path: str | Path) -> str:
    """What ``path`` holds, from its content: ``"torchscript"``, ``"state_dict"`` (a
    ``torch.save`` file), ``"skops"`` or ``"pickle"`` (joblib or pickle).

    Raises
    ------
    ModelFileError
        The file is missing, a folder, empty, or none of these kinds.
    """
    p = Path(path)
    if not p.exists():
        raise ModelFileError(f"model file not found: {p}")
    if p.is_dir():
        raise ModelFileError(f"{p} is a folder, not a model file")
    try:
        with open(p, "rb") as f:
            head = f.read(8)
    except OSError as exc:
        raise ModelFileError(f"{p} cannot be read: {exc.strerror or exc}") from exc
    if not head:
        raise ModelFileError(f"{p} is empty (0 bytes), not a model file; save the model again")
    if zipfile.is_zipfile(p):
        try:
            with zipfile.ZipFile(p) as z:
                names = z.namelist()
        except (zipfile.BadZipFile, OSError) as exc:
            raise ModelFileError(f"{p} is a damaged zip archive ({exc}); save the model again"
                                 ) from exc
        base = {n.split("/", 1)[-1] for n in names}
        if "constants.pkl" in base or any(n.startswith("code/") for n in base):
            return "torchscript"
        if "data.pkl" in base:
            return "state_dict"
        if "schema.json" in base:
            return "skops"
        raise ModelFileError(
            f"{p} is a zip archive but neither TorchScript, a torch.save file nor a skops "
            f"file (it holds {sorted(names)[:5]}); {_KINDS_HINT}")
    # pickle protocol 2+ opens with 0x80; joblib's compressed files with a zlib, gzip, bz2,
    # xz or lz4 header
    if head[:1] == b"\x80" or head[:2] in (b"\x78\x01", b"\x78\x5e", b"\x78\x9c", b"\x78\xda",
                                           b"\x1f\x8b", b"BZ") or head[:6] == b"\xfd7zXZ\x00" \
            or head[:4] == b"\x04\x22\x4d\x18" or head.startswith(b"ZF"):
        return "state_dict" if p.suffix.lower() in _TORCH_SUFFIXES and head[:1] == b"\x80" \
            else "pickle"
    raise ModelFileError(f"{p} is not a model file calix can read; {_KINDS_HINT}")


_KINDS_HINT = ("calix reads TorchScript (torch.jit.save), a state_dict (torch.save("
               "module.state_dict(), path)) with architecture=, a skops file, or a "
               "scikit-learn model saved with joblib (with trusted=True)")


def load_model(
    path: str | Path,
    *,
    architecture: str | nn.Module | Callable[..., nn.Module] | None = None,
    architecture_kwargs: dict[str, Any] | None = None,
    trusted: bool | list[str] = False,
    **wrap_kwargs: Any,
) -> Model:
    """Load the model saved in ``path`` and wrap it as a calix :class:`~calix.models.Model`.

    Parameters
    ----------
    path : a TorchScript file, a torch ``state_dict`` file, a joblib / pickle file of a
        scikit-learn estimator, or a ``.skops`` file (the kind is read from the content).
    architecture : for a state_dict: a name of :data:`ARCHITECTURES`, a class or factory
        returning an ``nn.Module``, or an ``nn.Module`` instance (the weights are loaded into
        it, in place). Every key of the file must match the module's (``strict`` loading).
    architecture_kwargs : keyword arguments for a named or callable ``architecture``, e.g.
        ``{"num_classes": 10, "width": 0.25}``.
    trusted : for a joblib / pickle file: ``True`` says the file is yours and may be
        unpickled. **Unpickling runs code named in the file**, so a pickle from an untrusted
        source can do anything your account can; without ``trusted=True`` such a file is
        refused. For a skops file: a list of type names to trust beyond skops' defaults, or
        ``True`` to trust every type the file names.
    **wrap_kwargs : passed to :func:`calix.wrap` (``task``, ``input_shape``, ``batch_size``,
        ``device``, ``output``, ``autocast``, ``channels_last``).

    Returns
    -------
    Model
        A torch module in eval mode, on ``device`` (default: the CPU), or a scikit-learn
        estimator, wrapped.

    Raises
    ------
    ModelFileError
        A ``ValueError`` naming ``path``: missing, empty, corrupt, of no kind calix reads, a
        pickle without ``trusted=True``, a state_dict without ``architecture`` or with weights
        that do not fit it, untrusted skops types, or a missing ``skops`` package.
    """
    p = Path(path)
    kind = model_file_kind(p)
    if kind != "state_dict" and (architecture is not None or architecture_kwargs):
        raise ModelFileError(f"{p} holds a {_KIND_NAMES[kind]}, which needs no architecture; "
                             "leave architecture and architecture_kwargs out")
    if kind == "torchscript":
        obj: Any = _load_torchscript(p)
    elif kind == "state_dict":
        obj = _load_state_dict(p, architecture, architecture_kwargs or {})
    elif kind == "skops":
        obj = _load_skops(p, trusted)
    else:
        obj = _load_pickle(p, trusted)
    try:
        return wrap(obj, **wrap_kwargs)
    except TypeError as exc:
        raise ModelFileError(f"{p} holds a {type(obj).__name__}, which calix cannot wrap "
                             f"({exc})") from exc


_KIND_NAMES = {"torchscript": "TorchScript module", "state_dict": "torch state_dict",
               "skops": "skops file", "pickle": "pickled (joblib) model"}


def _first_line(exc: BaseException, limit: int = 300) -> str:
    text = f"{type(exc).__name__}: {exc}".strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:limit]


def _load_torchscript(p: Path) -> nn.Module:
    try:
        module = torch.jit.load(str(p), map_location="cpu")
    except Exception as exc:  # torch raises RuntimeError and others for a damaged archive
        raise ModelFileError(f"{p} is not a loadable TorchScript file ({_first_line(exc)}); "
                             "save the model again with torch.jit.save") from None
    return module.eval()


def _load_state_dict(p: Path, architecture: Any, kwargs: dict[str, Any]) -> nn.Module:
    if architecture is None:
        raise ModelFileError(
            f"{p} holds torch weights (a state_dict) but not the network they belong to; pass "
            f"architecture= (one of {list(ARCHITECTURES)} with architecture_kwargs, a module "
            "class, or an nn.Module instance to load into), or save the model as TorchScript "
            "(torch.jit.save(torch.jit.script(model), path))")
    try:
        payload = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for damaged or non-weights files
        reason = _first_line(exc)
        hint = ("it holds Python objects beyond tensors (a whole pickled module?): save "
                "module.state_dict() or TorchScript instead" if "weights_only" in str(exc)
                or "Unsupported global" in str(exc) else "it is damaged or another format")
        raise ModelFileError(f"{p} cannot be read as torch weights with weights_only=True "
                             f"({reason}); {hint}") from None
    state = _find_state(payload)
    if state is None:
        raise ModelFileError(
            f"{p} holds a {type(payload).__name__}, not a state_dict (a dict of tensors, "
            "possibly under 'state_dict' or 'model_state_dict'); save module.state_dict()")
    module = _build(p, architecture, kwargs)
    try:
        module.load_state_dict(state)
    except RuntimeError as exc:
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        detail = " ".join(lines[:3])[:400]
        raise ModelFileError(f"the weights in {p} do not fit the architecture "
                             f"{type(module).__name__} ({detail}); pass the architecture and "
                             "architecture_kwargs the weights were trained with") from None
    return module.eval()


def _find_state(payload: Any) -> dict[str, torch.Tensor] | None:
    def is_state(d: Any) -> bool:
        return isinstance(d, dict) and bool(d) and all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in d.items())

    if is_state(payload):
        return payload
    if isinstance(payload, dict):
        for key in ("state_dict", "model_state_dict"):
            if is_state(payload.get(key)):
                return payload[key]
    return None


def _build(p: Path, architecture: Any, kwargs: dict[str, Any]) -> nn.Module:
    if isinstance(architecture, nn.Module):
        if kwargs:
            raise ModelFileError(f"architecture_kwargs apply to a named or callable "
                                 f"architecture, not to the module instance given for {p}")
        return architecture
    if isinstance(architecture, str):
        table = _architectures()
        if architecture not in table:
            raise ModelFileError(f"unknown architecture {architecture!r} for {p}; choose one "
                                 f"of {list(ARCHITECTURES)}, or pass a module class or instance")
        make = table[architecture]
    elif callable(architecture):
        make = architecture
    else:
        raise ModelFileError(f"architecture for {p} must be a name, a module class or an "
                             f"nn.Module instance, got {type(architecture).__name__}")
    try:
        module = make(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ModelFileError(f"cannot build the architecture {getattr(make, '__name__', make)!r}"
                             f" for {p} from architecture_kwargs={kwargs} ({exc})") from exc
    if not isinstance(module, nn.Module):
        raise ModelFileError(f"architecture for {p} returned a {type(module).__name__}, not "
                             "an nn.Module")
    return module


def _load_pickle(p: Path, trusted: bool | list[str]) -> Any:
    if trusted is not True:
        raise ModelFileError(
            f"{p} is a pickle (joblib) file: loading it unpickles it, and unpickling runs code "
            "that the file names, so a file from someone else can run anything with your "
            "permissions. calix loads it only with trusted=True (on the command line: "
            "--trusted), which says the file is your own or from someone you trust. To share "
            "scikit-learn models safely, save them with skops (skops.io.dump) instead")
    import joblib

    try:
        return joblib.load(p)
    except Exception as exc:  # unpickling raises anything; none of it names the file
        raise ModelFileError(f"{p} cannot be unpickled ({_first_line(exc)}): it is damaged, "
                             "or needs a package (or version) this environment lacks") from None


def _load_skops(p: Path, trusted: bool | list[str]) -> Any:
    try:
        import skops.io as sio
    except ImportError:
        raise ModelFileError(f"{p} is a skops file, and loading it needs the skops package "
                             "(pip install skops)") from None
    try:
        untrusted = list(sio.get_untrusted_types(file=p))
    except Exception as exc:  # a damaged archive or schema
        raise ModelFileError(f"{p} is not a readable skops file ({_first_line(exc)})") from None
    if trusted is True:
        allowed = untrusted
    elif trusted is False:
        allowed = []
    else:
        allowed = [str(t) for t in trusted]
    missing = [t for t in untrusted if t not in allowed]
    if missing:
        raise ModelFileError(
            f"{p} names types that skops does not trust by default: {missing}; check them and "
            "pass trusted=[...] with those names (or trusted=True to trust them all)")
    try:
        return sio.load(p, trusted=allowed or None)
    except Exception as exc:
        raise ModelFileError(f"{p} could not be loaded by skops ({_first_line(exc)})") from None
