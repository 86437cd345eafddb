"""HyperAdapt's jobs from a shell, without QGIS: the same engine functions, settings and sentences.

    python -m hyperadapt.cli finetune scene.tif fields.gpkg class adapter.pt --classification map.tif
    python -m hyperadapt.cli classify other_scene.tif adapter.pt map.tif
    python -m hyperadapt.cli evaluate map.tif reference.gpkg --class-field class --html report.html
    python -m hyperadapt.cli suggest scene.tif adapter.pt next.gpkg --training fields.gpkg --class-field class
    python -m hyperadapt.cli postprocess map.tif clean.tif --sieve 8
    python -m hyperadapt.cli pretrain backbone.pt scene1.tif scene2.tif --epochs 40

Every fine-tuning and pretraining setting is an option named after its field in
models.settings.FineTuneSettings or models.jobs.pretraining.PretrainSettings
(``--learning-rate 3e-3``, ``--targets attn.q attn.v``); what is not given keeps the engine's
default. A problem with the input is one sentence on stderr and exit status 2; cancel with Ctrl-C
(exit status 130), which leaves no output behind. Pretraining and fine-tuning run on several
processes under torchrun (DDP: gloo on CPUs, NCCL on GPUs), each taking its share of every batch,
the same steps as one process; rank 0 writes the files:

    torchrun --nproc_per_node 4 -m hyperadapt.cli pretrain backbone.pt scenes/*.tif --epochs 40
    torchrun --nproc_per_node 4 -m hyperadapt.cli finetune scene.tif fields.gpkg class adapter.pt
 For an installed plugin, put the folder holding ``hyperadapt`` (the
profile's ``python/plugins``) on PYTHONPATH; HyperAdapt's dependency folder is added by itself.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import signal
import sys
import time


def _settings_options(parser: argparse.ArgumentParser, settings_class, skip=()) -> None:
    """One option per settings field, typed from its annotation; unset ones stay defaults."""
    group = parser.add_argument_group(f"{settings_class.__name__} (engine defaults when unset)")
    for item in dataclasses.fields(settings_class):
        if item.name in skip:
            continue
        kind = str(item.type)
        flag = "--" + item.name.replace("_", "-")
        if kind.startswith("tuple[str"):
            group.add_argument(flag, dest=item.name, nargs="+", default=None)
        elif kind.startswith("tuple[int"):
            group.add_argument(flag, dest=item.name, nargs=2, type=int, default=None)
        elif kind.startswith("dict"):
            group.add_argument(flag, dest=item.name, type=json.loads, default=None,
                               help="JSON")
        elif kind == "bool":
            group.add_argument(flag, dest=item.name, default=None,
                               type=lambda text: text.lower() in ("1", "true", "yes", "on"),
                               help="true or false")
        else:
            base = kind.split("|")[0].strip()
            group.add_argument(flag, dest=item.name, default=None,
                               type={"int": int, "float": float}.get(base, str))


def _settings_from(args, settings_class):
    given = {item.name: getattr(args, item.name) for item in dataclasses.fields(settings_class)
             if getattr(args, item.name, None) is not None}
    return settings_class(**given)


class _Progress:
    """Progress lines on stderr: a new one for every 5 % or a new step."""

    def __init__(self):
        self.shown = (-1, "")

    def __call__(self, fraction, message="", *args, **info):
        percent = int(max(0.0, min(1.0, float(fraction))) * 100)
        if message != self.shown[1] or percent >= self.shown[0] + 5:
            self.shown = (percent, message)
            print(f"[{percent:3d} %] {message}", file=sys.stderr, flush=True)


def _parser() -> argparse.ArgumentParser:
    from .models import options
    from .models.jobs.pretraining import PretrainSettings
    from .models.settings import FineTuneSettings

    parser = argparse.ArgumentParser(prog="python -m hyperadapt.cli",
                                     description=__doc__.split("\n\n")[0])
    jobs = parser.add_subparsers(dest="job", required=True)

    finetune = jobs.add_parser("finetune", help="fine-tune on training polygons or points")
    for name in ("raster", "training", "class_field", "adapter"):
        finetune.add_argument(name)
    finetune.add_argument("--layer-name")
    finetune.add_argument("--classification", help="also classify the raster into this GeoTIFF")
    finetune.add_argument("--confidence", help="and write the top probability here")
    finetune.add_argument("--report", help="HTML report of the validation accuracy")
    finetune.add_argument("--sensor")
    _settings_options(finetune, FineTuneSettings)

    classify = jobs.add_parser("classify", help="classify a raster with an adapter file")
    for name in ("raster", "adapter", "output"):
        classify.add_argument(name)
    classify.add_argument("--confidence")
    classify.add_argument("--weights")
    classify.add_argument("--device", default="auto")
    classify.add_argument("--batch-size", type=int, default=64)
    classify.add_argument("--mode", choices=list(options.CLASSIFY_MODES),
                          help="tile or window (default: as the adapter was made)")

    evaluate = jobs.add_parser("evaluate", help="accuracy of a map against a reference")
    evaluate.add_argument("classification")
    evaluate.add_argument("reference", help="a layer (with --class-field) or a class raster")
    evaluate.add_argument("--class-field")
    evaluate.add_argument("--layer-name")
    evaluate.add_argument("--html")
    evaluate.add_argument("--json")
    evaluate.add_argument("--max-unmatched-share", type=float, default=None)

    suggest = jobs.add_parser("suggest", help="where to draw training polygons next")
    for name in ("raster", "adapter", "output"):
        suggest.add_argument(name)
    suggest.add_argument("--count", type=int, default=20)
    suggest.add_argument("--min-spacing", type=int, default=10)
    suggest.add_argument("--training")
    suggest.add_argument("--class-field")
    suggest.add_argument("--device", default="auto")

    postprocess = jobs.add_parser("postprocess", help="segment vote, majority filter, sieve")
    postprocess.add_argument("classification")
    postprocess.add_argument("output")
    postprocess.add_argument("--sieve", type=int, default=0, help="smallest patch kept, pixels")
    postprocess.add_argument("--majority", type=int, default=0, help="odd window side")
    postprocess.add_argument("--segment-size", type=int, default=0)
    postprocess.add_argument("--raster", help="the scene, for the segment vote")

    pretrain = jobs.add_parser("pretrain", help="pretrain a backbone on a sensor's scenes")
    pretrain.add_argument("backbone")
    pretrain.add_argument("rasters", nargs="+")
    pretrain.add_argument("--sensor")
    _settings_options(pretrain, PretrainSettings)
    return parser


def run(args) -> str:
    """Run the job named by ``args.job``; returns the line that says what it did."""
    from .models import jobs
    from .models.data.samples import describe_class_pixels

    progress = _Progress()
    if args.job == "finetune":
        from .models.settings import FineTuneSettings

        result = jobs.fine_tune(args.raster, args.training, args.class_field, args.adapter,
                                settings=_settings_from(args, FineTuneSettings),
                                layer_name=args.layer_name, sensor=args.sensor,
                                classification_path=args.classification,
                                confidence_path=args.confidence, report_path=args.report,
                                progress=progress)
        for note in result.notes:
            print(note, file=sys.stderr)
        return (f"Fine-tuned {len(result.classes)} classes in {result.seconds:.0f} s: "
                f"{result.adapter_path} ({result.adapter_bytes / 1024:.0f} kB)")
    if args.job == "classify":
        result = jobs.classify(args.raster, args.adapter, args.output,
                               confidence_path=args.confidence, weights=args.weights,
                               device=args.device, batch_size=args.batch_size, mode=args.mode,
                               progress=progress)
        return (f"Classified in {result.seconds:.0f} s: {result.output_path}; pixels per class: "
                f"{describe_class_pixels(result.classes, result.pixels_per_class)}")
    if args.job == "evaluate":
        extra = ({} if args.max_unmatched_share is None
                 else {"max_unmatched_share": args.max_unmatched_share})
        metrics = jobs.evaluate(args.classification, args.reference, class_field=args.class_field,
                                layer_name=args.layer_name, html_path=args.html,
                                json_path=args.json, progress=progress, **extra)
        return (f"OA {100 * metrics['overall_accuracy']:.1f} %, AA "
                f"{100 * metrics['average_accuracy']:.1f} %, kappa {metrics['kappa']:.3f} on "
                f"{metrics['num_samples']} reference pixels")
    if args.job == "suggest":
        found = jobs.suggest(args.raster, args.adapter, args.output, count=args.count,
                             min_spacing=args.min_spacing, training_path=args.training,
                             class_field=args.class_field, device=args.device,
                             progress=progress)
        return f"{len(found['suggestions'])} suggestions: {args.output}"
    if args.job == "postprocess":
        done = jobs.postprocess(args.classification, args.output, sieve_pixels=args.sieve,
                                majority_size=args.majority, segment_size=args.segment_size,
                                raster_path=args.raster, progress=progress)
        return (f"Cleaned ({', '.join(done['steps'])}), {done['changed_pixels']} pixels changed: "
                f"{args.output}")
    from .models.jobs.pretraining import PretrainSettings, pretrain_backbone

    result = pretrain_backbone(args.rasters, args.backbone,
                               settings=_settings_from(args, PretrainSettings),
                               sensor=args.sensor, progress=progress)
    return (f"Pretrained {result.steps} steps in {result.seconds / 60:.1f} min: "
            f"{args.backbone}")


def main(argv=None) -> int:
    from .plugin.dependencies import add_deps_to_path, quiet_openmp_threads

    quiet_openmp_threads()
    add_deps_to_path()
    args = _parser().parse_args(argv)
    from .models.errors import HyperAdaptError, os_error_sentence

    started = time.perf_counter()
    rank = _start_processes()
    # A scheduler's SIGTERM (Slurm's time limit, a kill) ends the job the way Ctrl-C does: what
    # it was writing goes, earlier results stay (models.stores.files.StagedFiles).
    signal.signal(signal.SIGTERM, _terminated)
    try:
        line = run(args)
        if rank == 0:
            print(line)
    except KeyboardInterrupt:
        print("Cancelled.", file=sys.stderr)
        return 130
    except _Terminated:
        print("Terminated; earlier results are as they were.", file=sys.stderr)
        return 143
    except HyperAdaptError as error:
        print(str(error), file=sys.stderr)
        return 2
    except OSError as error:
        print(os_error_sentence(error), file=sys.stderr)
        return 2
    finally:
        _end_processes()
    if rank == 0:
        print(f"{time.perf_counter() - started:.0f} s in all", file=sys.stderr)
    return 0


class _Terminated(BaseException):
    """SIGTERM, raised where the job is, so that its clean-up runs."""


def _terminated(signum, frame):
    raise _Terminated()


def _start_processes() -> int:
    """Under torchrun (WORLD_SIZE > 1), join the process group: gloo on CPUs, NCCL on GPUs, one
    GPU per process. Returns this process's rank (0 alone)."""
    import os

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0
    import torch
    import torch.distributed as dist

    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_rank()


def _end_processes() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
