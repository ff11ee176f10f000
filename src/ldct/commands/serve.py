"""``ldct serve``: a DICOM node that denoises what the scanner sends (ldct.infer.node)."""

from __future__ import annotations

from pathlib import Path

import typer

from ldct.errors import LdctError


def register(app: typer.Typer) -> None:
    @app.command("serve")
    def serve(
        aet: str = typer.Option("LDCT", "--aet", help="This node's AE title."),
        port: int = typer.Option(11112, "--port", help="Port to listen on."),
        host: str = typer.Option("0.0.0.0", "--host", help="Address to listen on (127.0.0.1: this machine only)."),
        forward: str = typer.Option(None, "--forward", metavar="AET@HOST:PORT",
                                    help="Send each derived series here (C-STORE), e.g. the PACS."),
        out: Path = typer.Option(None, "--out", help="Also (or instead) write each derived series under this folder."),
        model: str = typer.Option(None, "--model", "-m", help="Model name or path (default: the bundled model)."),
        allow: list[str] = typer.Option(None, "--allow", metavar="AET",
                                        help="Calling AE titles allowed to send (repeatable; default: any)."),
        spool: Path = typer.Option(Path("ldct-spool"), "--spool", help="Where received instances wait (on disk "
                                   "before they are acknowledged; a restart resumes from here)."),
        idle: float = typer.Option(10.0, "--idle", help="A series is complete after this many seconds without "
                                   "a new instance."),
        forward_other: bool = typer.Option(False, "--forward-other/--skip-other", help="Objects that are not CT "
                                           "images: forward them untouched, or log and skip them (default)."),
        backend: str = typer.Option("auto", "--backend", envvar="LDCT_BACKEND", help="auto, torch or onnxruntime."),
        check: bool = typer.Option(False, "--check", help="Check the configuration and the destination (C-ECHO), "
                                   "then exit."),
    ) -> None:
        """A DICOM node beside the PACS: receive CT series (C-STORE), denoise each, send the derived series on.

        Every received instance is on disk before it is acknowledged; a series is processed when no instance
        has arrived for --idle seconds; a killed node resumes from its spool, each series processed once."""
        import logging
        import signal
        import threading

        from ldct.denoiser import Denoiser, choose_backend, resolve_device
        from ldct.infer.node import Destination, Node, NodeConfig, echo
        from ldct.infer.pipeline import denoise_path

        cfg = NodeConfig(aet=aet, host=host, port=port, spool=spool, out=out,
                         forward=Destination.parse(forward) if forward else None, allow=list(allow or []),
                         idle=idle, forward_other=forward_other)
        cfg.check()
        den = Denoiser.load(model)
        if den.data_kind != "ct" or den.scale != 1:
            raise LdctError(f"ldct serve denoises CT: {den.describe()} is not a CT denoiser")
        chosen = choose_backend(backend, resolve_device("auto"))
        if chosen != "torch":
            try:
                den = den.use_backend(chosen)
            except LdctError as exc:
                if backend == chosen:
                    raise
                typer.echo(f"ldct: note: running on PyTorch ({exc.message})", err=True)
        if cfg.forward is not None:
            echo(cfg.forward, cfg.aet)
        if check:
            typer.echo(f"ok: model {den.describe()} ({den.backend}); spool {cfg.spool}"
                       + (f"; out {cfg.out}" if cfg.out else "")
                       + (f"; destination {cfg.forward} answers C-ECHO" if cfg.forward else ""))
            return
        logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s", datefmt="%Y-%m-%d %H:%M:%S")
        logging.getLogger("ldct.serve").setLevel(logging.INFO)  # one line per association and per series

        def process(inp: Path, target: Path) -> int:
            return denoise_path(inp, target, model=den, device="cpu").slices

        node = Node(cfg, process)
        node.start()
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        try:
            while not stop.wait(0.5):
                pass
        except KeyboardInterrupt:
            pass
        finally:
            node.stop()
            logging.getLogger("ldct.serve").info("stopped")
