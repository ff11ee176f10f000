"""``ldct.simulate.Simulator``: one scan's calibration, then low dose at several doses; the slice store
only caches what it makes (same calibration, same images)."""

from __future__ import annotations

import numpy as np

from ldct.data.store import SliceLoc, SliceStore
from ldct.io import read_volume
from ldct.simulate import Simulator


def test_calibrate_then_simulate_and_the_store_caches_the_same(sample_dicom, tmp_path):
    vol = read_volume(sample_dicom)
    hu = vol.data[8:11]
    spacing = float(vol.spacing[1])
    sim = Simulator({"mode": "projection", "filter": "auto"})
    calib = sim.calibrate(hu, spacing)
    assert calib["i0"] > 1e3 and calib["filter"]  # a photon count, and the FBP filter matching the scan
    out = sim.simulate(hu[1], [0.25, 0.5], spacing, seed=3, calibration=calib)
    noise = {d: float(np.std(out[d][200:300, 200:300] - hu[1][200:300, 200:300])) for d in out}
    assert noise[0.25] > 1.3 * noise[0.5] > 0  # quarter dose: ~sqrt(3) times the added noise of half dose
    assert Simulator({"mode": "projection", "i0": 1e5}).calibrate(hu, spacing) == {}  # given: nothing to fit

    store = SliceStore(tmp_path / "cache", sim=sim.config)
    store.add_volume("abd", lambda: vol.with_data(hu))
    assert store.volume_noise("abd", spacing)["i0"] == calib["i0"]
    again = SliceStore(tmp_path / "cache", sim=sim.config)  # a new process: read from the cache, no refit
    again.add_volume("abd", lambda: (_ for _ in ()).throw(AssertionError("volume read again")))
    assert again.volume_noise("abd", spacing) == store.volume_noise("abd", spacing)
    got = store.simulate(SliceLoc("abd", 1), [0.25], spacing, seed=3)[0.25]
    assert np.array_equal(got, out[0.25])
