"""Patient-level splits: deterministic, disjoint, recorded; overlapping splits are errors."""

from __future__ import annotations

import json

import pytest

from ldct.data.config import DEFAULT_RAW
from ldct.data.discover import discover
from ldct.data.split import Split, make_split, read_split, write_split
from ldct.errors import LdctError

IDS = ["P1", "P2", "P3", "P4", "P5", "P6", "P7", "P8"]


def test_split_is_deterministic_and_disjoint():
    a = make_split(IDS, {"val": 0.25, "test": 2, "seed": 3})
    b = make_split(list(reversed(IDS)), {"val": 0.25, "test": 2, "seed": 3})
    assert (a.train, a.val, a.test) == (b.train, b.val, b.test)
    assert len(a.test) == 2 and len(a.val) == 2 and len(a.train) == 4
    assert sorted(a.train + a.val + a.test) == IDS
    others = {tuple(make_split(IDS, {"val": 0.25, "test": 2, "seed": s}).test) for s in range(8)}
    assert len(others) > 1  # the seed matters


def test_explicit_ids_are_kept_and_checked():
    s = make_split(IDS, {"test": ["P3"], "val": ["P5", "P6"]})
    assert s.test == ["P3"] and s.val == ["P5", "P6"] and "P3" not in s.train
    with pytest.raises(LdctError, match="P9") as e:
        make_split(IDS, {"test": ["P9"]})
    assert "patients found" in str(e.value)
    with pytest.raises(LdctError, match="'P3' is in both"):
        make_split(IDS, {"test": ["P3"], "val": ["P3"]})
    with pytest.raises(LdctError, match="no patient for training|at least one must stay"):
        make_split(["P1", "P2"], {"test": ["P1"], "val": ["P2"]})


def test_split_with_patient_in_two_sets_is_an_error(tmp_path):
    with pytest.raises(LdctError, match="'P2' is in both train and test"):
        Split(train=["P1", "P2"], val=[], test=["P2"])
    p = tmp_path / "split.json"
    p.write_text(json.dumps({"train": ["P1", "P2"], "val": ["P3"], "test": ["P2"]}))
    with pytest.raises(LdctError) as e:
        read_split(tmp_path)
    assert str(p) in str(e.value) and "P2" in str(e.value)


def test_real_patients_split_and_written(shared_data, tmp_path):
    scans = discover(shared_data, raw=DEFAULT_RAW)
    ids = sorted({s.patient_id for s in scans})
    s = make_split(ids, {"val": 1, "test": ["L067"], "seed": 0})
    assert s.test == ["L067"] and len(s.val) == 1 and len(s.train) == len(ids) - 2
    path = write_split(s, tmp_path)
    back = read_split(path)
    assert (back.train, back.val, back.test) == (s.train, s.val, s.test)
    # every slice of a patient is in that patient's set: scans of L067 (sharp and smooth) are all test
    assert {sc.patient_id for sc in scans if sc.name.startswith("mayo_L067")} == {"L067"}
