"""``ldct denoise`` (a scan in, the denoised scan out) and ``ldct models`` (bundled and user models)."""

from __future__ import annotations

from pathlib import Path

import typer

from ldct.errors import LdctError


def _progress_bar():
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[unit]}"),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=False,
    )


def register(app: typer.Typer) -> None:
    @app.command("denoise")
    def denoise(
        inp: Path = typer.Argument(..., metavar="IN", help="DICOM series folder, NIfTI (.nii/.nii.gz) or .npy (HU); "
                                   "for a model trained on photographs a PNG/JPG file or a folder of them."),
        out: Path = typer.Option(..., "-o", "--out", help="Output: folder (DICOM series), .nii/.nii.gz or .npy; "
                                 "photographs: a .png file, or a folder for a folder."),
        model: str = typer.Option(None, "--model", "-m", help="Model name (see `ldct models`) or path to a "
                                  "run folder, checkpoint or .safetensors model. Default: the bundled model."),
        dose: float = typer.Option(None, "--dose", help="Dose fraction in (0, 1] for dose-conditioned models."),
        strength: float = typer.Option(1.0, "--strength", help="Share of the model's correction applied, in "
                                       "(0, 1]: below 1 keeps part of the input's noise and its grain."),
        grain: float = typer.Option(None, "--grain", help="Share in [0, 1) of the removed noise's fine grain "
                                    "put back (keeps the scan's noise texture). Default: the model's (see "
                                    "`ldct models`)."),
        adapt_steps: int = typer.Option(0, "--adapt", metavar="STEPS", help="First fine-tune a copy of the model "
                                        "on this scan for STEPS steps, self-supervised (Neighbor2Neighbor; e.g. "
                                        "200): fits the model to an unfamiliar scanner's noise. Runs on PyTorch; "
                                        "the installed model is never changed."),
        adapt_time: float = typer.Option(None, "--adapt-time", metavar="SECONDS", help="Stop adapting after "
                                         "SECONDS (time budget)."),
        seed: int = typer.Option(0, "--seed", help="Random seed of --adapt (same seed, same result)."),
        device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
        batch_size: int = typer.Option(4, "--batch-size", help="Slices per forward pass."),
        tile: int = typer.Option(None, "--tile", help="Tile size in pixels (tiled inference, less memory)."),
        overlap: int = typer.Option(32, "--overlap", help="Pixels shared by neighbouring tiles."),
        precision: str = typer.Option("auto", "--precision", help="auto (bf16/fp16 on GPU, fp32 on CPU), 32, bf16, 16."),
        preview: Path = typer.Option(None, "--preview", help="Write a before/after PNG of the middle slice."),
        qa: Path = typer.Option(None, "--qa", help="Write reference-free quality figures to this .json (noise "
                                "and NPS before/after, structure removed) and a .png beside it."),
        series: str = typer.Option(None, "--series", help="Series to read when the folder holds several "
                                   "(SeriesInstanceUID or 0-based index, see `ldct info`)."),
        ref_ctdivol: float = typer.Option(None, "--reference-ctdivol", help="Normal-dose CTDIvol (mGy), to "
                                          "estimate the dose from the CTDIvol tag."),
        ref_mas: float = typer.Option(None, "--reference-mas", help="Normal-dose mAs, to estimate the dose."),
        ref_noise: float = typer.Option(None, "--reference-noise", help="Normal-dose soft-tissue noise std "
                                        "(HU), to estimate the dose from image noise."),
        overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing outputs."),
        backend: str = typer.Option("auto", "--backend", envvar="LDCT_BACKEND", help="auto (onnxruntime on the CPU, torch on a GPU), "
                                    "torch, or onnxruntime (CPU; the network exported to ONNX once and cached)."),
        compress: bool = typer.Option(None, "--compress/--no-compress", help="DICOM output: lossless "
                                      "compression (JPEG 2000 lossless, else RLE). Default: when the input was."),
    ) -> None:
        """Denoise a low-dose CT scan; writes the same kind of output (DICOM series with new UIDs, NIfTI, npy).

        A model trained on photographs (`ldct train pix2pix_photos`) denoises a PNG/JPG (-> PNG of the same
        size and mode) or a folder of them (-> a folder of PNGs)."""
        from ldct.denoiser import Denoiser, choose_backend, resolve_device
        from ldct.infer.photos import check_model_input, is_photo_input
        from ldct.infer.pipeline import check_dose, check_paths, denoise_path, output_kind

        check_dose(dose)  # cheap checks first: no model loading for a typo
        if precision not in ("auto", "32", "bf16", "16"):
            raise LdctError(f"--precision {precision!r}: use auto, 32, bf16 or 16")
        chosen = choose_backend(backend, resolve_device(device))
        if not 0.0 < strength <= 1.0:
            raise LdctError(f"--strength {strength:g}: must be in (0, 1] (1 = the model's output)")
        if adapt_steps < 0:
            raise LdctError(f"--adapt {adapt_steps}: give the number of adaptation steps (0 = none)")
        if adapt_time is not None and not adapt_time > 0:
            raise LdctError(f"--adapt-time {adapt_time:g}: must be positive seconds")
        if adapt_steps and backend == "onnxruntime":
            raise LdctError("--adapt trains the network on PyTorch: use --backend torch or auto")
        if grain is not None and not 0.0 <= grain < 1.0:
            raise LdctError(f"--grain {grain:g}: must be in [0, 1) (0 = the model's output)")
        study = None
        if series is None and inp.is_dir() and not is_photo_input(inp):
            from ldct.infer.study import is_study

            study = is_study(inp)
        if study is not None:  # a study or a tree of studies: every eligible series, resumable
            if out.suffix:
                raise LdctError("this folder holds several DICOM series (a study): write them to an output "
                                "folder (-o OUT_DIR), or pick one with --series", out)
            if preview is not None or qa is not None:
                raise LdctError("--preview and --qa take one series: add --series INDEX (see ldct info)", inp)
            check_paths(inp, out, overwrite=True)  # an existing OUT is resumed: complete series are skipped
        else:
            check_paths(inp, out, overwrite=overwrite, preview=preview, qa=qa)
        if not is_photo_input(inp):
            output_kind(out)
        loaded = Denoiser.load(model)
        check_model_input(loaded, inp)  # a CT model on a photograph or a photo model on CT: one line
        if loaded.data_kind == "photos" and strength != 1.0:
            raise LdctError("--strength applies to CT (Hounsfield units), not to photographs")
        if loaded.data_kind == "photos" and grain:
            raise LdctError("--grain applies to CT (Hounsfield units), not to photographs")
        if strength != 1.0:
            loaded = loaded.with_strength(strength)
        if grain is not None and grain != loaded.grain:
            loaded = loaded.with_grain(grain)
        if loaded.data_kind == "photos" and qa is not None:
            raise LdctError("--qa measures CT (Hounsfield units), not photographs")
        if loaded.data_kind == "photos" and adapt_steps:
            raise LdctError("--adapt is for CT, not for photographs")
        if adapt_steps:
            chosen = "torch"  # the adapted copy is a new network: PyTorch runs it
        if chosen != "torch":  # last: the first use of a model on ONNX Runtime exports it (seconds)
            try:
                loaded = loaded.use_backend(chosen)
            except LdctError as exc:
                if backend == chosen:  # asked for by name: its failure is the user's answer
                    raise
                typer.echo(f"ldct: note: running on PyTorch ({exc.message})", err=True)
        if loaded.data_kind == "photos":
            _denoise_photos(inp, out, loaded, dose=dose, device=device, tile=tile, overlap=overlap,
                            precision=precision, overwrite=overwrite, preview=preview)
            return
        if study is not None:
            _denoise_study(inp, out, study, loaded, overwrite=overwrite, dose=dose, device=device,
                           batch_size=batch_size, tile=tile, overlap=overlap, precision=precision,
                           reference_ctdivol=ref_ctdivol, reference_mas=ref_mas, reference_noise_hu=ref_noise,
                           compress=compress, adapt_steps=adapt_steps, adapt_seconds=adapt_time, adapt_seed=seed)
            return
        bar = _progress_bar()
        task = None
        adapt_task = None
        n_slices = 0

        def on_start(vol, used_dose, how) -> None:
            nonlocal adapt_task, n_slices
            n_slices = vol.shape[0]
            typer.echo(f"model: {loaded.describe()} from {loaded.source} ({loaded.backend})", err=True)
            typer.echo(f"input: {inp} ({vol.shape[0]} slices of {vol.shape[1]}x{vol.shape[2]})", err=True)
            typer.echo(f"dose: {how}", err=True)
            from ldct.infer.domain import domain_warnings

            for w in domain_warnings(vol, loaded.meta):
                typer.echo(f"ldct: warning: {w}", err=True)
            bar.start()
            if adapt_steps:
                adapt_task = bar.add_task("adapting", total=adapt_steps, rate="", unit="steps ")
            else:
                start_denoising(vol.shape[0])

        def start_denoising(total: int) -> None:
            nonlocal task
            task = bar.add_task("denoising", total=total, rate="", unit="slices")

        def progress(done: int, total: int) -> None:
            if task is None:  # adaptation stopped by its time budget
                start_denoising(total)
            t = next(x for x in bar.tasks if x.id == task)
            rate = f"{done / t.elapsed:.2f} slices/s" if t.elapsed else ""
            bar.update(task, completed=done, rate=rate)

        def adapt_progress(done: int, total: int) -> None:
            t = next(x for x in bar.tasks if x.id == adapt_task)
            bar.update(adapt_task, completed=done, rate=f"{done / t.elapsed:.2f} steps/s" if t.elapsed else "")
            if done == total and task is None:
                start_denoising(n_slices)

        try:
            res = denoise_path(
                inp, out, model=loaded, dose=dose, device=device, batch_size=batch_size, tile=tile,
                overlap=overlap, precision=precision, series=series, overwrite=overwrite, preview=preview,
                reference_ctdivol=ref_ctdivol, reference_mas=ref_mas, reference_noise_hu=ref_noise,
                progress=progress, on_start=on_start, compress=compress, adapt_steps=adapt_steps,
                adapt_seconds=adapt_time, adapt_seed=seed, adapt_progress=adapt_progress, qa=qa,
            )
        finally:
            bar.stop()
        if res.adapt is not None:
            typer.echo(f"ldct: warning: --adapt {res.adapt.describe()}" if res.adapt.skipped else res.adapt.describe(),
                       err=bool(res.adapt.skipped))
        typer.echo(f"wrote {res.output} ({res.slices} slices, {'x'.join(map(str, res.shape[1:]))})")
        typer.echo(f"time: {res.seconds:.2f} s on {res.device}, {res.slices_per_s:.2f} slices/s")
        if res.noise_before is not None and res.noise_after is not None:
            typer.echo(
                f"noise std in body soft tissue: {res.noise_before:.1f} HU before, {res.noise_after:.1f} HU after "
                f"({res.noise_how})"
            )
        else:
            typer.echo(f"noise std in body soft tissue: not measured ({res.noise_how})")
        if res.preview is not None:
            typer.echo(f"preview: {res.preview}")
        if res.qa is not None:
            import json

            q = json.loads(res.qa.read_text())
            nb, na = q["noise"]["before"], q["noise"]["after"]

            def f(v, fmt):
                return format(v, fmt) if v is not None else "n/a"

            typer.echo(f"qa: NPS mean frequency {f(nb['nps_mean_f'], '.3f')} -> {f(na['nps_mean_f'], '.3f')} cycles/mm, "
                       f"structure score {f(q['structure_score'], '.3f')}; {res.qa} (+ .png)")

    def _denoise_study(inp: Path, out: Path, study: list, loaded, *, overwrite: bool, **kw) -> None:
        from ldct.infer.pipeline import denoise_path
        from ldct.infer.study import denoise_study

        typer.echo(f"model: {loaded.describe()} from {loaded.source} ({loaded.backend})", err=True)
        typer.echo(f"input: {inp} ({len(study)} series)", err=True)

        def one(info, target: Path):  # the files found when the study was listed: no second search
            return denoise_path(inp, target, model=loaded, files=list(info.files), overwrite=overwrite, **kw)

        def report(o) -> None:
            if o.status == "denoised":
                typer.echo(f"{o.label}: denoised {o.slices} slices in {o.seconds:.1f} s -> {o.output}")
            elif o.status == "done":
                typer.echo(f"{o.label}: {o.reason} ({o.output})")
            elif o.status == "skipped":
                typer.echo(f"{o.label}: skipped, {o.reason}")
            else:
                typer.echo(f"{o.label}: FAILED, {o.reason}", err=True)

        res = denoise_study(inp, out, series=study, denoise_one=one, overwrite=overwrite, on_series=report)
        typer.echo(f"study: {res.count('denoised')} series denoised, {res.count('done')} already done, "
                   f"{res.count('skipped')} skipped, {res.count('failed')} failed -> {out}")
        if res.failed:
            raise LdctError(f"{len(res.failed)} series failed ({'; '.join(o.label for o in res.failed)}); "
                            "the others were written; run again to retry them", inp)

    def _denoise_photos(inp: Path, out: Path, loaded, *, dose: float | None, **kw) -> None:
        from ldct.infer.photos import denoise_photos

        bar = _progress_bar()
        task = None

        def on_start(n: int) -> None:
            nonlocal task
            typer.echo(f"model: {loaded.describe()} from {loaded.source} (trained on photographs)", err=True)
            typer.echo(f"input: {inp} ({n} photograph{'s' if n != 1 else ''})", err=True)
            if dose is not None:
                typer.echo(f"--dose {dose:g} ignored: photographs have no dose", err=True)
            bar.start()
            task = bar.add_task("denoising", total=n, rate="", unit="images")

        def progress(done: int, total: int) -> None:
            t = bar.tasks[0]
            bar.update(task, completed=done, rate=f"{done / t.elapsed:.2f} images/s" if t.elapsed else "")

        try:
            res = denoise_photos(inp, out, model=loaded, progress=progress, on_start=on_start, **kw)
        finally:
            bar.stop()
        sizes = sorted(set(res.sizes))
        size = f"{sizes[0][0]}x{sizes[0][1]}" if len(sizes) == 1 else f"{len(sizes)} sizes"
        typer.echo(f"wrote {res.output} ({res.images} image{'s' if res.images != 1 else ''}, {size}, PNG)")
        typer.echo(f"time: {res.seconds:.2f} s on {res.device}, {res.images_per_s:.2f} images/s")
        if res.noise_before is not None and res.noise_after is not None:
            typer.echo(f"noise std (estimated blind, skimage.restoration.estimate_sigma, 0..255 units): "
                       f"{res.noise_before:.1f} before, {res.noise_after:.1f} after")
        if res.preview is not None:
            typer.echo(f"preview: {res.preview}")

    @app.command("export")
    def export(
        model: str = typer.Argument(..., metavar="MODEL", help="Model name, run folder, checkpoint or model file."),
        out: Path = typer.Option(..., "-o", "--out", help="model.onnx (ONNX, checked against PyTorch) or a folder "
                                 "(weights.safetensors + meta.json: the denoising network alone)."),
        overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output."),
    ) -> None:
        """Export a model: to ONNX (for ONNX Runtime and other runtimes) or to a self-contained model folder."""
        from ldct.denoiser import Denoiser

        if out.suffix.lower() != ".onnx" and out.suffix != "":
            raise LdctError("unsupported export: use a .onnx file or a folder name without suffix", out)
        if out.exists() and not overwrite:
            raise LdctError("output already exists (pass --overwrite to replace it)", out)
        den = Denoiser.load(model)
        if out.suffix.lower() == ".onnx":
            from ldct.onnx_export import MAX_DIFF, export_onnx

            export_onnx(den, out)
            typer.echo(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB; ONNX Runtime matches PyTorch within "
                       f"{MAX_DIFF:g}; inputs x (B, {den.channels}, H, W)"
                       f"{', dose (B,)' if den.dose_conditioned else ''}, network range of window "
                       f"[{den.window.lo:g}, {den.window.hi:g}])")
        else:
            den.save(out, overwrite=overwrite)
            typer.echo(f"wrote {out} (weights.safetensors + meta.json)")

    @app.command("models")
    def models(
        add: Path = typer.Option(None, "--add", help="Install a run folder, checkpoint or model as a user model."),
        name: str = typer.Option(None, "--name", help="Name for --add (then use it as `--model NAME`)."),
        overwrite: bool = typer.Option(False, "--overwrite", help="Replace a user model of the same name."),
    ) -> None:
        """List the bundled models and your models ($LDCT_MODEL_DIR or ~/.ldct/models); --add installs one."""
        from rich.console import Console
        from rich.table import Table

        from ldct.denoiser import Denoiser
        from ldct.model_zoo import bundled_dir, install_target, list_models, user_dir

        if add is not None or name is not None:
            if add is None or not name:
                raise LdctError("--add PATH and --name NAME go together")
            install_target(name)  # a bad name fails before the model is read
            typer.echo(f"installed {Denoiser.load(str(add)).install(name, overwrite=overwrite).parent}")

        found = list_models()
        table = Table(title="ldct models")
        for col in ("name", "where", "method", "network", "size MB", "trained on", "doses"):
            table.add_column(col, overflow="fold")
        for m in found:
            table.add_row(m.name, m.where, m.method, m.network, f"{m.size_mb:.1f}", m.trained_on, m.doses)
        console = Console()
        if found:
            console.print(table)
        if not any(m.where == "bundled" for m in found):
            console.print(f"no bundled model is installed (looked in {bundled_dir()})")
        if not any(m.where == "user" for m in found):
            console.print(f"no user models in {user_dir()} (set LDCT_MODEL_DIR to use another folder)")
