"""Active learning with a simulated user: where to draw next, against drawing at random.

A user starts from a few polygons per class (bench.accuracy's "polygons" sampling, 10 pixels per
class), fine-tunes with the defaults on the scene-pretrained tiny backbone, and then for three
rounds adds two labels per class where a strategy points, labelling each spot as the ground
truth does over a 3 x 3 square (the pixels of the centre's class), among the pixels the reference
labels:

- "suggest": ``models.jobs.suggest`` (margin sampling, spacing, classes in turn; Tuia et al. 2011);
- "uncertainty": the most uncertain pixels alone, without spacing or class turns;
- "random": labelled pixels drawn at random (what drawing where it is easy amounts to);
- "suggest_warm": "suggest", each round continuing from the last adapter with a share of the
  steps (options.WARM_START_STEP_SHARE; FineTuneSettings.warm_start) instead of training afresh.

After each round the model is fine-tuned again from the backbone and scored on every labelled
pixel not used for training. OA is plotted against the number of training pixels.

    python -m bench.active [--scenes indian_pines enmap_potsdam] [--seeds 0 1 2] [--rounds 3]

Writes bench/results/active.json, active.md and active.png; ``--work DIR`` keeps runs.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from .accuracy import (DEFAULT_SCENES, PER_CLASS, SCENES, RunStore, pretrained_backbone, score,
                       split_pixels)
from .common import (RESULTS, log, machine_info, markdown_table, mean_std, publish, pyplot,
                     run_in_work_folder, save_figure, set_threads, write_markdown,
                     write_point_layer)

import numpy as np  # noqa: E402

STRATEGIES = ("suggest", "suggest_warm", "uncertainty", "random")
PER_CLASS_PER_ROUND = 2
SQUARE = 3
SPACING = 5
# The reference maps only part of a scene (Indian Pines: half its pixels), and a simulated user
# can only label what the reference knows; every strategy therefore chooses among labelled
# pixels, as active-learning studies do (Tuia et al. 2011): the suggestions asked for are this
# many times the spots needed, and the first ones on labelled ground are kept.
ASKED_PER_SPOT = 5
# What a simulated user is judged against: OA points over random additions after the last round,
# at the same number of training pixels; warm-started rounds' training time against afresh.
GOAL_LEAD_OVER_RANDOM = 10.0
GOAL_WARM_TIME_SHARE = 0.5


def label_squares(labels: np.ndarray, chosen: np.ndarray, spots) -> int:
    """Mark the 3 x 3 square around each spot, pixels of the centre's class; returns how many
    spots fell on unlabelled ground (none, as the strategies choose among labelled pixels)."""
    wasted = 0
    half = SQUARE // 2
    for row, col in spots:
        value = labels[row, col]
        if value <= 0:
            wasted += 1
            continue
        r0, c0 = max(0, row - half), max(0, col - half)
        block = labels[r0:row + half + 1, c0:col + half + 1]
        chosen[r0:row + half + 1, c0:col + half + 1] |= block == value
    return wasted


def next_spots(strategy: str, scene, adapter: str, layer: Path, chosen: np.ndarray, count: int,
               rng, work: Path, args) -> list[tuple[int, int]]:
    from hyperadapt.models.data.bands import BandAdaptation
    from hyperadapt.models.data.raster import RasterReader, read_raster_info
    from hyperadapt.models.jobs import rebuild_model, suggest
    from hyperadapt.models.jobs.suggestion import scene_candidates
    from hyperadapt.models.learning.device import choose_device
    from hyperadapt.models.network import adapters as adapter_methods
    from hyperadapt.models.stores.adapter_file import load_adapter_file

    if strategy == "random":
        rows, cols = np.nonzero((scene.labels > 0) & ~chosen)
        pick = rng.choice(len(rows), size=min(count, len(rows)), replace=False)
        return list(zip(rows[pick].tolist(), cols[pick].tolist()))
    if strategy == "suggest":
        out = work / "suggestions.gpkg"
        out.unlink(missing_ok=True)
        found = suggest(scene.raster, adapter, str(out), count=count * ASKED_PER_SPOT,
                        min_spacing=SPACING, step=1, training_path=str(layer),
                        class_field="class_id", device=args.device)
        out.unlink(missing_ok=True)
        spots = [(s.row, s.col) for s in found["suggestions"] if scene.labels[s.row, s.col] > 0]
        return spots[:count]
    record = load_adapter_file(adapter)
    model, _ = rebuild_model(record)
    device = choose_device(args.device)
    model.to(device)
    adapter_methods.merge_adapters(model)
    with RasterReader(read_raster_info(scene.raster)) as reader:
        found = scene_candidates(reader, model, BandAdaptation.from_state(record.band_adaptation),
                                 window_size=record.window_size, device=device,
                                 keep_per_tile=count * 20, spectral=record.spectral_kernel)
    order = [i for i in np.argsort(-found["scores"], kind="stable")
             if not chosen[found["rows"][i], found["cols"][i]]
             and scene.labels[found["rows"][i], found["cols"][i]] > 0]
    return [(int(found["rows"][i]), int(found["cols"][i])) for i in order[:count]]


def run_user(scene, backbone: str, seed: int, strategy: str, args, work: Path) -> list[dict]:
    """The simulated user's rounds: [{"round", "train_pixels", "oa", "aa", "kappa", ...}]."""
    from osgeo import gdal

    from hyperadapt.models.jobs import FineTuneSettings, fine_tune
    from hyperadapt.models.stores.adapter_file import load_adapter_file

    split = split_pixels(scene.labels, "polygons", PER_CLASS, seed)
    chosen = np.zeros(scene.labels.shape, dtype=bool)
    chosen[split["train"]] = True
    classes = len(scene.class_names)
    rng = np.random.default_rng([seed, 17])
    rounds = []
    for number in range(args.rounds + 1):
        rows, cols = np.nonzero(chosen)
        layer = write_point_layer(work / f"active_{scene.name}_{strategy}_{seed}.gpkg",
                                  scene.raster, rows, cols, scene.labels[rows, cols])
        previous = work / f"active_{(number + 1) % 2}.pt"
        adapter, classification = work / f"active_{number % 2}.pt", work / "active.tif"
        warm = str(previous) if strategy.endswith("_warm") and number > 0 else None
        started = time.perf_counter()
        fine_tune(scene.raster, str(layer), "class_id", str(adapter),
                  settings=FineTuneSettings(weights=backbone, seed=seed, device=args.device,
                                            warm_start=warm),
                  layer_name="training", sensor=scene.sensor,
                  classification_path=str(classification))
        seconds = time.perf_counter() - started
        # The training alone (the adapter records it): classifying the scene and fitting the
        # spectral classifier cost the same in every round, warm or not.
        record = load_adapter_file(str(adapter))
        training_seconds = float(record.training["seconds"])
        # Epochs run and the early stop tell a warm round's time against a fresh one's: a fresh
        # round that holds polygons out may stop well before its schedule ends.
        history = record.training.get("history") or [{}]
        schedule = {"epochs_run": int(record.training.get("epochs_run") or 0),
                    "epochs_scheduled": int(history[0].get("epochs") or 0),
                    "stopped_early": bool(record.metrics.get("stopped_early")),
                    "validation_pixels": int((record.metrics.get("split") or {})
                                             .get("validation_pixels", 0))}
        test = np.nonzero((scene.labels > 0) & ~chosen)
        predicted = gdal.Open(str(classification)).ReadAsArray()[test].astype(np.int64)
        found = score(scene, scene.labels[test], predicted)
        rounds.append({"round": number, "train_pixels": int(chosen.sum()), **found,
                       "fine_tune_seconds": seconds, "training_seconds": training_seconds,
                       **schedule})
        log(f"  {scene.name} seed {seed} {strategy} round {number}: {int(chosen.sum())} px, "
            f"OA {found['oa']:.1f}")
        if number == args.rounds:
            break
        started = time.perf_counter()
        spots = next_spots(strategy.removesuffix("_warm"), scene, str(adapter), layer, chosen,
                           PER_CLASS_PER_ROUND * classes, rng, work, args)
        rounds[-1]["suggest_seconds"] = time.perf_counter() - started
        rounds[-1]["wasted_spots"] = label_squares(scene.labels, chosen, spots)
    return rounds


