"""The bundled default model: ships as safetensors (< 20 MB) and denoises a held-out real scan."""

from __future__ import annotations

import json
import struct

from ldct import Denoiser
from ldct.io import read_volume
from ldct.metrics import compute_metrics
from ldct.model_zoo import bundled_dir
from ldct.simulate import simulate_low_dose


def test_default_model_is_small_safetensors():
    weights = bundled_dir() / "default.safetensors"
    assert weights.is_file()
    assert weights.stat().st_size < 20 * 1024 * 1024
    raw = weights.read_bytes()
    assert raw[:1] != b"\x80" and raw[:2] != b"PK"  # neither a pickle nor a torch.save zip archive
    n = struct.unpack("<Q", raw[:8])[0]  # safetensors: u64 header length, then a JSON header, then tensors
    header = json.loads(raw[8 : 8 + n])
    tensors = {k: v for k, v in header.items() if k != "__metadata__"}
    assert tensors and all(len(v["data_offsets"]) == 2 for v in tensors.values())
    assert 8 + n + max(v["data_offsets"][1] for v in tensors.values()) == len(raw)  # the file is exactly that


def test_default_model_denoises_the_held_out_sample_at_25_percent(sample_dicom):
    # the bundled sample patient (abdomen, Siemens Br38f) was held out of the default model's training
    nd = read_volume(sample_dicom).data[8:10]
    ld = simulate_low_dose(nd, 0.25, pixel_spacing_mm=0.9765625, seed=3)
    model = Denoiser.load("default")
    out = model.denoise_array(ld, batch_size=2)
    assert out.shape == nd.shape
    gain = [compute_metrics(o, n)["psnr_soft_tissue"] - compute_metrics(i, n)["psnr_soft_tissue"]
            for o, i, n in zip(out, ld, nd, strict=True)]
    assert min(gain) > 1.5, gain
    # HU kept: mean in the body changes by less than 3 HU
    body = nd > -500
    assert abs(float(out[body].mean() - nd[body].mean())) < 3.0
