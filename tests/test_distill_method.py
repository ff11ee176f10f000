"""Teacher-student distillation with dose conditioning, on real CT with the project's low-dose simulator.

One tiny teacher and one tiny conditioned student are trained once per module (real methods, real
Fabric, real crops); the tests then check what the method promises: the teacher and its decoder are not
touched by student training, the student starts as the teacher, the dose changes the output, a wrong
dose is measurably worse on a patient the model never saw, and checkpoints round-trip.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from helpers_distill import (
    TEST_DOSES,
    TINY_RESNET,
    Pairs,
    build,
    save_run,
    simulate,
    simulated_abdomen,
    train,
    weights_of,
)

import ldct.methods  # noqa: F401  (registers the methods)
from ldct import Denoiser
from ldct.engine.checkpoint import load_checkpoint
from ldct.errors import LdctError
from ldct.hu import hu_to_net, net_to_hu

SOFT = (-160.0, 240.0)  # soft-tissue metric window (HU)
CROP = 32


@pytest.fixture(scope="module")
def abdomen(shared_data) -> Pairs:
    """Training patient: 6 slices of the abdomen series, low dose simulated at 10 % and 70 %."""
    return simulated_abdomen(shared_data)[1]


@pytest.fixture(scope="module")
def mayo(shared_data) -> Pairs:
    """Held-out patient (another scanner): two Mayo L067 slices, same simulator and doses."""
    names = ("L067_FD_3mm_smooth_0070.raw", "L067_FD_3mm_smooth_0150.raw")
    nd = np.stack([np.fromfile(shared_data / "mayo_L067_fd_raw" / n, dtype="<u2").reshape(512, 512)
                   .astype(np.float32) - 1024.0 for n in names])
    return Pairs(nd, simulate(nd, TEST_DOSES, 0.7, seed=2))


@pytest.fixture(scope="module")
def teacher_run(abdomen, tmp_path_factory):
    torch.manual_seed(0)
    args = {"net": TINY_RESNET, "lr": 5e-3}
    teacher = build("teacher", args)
    out = train(teacher, abdomen, 150, size=CROP, doses=[1.0], seed=0)
    assert out["loss"] < 0.05  # it learned to reconstruct normal dose (L1 + 0.2 (1 - SSIM), net range)
    return save_run(tmp_path_factory.mktemp("teacher"), teacher, "teacher", args, 150)


@pytest.fixture(scope="module")
def student(abdomen, teacher_run):
    """(weights before training, method after 200 steps on batches mixing 10 % and 70 % crops)."""
    torch.manual_seed(0)
    s = build("distill", {"teacher": str(teacher_run), "lr": 2e-3})
    before = {"student": weights_of(s.nets["student"]), "teacher": weights_of(s.nets["teacher"])}
    train(s, abdomen, 200, size=CROP, doses=list(TEST_DOSES), seed=1)
    s.train(False)
    return before, s


def _predict(method, x: torch.Tensor, dose: torch.Tensor) -> torch.Tensor:
    """The method's denoising network on a network-range batch (what ``ldct denoise`` runs), no grad."""
    with torch.no_grad():
        return method.denoiser().forward(x, dose)


def _soft_rmse(pred: torch.Tensor, nd: torch.Tensor) -> float:
    a = net_to_hu(pred).clamp(*SOFT)
    b = net_to_hu(nd).clamp(*SOFT)
    return float(torch.sqrt(torch.mean((a - b) ** 2)))


def test_student_training_leaves_teacher_and_decoder_bitwise_unchanged(student):
    before, s = student
    after_t = weights_of(s.nets["teacher"])
    assert before["teacher"].keys() == after_t.keys()
    assert all(torch.equal(before["teacher"][k], after_t[k]) for k in after_t)
    net = getattr(s.nets["student"], "module", s.nets["student"])
    dec = {id(p) for p in net.decoder_parameters()}
    names = {n for n, p in net.named_parameters() if id(p) in dec}
    assert names  # the decoder half exists and is frozen...
    after_s = weights_of(net)
    assert all(torch.equal(before["student"][n], after_s[n]) for n in names)
    # ...while the encoder and the dose MLP did learn
    changed = {n for n in after_s if not torch.equal(before["student"][n], after_s[n])}
    assert any(n.startswith("dose_mlp.heads") for n in changed)
    assert any(n.startswith("net.head") for n in changed)