def lead_at_same_pixels(users: list[list[dict]], baseline: list[list[dict]]) -> dict:
    """OA of each user's last round minus the baseline user's of the same seed at the same number
    of training pixels (linear along the baseline's rounds; a strategy whose squares overlap
    labels fewer pixels per round, so comparing last rounds would favour the other)."""
    leads = []
    for user, other in zip(users, baseline):
        pixels = [r["train_pixels"] for r in other]
        oas = [r["oa"] for r in other]
        leads.append(user[-1]["oa"] - float(np.interp(user[-1]["train_pixels"], pixels, oas)))
    return mean_std(leads)


def warm_time_share(report_scene: dict) -> dict | None:
    """Training seconds of the warm-started rounds against the same rounds trained afresh, and
    the whole rounds' (fine-tuning with the scene's classification); None without both."""
    warm, fresh = report_scene.get("suggest_warm"), report_scene.get("suggest")
    if not warm or not fresh or any("training_seconds" not in r for u in warm + fresh for r in u):
        return None

    def total(users, key):
        return sum(r[key] for user in users for r in user[1:])

    return {key: total(warm, key) / total(fresh, key)
            for key in ("training_seconds", "fine_tune_seconds")} | {
        "warm_training": total(warm, "training_seconds"),
        "fresh_training": total(fresh, "training_seconds")}


