"""ONNX export of a :class:`~ldct.denoiser.Denoiser` and the ONNX Runtime backend.

``ldct export MODEL -o model.onnx`` writes the network with dynamic batch, height and width (PyTorch's
dynamo exporter), the ldct metadata as the ONNX model's ``ldct_meta`` property, and checks the ONNX
Runtime output against PyTorch's before the file appears. The exported graph expects H and W that are
multiples of the network's ``size_multiple`` (``ldct_meta``): the exporter mis-sizes the network's own
pad-and-crop for other sizes, so :class:`OrtNetwork` pads (as the network does) and crops outside. ``Denoiser.use_backend
("onnxruntime")`` (``ldct denoise --backend onnxruntime``) exports once into the cache
(``$XDG_CACHE_HOME/ldct/onnx/<hash of spec and weights>.onnx``) and runs a CPU session.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import sys
import warnings
from pathlib import Path
from typing import Any

import torch

from ldct.errors import LdctError

OPSET = 18
#: largest |ONNX Runtime - PyTorch| accepted on the check input (network range [-1, 1])
MAX_DIFF = 1e-3


def _require() -> Any:
    try:
        import onnxruntime as ort
    except ImportError:
        raise LdctError("ONNX Runtime is not installed: pip install onnxruntime onnx onnxscript") from None
    return ort


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "ldct" / "onnx"


def _digest(den: Any) -> str:
    """Cache key: the network's spec, code and weights, and the ldct/torch/opset versions that exported it."""
    import inspect

    import ldct

    h = hashlib.sha256(json.dumps(getattr(den.net, "ldct_spec", None) or den.meta.get("network"), sort_keys=True,
                                  default=str).encode())
    h.update(f"{den.dose_conditioned}|{den.channels}|{torch.__version__}|{ldct.__version__}|{OPSET}".encode())
    for cls in type(den.net).__mro__:  # the code that defines the graph
        if cls.__module__.startswith("ldct."):
            try:
                h.update(inspect.getsource(sys.modules[cls.__module__]).encode())
            except (OSError, TypeError, KeyError):
                h.update(cls.__qualname__.encode())
    for k, v in sorted(den.net.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:24]


def export_onnx(den: Any, path: str | Path, *, size: int = 64, check: bool = True) -> Path:
    """Write ``den``'s network to ``path`` (atomically) as ONNX with dynamic (batch, height, width).

    Inputs: ``x`` (B, C, H, W) float32 network range (and ``dose`` (B,) for a dose-conditioned network);
    output ``y``. With ``check``, ONNX Runtime must reproduce PyTorch within :data:`MAX_DIFF` on a
    (2, C, size+8, size) input, else LdctError.
    """
    import onnx

    from ldct.atomic import atomic_file

    if den.backend != "torch":
        raise LdctError("export the PyTorch model (this one already runs on ONNX Runtime)")
    net = den.net.cpu().eval()
    m = _multiple(net)
    x = torch.randn(2, den.channels, size, size).clamp(-1, 1)  # size: a multiple of every size_multiple used
    args: tuple[Any, ...] = (x,)
    names = ["x"]
    dyn: dict[str, Any] = {"x": {0: torch.export.Dim("batch"), 2: torch.export.Dim("height"),
                                 3: torch.export.Dim("width")}}
    if den.dose_conditioned:
        args = (x, torch.full((2,), 0.25))
        names.append("dose")
        dyn["dose"] = {0: dyn["x"][0]}
    path = Path(path)
    with atomic_file(path) as tmp:
        try:
            with torch.no_grad(), _quiet():
                prog = torch.onnx.export(net, args, dynamo=True, input_names=names, output_names=["y"],
                                         dynamic_shapes=dyn, opset_version=OPSET, verbose=False)
        except Exception as exc:  # noqa: BLE001  (the exporter raises many types; name the network)
            raise LdctError(f"cannot export {den.describe()} to ONNX ({type(exc).__name__}: "
                            f"{str(exc).strip().splitlines()[0][:200]})", den.source) from None
        model = prog.model_proto
        meta = {k: v for k, v in den.meta.items() if k not in ("recipe",)}
        meta.update(hu_window=[den.window.lo, den.window.hi], scale=den.scale, channels=den.channels,
                    dose_conditioned=den.dose_conditioned, data_kind=den.data_kind, name=den.name,
                    size_multiple=m[0], min_size=m[1])
        entry = model.metadata_props.add()
        entry.key, entry.value = "ldct_meta", json.dumps(meta, default=str)
        try:
            onnx.save_model(model, str(tmp))
        except ValueError as exc:  # e.g. a protobuf over 2 GB
            raise LdctError(f"cannot write the ONNX model ({str(exc)[:200]})", path) from None
        if check:  # an odd size too: the padding outside the graph must reproduce the network's own
            odd = tuple(torch.cat([a, a[:, :, :3]], dim=2)[..., :-5] if a.ndim == 4 else a for a in args)
            diff = max(_max_diff(tmp, net, args, den.scale), _max_diff(tmp, net, odd, den.scale))
            if not diff <= MAX_DIFF:
                raise LdctError(f"the ONNX export of {den.describe()} differs from PyTorch by {diff:.2g} "
                                f"(more than {MAX_DIFF:g}); not written", path)
    return path