def test_conditioned_student_starts_as_the_teacher_and_dose_then_matters(teacher_run, student, mayo):
    batch = mayo.crops(4, 64, np.random.default_rng(5), [0.1])
    fresh = build("distill", {"teacher": str(teacher_run)})
    fresh.train(False)
    with torch.no_grad():
        t_out = fresh.nets["teacher"](batch["ld"])
        for d in (0.1, 0.7):  # identity modulation at initialisation: any dose gives the teacher's output
            assert torch.allclose(_predict(fresh, batch["ld"], torch.full((4,), d)), t_out, atol=1e-6)
        _, s = student
        lo = _predict(s, batch["ld"], torch.full((4,), 0.1))
        hi = _predict(s, batch["ld"], torch.full((4,), 0.7))
    assert float((net_to_hu(lo) - net_to_hu(hi)).abs().mean()) > 1.0  # HU


def test_wrong_dose_is_measurably_worse_on_a_held_out_patient(student, mayo):
    """The training signal that makes this hold: every batch mixes 10 % and 70 % crops (a dose per
    sample), so each step's gradient pushes the two dose modulations apart toward what each dose needs
    (strong smoothing at 10 %, almost none at 70 %), and the tiny encoder (7x7 receptive field) cannot
    tell the two noise levels apart from the pixels alone - the dose input is its only reliable cue.
    Evaluated on another patient and scanner; the same inputs at both dose values (paired)."""
    _, s = student
    for true, wrong in ((0.1, 0.7), (0.7, 0.1)):
        batch = mayo.crops(32, 64, np.random.default_rng(7), [true])
        with torch.no_grad():
            right_err = _soft_rmse(_predict(s, batch["ld"], torch.full((32,), true)), batch["nd"])
            wrong_err = _soft_rmse(_predict(s, batch["ld"], torch.full((32,), wrong)), batch["nd"])
        assert wrong_err > 1.05 * right_err, (true, right_err, wrong_err)


def test_ablation_ignores_the_dose_and_decoder_finetuning_is_opt_in(teacher_run, abdomen):
    torch.manual_seed(0)
    ab = build("distill", {"teacher": str(teacher_run), "dose_conditioned": False, "finetune_decoder": True,
                           "lr": 5e-3})
    assert ab.dose_conditioned is False
    net = ab.nets["student"].module
    dec = {n for n, p in net.named_parameters() if id(p) in {id(q) for q in net.decoder_parameters()}}
    before, teacher_before = weights_of(net), weights_of(ab.nets["teacher"])
    train(ab, abdomen, 3, size=CROP, doses=list(TEST_DOSES), seed=3)
    after = weights_of(net)
    assert any(not torch.equal(before[n], after[n]) for n in dec)  # decoder fine-tuned
    assert all(torch.equal(v, weights_of(ab.nets["teacher"])[k]) for k, v in teacher_before.items())
    ab.train(False)
    x = abdomen.crops(2, 48, np.random.default_rng(0), [0.1])["ld"]
    assert torch.equal(_predict(ab, x, torch.full((2,), 0.1)), _predict(ab, x, torch.full((2,), 0.7)))


def test_anatomy_prior_default_teacher_encoder_and_user_weights(teacher_run, abdomen):
    batch = abdomen.crops(4, CROP, np.random.default_rng(0), list(TEST_DOSES))
    s = build("distill", {"teacher": str(teacher_run), "lambda_prior": 0.5})
    terms = s.losses(batch)
    assert float(terms["prior"]) > 0
    total = sum(s.lambdas[k] * float(terms[k]) for k in ("lat", "rec", "prior"))
    assert float(terms["loss"]) == pytest.approx(total, rel=1e-5)
    # a user weights file: here the teacher run itself (its encoder-decoder sits under 'net.net')
    u = build("distill", {"teacher": str(teacher_run), "lambda_prior": 0.5, "prior_weights": str(teacher_run),
                          "prior_network": TINY_RESNET, "prior_net": "net.net"})
    assert float(u.losses(batch)["prior"]) == pytest.approx(float(terms["prior"]), rel=1e-4)