def verdict_lines(report: dict) -> list[str]:
    lines = []
    for scene, by_strategy in report["scenes"].items():
        suggest, random = by_strategy.get("suggest"), by_strategy.get("random")
        if suggest and random:
            lead = lead_at_same_pixels(suggest, random)
            pixels = np.mean([user[-1]["train_pixels"] for user in suggest])
            oa = np.mean([user[-1]["oa"] for user in suggest])
            met = "met" if lead["mean"] >= GOAL_LEAD_OVER_RANDOM else "NOT met"
            line = (f"- {scene}: after {len(suggest[0]) - 1} rounds, suggest {oa:.1f} % OA at "
                    f"{pixels:.0f} training pixels, {lead['mean']:+.1f} ± {lead['std']:.1f} "
                    f"points over random additions at the same number of pixels (each seed "
                    f"against its random user's curve). A lead of at least "
                    f"{GOAL_LEAD_OVER_RANDOM:g}: {met}.")
            if by_strategy.get("uncertainty"):
                alone = lead_at_same_pixels(by_strategy["uncertainty"], random)
                line += f" Uncertainty without spacing: {alone['mean']:+.1f} ± {alone['std']:.1f}."
            lines.append(line)
        share = warm_time_share(by_strategy)
        if share is not None:
            met = "met" if share["training_seconds"] <= GOAL_WARM_TIME_SHARE else "NOT met"
            lines.append(
                f"- {scene}: warm-started rounds trained in {share['training_seconds']:.2f} x the "
                f"time of training afresh ({share['warm_training']:.0f} s against "
                f"{share['fresh_training']:.0f} s over rounds 1 to {len(suggest[0]) - 1} and the "
                f"seeds); whole rounds, with the scene's classification, "
                f"{share['fine_tune_seconds']:.2f} x. At most {GOAL_WARM_TIME_SHARE:g}: {met}.")
    return lines


def epochs_cell(rounds: list[dict]) -> str:
    """'25-36 of 50 (2 stopped early)' over the seeds' rounds; '-' for runs kept from before
    the bench recorded epochs."""
    if any("epochs_run" not in r for r in rounds):
        return "-"
    run = sorted(r["epochs_run"] for r in rounds)
    scheduled = sorted({r["epochs_scheduled"] for r in rounds})
    early = sum(r["stopped_early"] for r in rounds)
    span = f"{run[0]}" if run[0] == run[-1] else f"{run[0]}-{run[-1]}"
    return (f"{span} of {'/'.join(map(str, scheduled))}"
            + (f" ({early} stopped early)" if early else ""))


