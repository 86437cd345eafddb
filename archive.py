"""Classify an archive of scenes with one adapter on Ray: this machine's cores or a cluster's GPUs.

Each worker is a Ray actor that loads the adapter and rebuilds its backbone once
(models.jobs.load_adapter) and then classifies scene after scene (models.jobs.classify_with), so
the model is not read again per scene; with GPUs, one actor per GPU. Outputs are written as
classify writes them, complete or absent, and a scene whose map is already there is skipped, so a
rerun resumes. A failed scene is tried again (``retries`` times); one that keeps failing is
reported by name at the end without stopping the others. A dead worker is restarted by Ray and its
scene retried.

    python -m hyperadapt.archive adapter.pt maps/ archive/*.tif [--workers 2] [--address auto]

Ray is an optional dependency (``pip install ray``), never installed into QGIS's Python by the
plugin. ``--address`` joins a running cluster (``ray start --head`` on one machine, ``ray start
--address HEAD:6379`` on the others); without it Ray runs on this machine.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def output_for(raster: str, out_dir) -> Path:
    """The map of a scene: ``<out_dir>/<scene stem>_classes.tif``."""
    return Path(out_dir) / f"{Path(raster).stem}_classes.tif"


class _Classifier:
    """One worker: the adapter loaded once, then any number of scenes."""

    def __init__(self, adapter_path: str, weights: str | None, device: str, threads: int):
        import torch

        from .models.jobs import load_adapter

        torch.set_num_threads(max(1, threads))
        self.loaded = load_adapter(adapter_path, weights=weights, device=device)

    def classify(self, raster: str, output: str, batch_size: int) -> dict:
        from .models.jobs import classify_with

        started = time.perf_counter()
        result = classify_with(self.loaded, raster, output, batch_size=batch_size)
        return {"raster": raster, "output": output, "seconds": time.perf_counter() - started,
                "pixels": int(sum(result.pixels_per_class.values()))}


def classify_archive(adapter_path: str, rasters: list[str], out_dir: str, *,
                     workers: int | None = None, address: str | None = None,
                     weights: str | None = None, retries: int = 2, batch_size: int = 64,
                     say=print, worker_class=None) -> dict:
    """Classify ``rasters`` into ``out_dir`` on Ray; returns {"done", "skipped", "failed"}.

    Args:
        workers: actors to start (default: the GPUs Ray sees, else half the CPUs).
        address: a Ray cluster to join ("auto" or "HOST:PORT"); None: a local Ray.
        retries: further tries of a scene that failed.
        say: where progress lines go.
        worker_class: the actor class (default: one that loads the adapter once and classifies
            with it); it must be importable by Ray's workers.
    """
    import ray

    from .models.errors import HyperAdaptError
    from .models.stores.adapter_file import load_adapter_file

    load_adapter_file(adapter_path)        # a bad adapter is one sentence before Ray starts
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    todo, skipped = [], []
    for raster in dict.fromkeys(str(r) for r in rasters):
        (skipped if output_for(raster, out_dir).exists() else todo).append(raster)
    report = {"done": [], "skipped": skipped, "failed": {}}
    if skipped:
        say(f"{len(skipped)} scene(s) already classified, skipped.")
    if not todo:
        return report
    started_ray = not ray.is_initialized()
    if started_ray:
        ray.init(address=address, include_dashboard=False, log_to_driver=False,
                 ignore_reinit_error=True)
    try:
        gpus = int(ray.cluster_resources().get("GPU", 0))
        cpus = int(ray.cluster_resources().get("CPU", 1))
        count = workers or (gpus if gpus else max(1, cpus // 2))
        threads = max(1, cpus // count)
        actor = ray.remote(num_gpus=1 if gpus else 0, num_cpus=threads, max_restarts=-1,
                           max_task_retries=retries)(worker_class or _Classifier)
        pool = [actor.remote(adapter_path, weights, "cuda" if gpus else "cpu", threads)
                for _ in range(min(count, len(todo)))]
        tries = {raster: 0 for raster in todo}
        queue = list(todo)
        running = {}
        started = time.perf_counter()
        pixels = 0
        free = list(pool)
        while queue or running:
            while queue and free:
                raster, worker = queue.pop(0), free.pop(0)
                ref = worker.classify.remote(raster, str(output_for(raster, out_dir)),
                                             batch_size)
                running[ref] = (raster, worker)
            ready, _ = ray.wait(list(running), num_returns=1)
            raster, worker = running.pop(ready[0])
            free.append(worker)
            try:
                done = ray.get(ready[0])
            except Exception as error:       # the scene's own error, or its worker died
                tries[raster] += 1
                cause = getattr(error, "cause", None) or error
                if tries[raster] <= retries and not isinstance(cause, HyperAdaptError):
                    queue.append(raster)
                    say(f"{Path(raster).name} failed ({type(cause).__name__}); trying again.")
                else:
                    report["failed"][raster] = str(cause).strip().splitlines()[-1]
                continue
            report["done"].append(done)
            pixels += done["pixels"]
            elapsed = time.perf_counter() - started
            finished = len(report["done"]) + len(report["failed"])
            left = elapsed / finished * (len(todo) - finished)
            say(f"{len(report['done'])}/{len(todo)} scenes, {pixels / elapsed:,.0f} pixels/s, "
                f"about {left / 60:.1f} min left: {Path(done['output']).name}")
    finally:
        if started_ray:
            ray.shutdown()
    for raster, reason in report["failed"].items():
        say(f"FAILED {raster}: {reason}")
    return report


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hyperadapt.archive",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("adapter")
    parser.add_argument("out_dir")
    parser.add_argument("rasters", nargs="+")
    parser.add_argument("--workers", type=int)
    parser.add_argument("--address")
    parser.add_argument("--weights")
    parser.add_argument("--retries", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args(argv)
    from .plugin.dependencies import add_deps_to_path

    add_deps_to_path()
    from .models.errors import HyperAdaptError

    try:
        report = classify_archive(args.adapter, args.rasters, args.out_dir,
                                  workers=args.workers, address=args.address,
                                  weights=args.weights, retries=args.retries,
                                  batch_size=args.batch_size)
    except HyperAdaptError as error:
        print(str(error), file=sys.stderr)
        return 2
    except ImportError:
        print("Classifying an archive needs Ray: pip install ray", file=sys.stderr)
        return 2
    print(f"{len(report['done'])} classified, {len(report['skipped'])} skipped, "
          f"{len(report['failed'])} failed.")
    return 1 if report["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