@contextlib.contextmanager
def _quiet() -> Any:
    """The exporter's progress lines and warnings (e.g. about torchvision) go nowhere."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._export", "onnxscript")]
    levels = [lg.level for lg in loggers]
    try:
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, lv in zip(loggers, levels):
            lg.setLevel(lv)


def _session(path: Path) -> Any:
    ort = _require()
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = max(1, torch.get_num_threads())
    opts.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001  (ONNX Runtime raises its own exception types)
        raise LdctError(f"ONNX Runtime {ort.__version__} cannot load this model ({type(exc).__name__}: "
                        f"{str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ''})", path) from None


def _multiple(net: torch.nn.Module) -> tuple[int, int]:
    """(size multiple, minimum size) a network pads its input to."""
    return int(getattr(net, "size_multiple", 1) or 1), int(getattr(net, "min_size", 1) or 1)


def _max_diff(path: Path, net: torch.nn.Module, args: tuple[Any, ...], scale: int) -> float:
    with torch.no_grad():
        want = net(*args)
        got = OrtNetwork(path, multiple=_multiple(net), scale=scale)(*args)
    return float((got - want).abs().max()) if got.shape == want.shape else float("inf")


class OrtNetwork:
    """An ONNX Runtime session that stands in for the PyTorch network: ``net(x)`` / ``net(x, dose)`` on CPU
    tensors -> a tensor."""

    def __init__(self, path: Path, *, multiple: tuple[int, int] = (1, 1), scale: int = 1):
        self.path, self.multiple, self.scale = Path(path), multiple, int(scale)
        self.session = _session(self.path)
        self.inputs = [i.name for i in self.session.get_inputs()]

    def __call__(self, x: torch.Tensor, dose: torch.Tensor | None = None) -> torch.Tensor:
        from ldct.models.common import crop_to, pad_to_multiple

        xp, (h, w) = pad_to_multiple(x.detach().cpu().float(), self.multiple[0], self.multiple[1])
        feeds = {self.inputs[0]: xp.numpy()}
        if len(self.inputs) > 1:
            if dose is None:
                raise LdctError("this ONNX model is dose-conditioned: give the dose fraction")
            feeds[self.inputs[1]] = dose.detach().cpu().float().numpy().reshape(-1)
        try:
            y = torch.from_numpy(self.session.run(None, feeds)[0])
        except Exception as exc:  # noqa: BLE001  (ONNX Runtime's own exception types)
            raise LdctError(f"ONNX Runtime failed on a {tuple(x.shape)} input ({type(exc).__name__}: "
                            f"{str(exc).strip()[:200]})", self.path) from None
        return crop_to(y, (h * self.scale, w * self.scale))

    def to(self, device: Any) -> OrtNetwork:
        return self

    def eval(self) -> OrtNetwork:
        return self


def ort_network(den: Any) -> OrtNetwork:
    """``den``'s network as an ONNX Runtime session (exported once into :func:`cache_dir`)."""
    _require()
    path = cache_dir() / f"{_digest(den)}.onnx"
    multiple = _multiple(den.net)
    if path.is_file():  # a cached export is checked again (milliseconds): a damaged or foreign file is redone
        try:
            net = OrtNetwork(path, multiple=multiple, scale=den.scale)
            if _agrees(net, den):
                return net
        except LdctError:
            pass
        path.unlink(missing_ok=True)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        export_onnx(den, path)
    except OSError as exc:
        raise LdctError(f"cannot write the ONNX cache ({exc.strerror or exc}); set XDG_CACHE_HOME to a "
                        "writable folder or use --backend torch", path.parent) from None
    return OrtNetwork(path, multiple=multiple, scale=den.scale)


def _agrees(ort_net: OrtNetwork, den: Any) -> bool:
    """ONNX Runtime and PyTorch give the same output (within :data:`MAX_DIFF`) on a small fixed input."""
    m = max(_multiple(den.net))
    side = max(32, -(-32 // m) * m)
    x = torch.linspace(-1, 1, den.channels * side * side).reshape(1, den.channels, side, side)
    args = (x, torch.full((1,), 0.25)) if den.dose_conditioned else (x,)
    net = den.net.cpu().eval()
    with torch.no_grad():
        want = net(*args)
    got = ort_net(*args)
    return got.shape == want.shape and float((got - want).abs().max()) <= MAX_DIFF