def test_checkpoint_round_trip_and_export_keep_dose_conditioning(student, tmp_path, mayo):
    _, s = student
    run = save_run(tmp_path / "student", s, "distill", {"teacher": s.teacher_path, "lr": 5e-3}, 150)
    loaded, meta = load_checkpoint(run)
    assert meta["dose_conditioned"] is True and meta["network"]["name"] == "encdec"
    exported = Denoiser.load(Denoiser.load(run).save(tmp_path / "model"))
    assert exported.dose_conditioned is True and exported.network == "encdec"
    with pytest.raises(LdctError, match="Denoiser.load"):  # an exported model holds no whole method
        load_checkpoint(tmp_path / "model")
    x = mayo.crops(2, 40, np.random.default_rng(1), [0.1])["ld"]
    for d in (0.1, 0.7):
        dose = torch.full((2,), d)
        ref = _predict(s, x, dose)
        assert torch.equal(_predict(loaded, x, dose), ref)
        with torch.no_grad():
            assert torch.equal(exported.forward(x, dose), ref)


def test_distillation_run_denoises_after_its_teacher_folder_is_deleted(teacher_run, abdomen, mayo, tmp_path):
    """A distillation run is self-contained: the student's network (encoder + the teacher's decoder) is all
    ``Denoiser.load`` builds, so deleting the teacher's run folder changes nothing for denoising."""
    teacher = shutil.copytree(teacher_run, tmp_path / "teacher")
    torch.manual_seed(0)
    args = {"teacher": str(teacher), "lr": 2e-3}
    s = build("distill", args)
    train(s, abdomen, 3, size=CROP, doses=list(TEST_DOSES), seed=1)
    s.train(False)
    run = save_run(tmp_path / "distill", s, "distill", args, 3)
    x = mayo.crops(2, 40, np.random.default_rng(1), [0.1])["ld"]
    dose = torch.full((2,), 0.25)
    ref = _predict(s, x, dose)
    shutil.rmtree(teacher)
    assert not teacher.exists()
    den = Denoiser.load(run)
    assert den.method == "distill" and den.dose_conditioned is True
    with torch.no_grad():
        assert torch.equal(den.forward(x, dose), ref)
    from ldct.cli import main

    vol = net_to_hu(mayo.crops(3, 48, np.random.default_rng(2), [0.1])["ld"])[:, 0].numpy()
    np.save(tmp_path / "ld.npy", vol)
    cmd = ["denoise", str(tmp_path / "ld.npy"), "-o", str(tmp_path / "out.npy"), "--model", str(run)]
    assert main(cmd + (["--dose", "0.25"] if den.dose_conditioned else [])) == 0
    out = np.load(tmp_path / "out.npy")
    assert out.shape == vol.shape and np.isfinite(out).all()


def test_bad_teachers_are_clear_errors(tmp_path, abdomen, teacher_run):
    with pytest.raises(LdctError, match="not found"):
        build("distill", {"teacher": str(tmp_path / "nowhere")})
    sup_args = {"net": TINY_RESNET}
    sup = build("supervised", sup_args)
    run = save_run(tmp_path / "sup", sup, "supervised", sup_args, 0)
    with pytest.raises(LdctError, match="not a distillation teacher"):
        build("distill", {"teacher": str(run)})
    with pytest.raises(LdctError, match="no encoder stages"):
        build("distill", {"teacher": str(teacher_run), "lambda_feat": 1.0})


def test_encoder_decoder_families_any_size_and_identity_modulation():
    from ldct.models.encdec import EncoderDecoder

    families = [{"name": "autoencoder", "channels": [8, 8, 16]},
                {"name": "nafnet", "width": 8, "enc_blk_nums": [1, 1], "middle_blk_num": 1, "dec_blk_nums": [1, 1]},
                TINY_RESNET, {"name": "unet", "width": 8, "depth": 2, "norm": "none"}]
    x = hu_to_net(torch.linspace(-1000, 1000, 2 * 37 * 29).reshape(2, 1, 37, 29))
    for fam in families:
        torch.manual_seed(0)
        plain = EncoderDecoder(family=fam)
        cond = EncoderDecoder(family=fam, dose_conditioned=True)
        cond.net.load_state_dict(plain.net.state_dict())
        y = plain(x)
        assert y.shape == x.shape and float(y.abs().max()) <= 1.0
        assert torch.allclose(cond(x, torch.tensor([0.1, 0.5])), y, atol=1e-6)
        enc = {id(p) for p in cond.encoder_parameters()}
        dec = {id(p) for p in cond.decoder_parameters()}
        assert enc and dec and not enc & dec and enc | dec == {id(p) for p in cond.parameters()}
        assert {id(p) for p in cond.dose_mlp.parameters()} <= enc
        assert cond.skips == (fam["name"] == "unet")