def provenance(report: dict) -> str:
    """Which machine ran the simulated users, and which users an earlier invocation ran (kept in
    --work), whose machine and code may have been other."""
    kept = report.get("users_kept", 0)
    minutes = f"{report['seconds'] / 60:.0f} min"
    if not kept:
        return f"All users simulated in {minutes} on {report['machine']}."
    return (f"This invocation simulated {report.get('users_new', 0)} users in {minutes} on "
            f"{report['machine']}; the other {kept} come from earlier invocations kept in the "
            f"work folder (`--work`), made with the code of their time.")


def write_report(report: dict, out: Path) -> None:
    lines = ["# Active learning: where to draw next", "", "## Verdict", "",
             *verdict_lines(report), "", "## Rounds", "",
             "A simulated user (bench/active.py) starts from the accuracy bench's polygons (10 "
             "pixels per class) and adds, each round, two 3 x 3 squares per class where the "
             "strategy points; the model is fine-tuned again each round with the defaults on the "
             "scene-pretrained tiny backbone and scored on every labelled pixel not used for "
             "training. Mean ± spread over seeds; the time is one round's fine-tuning and "
             "choosing, on this machine; the epochs, those the seeds' trainings ran of those "
             "scheduled (a round whose classes reach the pixels for a hold-out may stop early "
             "on it).", ""]
    table = []
    for scene, by_strategy in report["scenes"].items():
        for strategy, users in by_strategy.items():
            for number in range(len(users[0])):
                oa = mean_std([user[number]["oa"] for user in users])
                pixels = np.mean([user[number]["train_pixels"] for user in users])
                seconds = np.mean([user[number]["fine_tune_seconds"]
                                   + user[number].get("suggest_seconds", 0.0) for user in users])
                table.append([scene, strategy, number, f"{pixels:.0f}",
                              f"{oa['mean']:.1f} ± {oa['std']:.1f}", f"{seconds:.0f}",
                              epochs_cell([user[number] for user in users])])
    lines += markdown_table(["scene", "strategy", "round", "training pixels", "OA %",
                             "seconds", "epochs run of scheduled"], table)
    lines += ["", f"Seeds {report['seeds']}. {provenance(report)}"]
    write_markdown(out / "active.md", lines)


def plot(report: dict, path: Path) -> None:
    plt = pyplot()
    scenes = report["scenes"]
    figure, axes = plt.subplots(1, len(scenes), figsize=(5 * len(scenes), 4), squeeze=False)
    for axis, (scene, by_strategy) in zip(axes[0], scenes.items()):
        for strategy, users in by_strategy.items():
            pixels = np.mean([[r["train_pixels"] for r in user] for user in users], axis=0)
            oas = np.mean([[r["oa"] for r in user] for user in users], axis=0)
            axis.plot(pixels, oas, marker="o", label=strategy)
        axis.set_title(scene)
        axis.set_xlabel("training pixels")
        axis.set_ylabel("OA %")
        axis.legend()
    save_figure(figure, path)


def run_benchmark(args, work: Path) -> dict:
    started = time.perf_counter()
    store = RunStore(path=work / "active_runs.json")
    report = {"machine": machine_info(), "seeds": args.seeds, "rounds": args.rounds,
              "scenes": {}, "users_new": 0, "users_kept": 0}
    for scene_name in args.scenes:
        scene = SCENES[scene_name](work)
        backbone, _ = pretrained_backbone(scene, "mnf", None, args, work)
        for strategy in args.strategies:
            users = []
            for seed in args.seeds:
                key = f"{scene.name}/{strategy}/{seed}/{args.rounds}"
                rounds = store.get(key)
                if rounds is None:
                    rounds = run_user(scene, backbone, seed, strategy, args, work)
                    store.put(key, rounds)
                    report["users_new"] += 1
                else:
                    report["users_kept"] += 1
                users.append(rounds)
            report["scenes"].setdefault(scene.name, {})[strategy] = users
    report["seconds"] = time.perf_counter() - started
    return report


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", nargs="+", default=list(DEFAULT_SCENES),
                        choices=list(SCENES))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--strategies", nargs="+", default=list(STRATEGIES), choices=STRATEGIES)
    parser.add_argument("--pretrain-epochs", type=int, default=40)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    set_threads(args.threads)
    report = run_in_work_folder(run_benchmark, args, "active")
    return publish(report, args.out, "active", write_report, plot)


if __name__ == "__main__":
    main()