def test_frozen_decoder_keeps_its_batchnorm_statistics(tmp_path, abdomen):
    """The autoencoder family normalises with BatchNorm: a frozen decoder must also keep the teacher's
    running statistics (train mode would overwrite them from low-dose batches), and so decode a teacher
    latent exactly as the teacher does."""
    torch.manual_seed(0)
    args = {"net": {"name": "autoencoder", "channels": [8, 8, 16]}, "lr": 5e-3}
    teacher = build("teacher", args)
    train(teacher, abdomen, 5, size=CROP, doses=[1.0], seed=0)
    run = save_run(tmp_path / "t", teacher, "teacher", args, 5)
    s = build("distill", {"teacher": str(run), "lr": 5e-3})
    net = s.nets["student"].module
    dec = {id(p) for p in net.decoder_parameters()}
    bn_dec = [n for n, m in net.named_modules() if isinstance(m, torch.nn.BatchNorm2d) and id(m.weight) in dec]
    bn_enc = [n for n, m in net.named_modules() if isinstance(m, torch.nn.BatchNorm2d) and id(m.weight) not in dec]
    assert bn_dec and bn_enc
    before = weights_of(net)
    train(s, abdomen, 3, size=CROP, doses=list(TEST_DOSES), seed=3)
    after = weights_of(net)
    for n in bn_dec:
        assert torch.equal(before[f"{n}.running_mean"], after[f"{n}.running_mean"]), n
    assert any(not torch.equal(before[f"{n}.running_mean"], after[f"{n}.running_mean"]) for n in bn_enc)
    s.train(False)
    x = abdomen.crops(2, CROP, np.random.default_rng(0), [1.0])["nd"]
    with torch.no_grad():
        t = s.nets["teacher"]
        assert torch.equal(net.decode(t.encode(x)), t.decode(t.encode(x)))


def test_residual_student_starts_at_its_input_then_beats_it_with_the_reference_frozen(teacher_run, abdomen, mayo,
                                                                                       tmp_path):
    """Residual decoding: output = x + decoder(student encoding) - teacher(x) (here with a learned blend, 0.5 of
    the input at first). An untrained student returns its input exactly (the teacher's reconstruction error
    cancels), the frozen reference never moves, and training lowers the error on a held-out patient below the
    low-dose input's."""
    torch.manual_seed(0)
    args = {"teacher": str(teacher_run), "output": "residual", "blend": "learned", "lr": 2e-3}
    s = build("distill", args)
    net = s.nets["student"].module
    held_out = mayo.crops(16, 64, np.random.default_rng(11), [0.1])
    dose = torch.full((16,), 0.1)
    s.train(False)
    with torch.no_grad():
        assert torch.allclose(_predict(s, held_out["ld"], dose), held_out["ld"], atol=1e-6)
    ref_before, all_before = weights_of(net.reference), weights_of(net)
    s.train(True)
    train(s, abdomen, 200, size=CROP, doses=list(TEST_DOSES), seed=1)
    assert all(torch.equal(v, weights_of(net.reference)[k]) for k, v in ref_before.items())
    changed = {n for n, v in weights_of(net).items() if not torch.equal(all_before[n], v)}
    assert any(n.startswith("dose_gate.") for n in changed)  # the learned blend weight moves
    assert not net.reference.training and net.training
    s.train(False)
    with torch.no_grad():
        out = _predict(s, held_out["ld"], dose)
    ld_err, out_err = _soft_rmse(held_out["ld"], held_out["nd"]), _soft_rmse(out, held_out["nd"])
    assert out_err < 0.9 * ld_err, (ld_err, out_err)
    run = save_run(tmp_path / "res", s, "distill", args, 200)
    loaded, meta = load_checkpoint(run)
    assert meta["network"]["output"] == "residual"
    assert torch.equal(_predict(loaded, held_out["ld"], dose), out)


def test_dose_balanced_loss_weights_each_sample_by_its_inverse_input_error(teacher_run, abdomen):
    """dose_balanced: sample b's loss terms are weighted by mean(e) / e_b, e_b = L1(low dose, normal dose) of
    that sample, so a 10 % and a 70 % crop count by their relative errors."""
    batch = abdomen.crops(8, CROP, np.random.default_rng(4), list(TEST_DOSES))
    plain = build("distill", {"teacher": str(teacher_run)})
    bal = build("distill", {"teacher": str(teacher_run), "dose_balanced": True})
    torch.manual_seed(0)
    with torch.no_grad():
        t_plain, t_bal = plain.losses(batch), bal.losses(batch)
        out = bal.nets["student"](batch["ld"], batch["dose"])
    e = (batch["ld"] - batch["nd"]).abs().flatten(1).mean(1)
    per = (out - batch["nd"]).abs().flatten(1).mean(1)
    assert e.max() > 2 * e.min()  # the batch mixes doses
    assert float(t_bal["rec"]) == pytest.approx(float((per * e.mean() / e).mean()), rel=1e-5)
    assert float(t_plain["rec"]) == pytest.approx(float(per.mean()), rel=1e-5)
    assert float(t_bal["rec"]) != pytest.approx(float(t_plain["rec"]), rel=1e-3)


def test_learned_blend_keeps_more_of_the_input_at_higher_dose(teacher_run, abdomen, mayo, tmp_path):
    """Learned blend: out = w(dose) x + (1 - w(dose)) decoder(student encoding). The normal-dose target keeps
    its own noise, so the least-error estimate keeps more of a cleaner input: after training the learned input
    share is larger at 70 % than at 10 %, and the student beats the low-dose input at both doses on a
    held-out patient. Without dose conditioning there is one weight for every dose."""
    torch.manual_seed(0)
    args = {"teacher": str(teacher_run), "blend": "learned", "lr": 2e-3}
    s = build("distill", args)
    net = s.nets["student"].module
    assert net.blend_weight(0.1) == net.blend_weight(0.7) == 0.5  # starts undecided
    train(s, abdomen, 200, size=CROP, doses=list(TEST_DOSES), seed=1)
    s.train(False)
    w10, w70 = net.blend_weight(0.1), net.blend_weight(0.7)
    assert 0.0 < w10 < w70 < 1.0 and w70 - w10 > 0.1, (w10, w70)
    for d in TEST_DOSES:
        held_out = mayo.crops(16, 64, np.random.default_rng(11), [d])
        dose = torch.full((16,), d)
        with torch.no_grad():
            out = _predict(s, held_out["ld"], dose)
            decoded = net.decode(net.encode(held_out["ld"], dose))
        assert torch.allclose(out, net.blend_weight(d) * held_out["ld"] + (1 - net.blend_weight(d)) * decoded,
                              atol=1e-5)
        ld_err, out_err = _soft_rmse(held_out["ld"], held_out["nd"]), _soft_rmse(out, held_out["nd"])
        assert out_err < ld_err, (d, ld_err, out_err)
    run = save_run(tmp_path / "blend", s, "distill", args, 200)
    loaded, meta = load_checkpoint(run)
    assert meta["network"]["blend"] == "learned"
    assert loaded.nets["student"].blend_weight(0.7) == pytest.approx(w70)
    plain = build("distill", {"teacher": str(teacher_run), "blend": "learned", "dose_conditioned": False})
    pnet = plain.nets["student"].module
    assert pnet.dose_gate is None and pnet.blend_logit is not None
    assert pnet.blend_weight(0.1) == pnet.blend_weight(0.7)
    bad_args = (({"output": "mix"}, "output"), ({"blend": "dose", "dose_conditioned": False}, "dose-conditioned"))
    for bad, match in bad_args:
        with pytest.raises(LdctError, match=match):
            build("distill", {"teacher": str(teacher_run), **bad})


def test_dose_blend_keeps_the_dose_fraction_of_the_input(teacher_run, mayo):
    """blend="dose": out = dose x + (1 - dose) y, y the residual decoding: at normal dose the output is the
    input, at 10 % it keeps a tenth of it, and an untrained residual student returns its input at any dose."""
    s = build("distill", {"teacher": str(teacher_run), "output": "residual", "blend": "dose"})
    net = s.nets["student"].module
    s.train(False)
    x = mayo.crops(4, 48, np.random.default_rng(5), [0.1])["ld"]
    dose = torch.tensor([0.1, 0.25, 0.5, 1.0])
    with torch.no_grad():
        assert torch.allclose(_predict(s, x, dose), x, atol=1e-6)  # untrained: y = x
        torch.nn.init.normal_(net.net.head.weight, std=0.5)  # any encoder change moves y off x
        y = x + net.decode(net.encode(x, dose)) - net.reference(x)
        out = _predict(s, x, dose)
    assert not torch.allclose(y, x, atol=1e-3)
    assert torch.allclose(out, dose.view(-1, 1, 1, 1) * x + (1 - dose.view(-1, 1, 1, 1)) * y, atol=1e-5)
    assert torch.equal(out[3], x[3])
    assert [net.blend_weight(d) for d in (0.1, 0.7)] == pytest.approx([0.1, 0.7])
