"""Cost of each fine-tuning method at the real SpectralGPT ViT-B size.

For every method (fft, head, lora, lora_plus, krona, krona_plus, lokr) on one fixed batch of
8 samples of 12 x 32 x 32 (64 tokens each):
- one AdamW training step (forward, backward, step), as a ratio to full fine-tuning;
- inference of the adapter unmerged and merged, as ratios to the plain frozen backbone;
- trainable parameters (absolute and as a share of the backbone) and the size of the saved
  adapter + head (``torch.save`` of ``trainable_state_dict``).

Times are the minimum over the repetitions after warm-up (the least disturbed by other work on
the machine); medians are stored as well. CUDA with bfloat16 autocast is used when available.

    python -m bench.methods [--repeats 5] [--warmup 2] [--threads N]

On a CPU shared with other work, ``--threads 1`` gives steadier ratios: with more threads than
free cores, every parallel region waits for its slowest thread, which hurts the many small
operations of the adapters more than the large matrix products of full fine-tuning.

Writes bench/results/methods.json and bench/results/methods.md.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import io
import json
import platform
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from hyperadapt.models.network.adapters import (METHODS, PLUS_METHODS, AdapterConfig, apply_adapter,
                                                count_parameters, merge_adapters, param_groups,
                                                trainable_state_dict, unmerge_adapters)
from hyperadapt.models.network.spectralgpt import spectralgpt_base

RESULTS = Path(__file__).resolve().parent / "results"
BENCH_METHODS = ("fft", "head", "lora", "lora_plus", "krona", "krona_plus", "lokr")
PEFT_METHODS = ("lora", "lora_plus", "krona", "krona_plus", "lokr")
LR = 1e-4
LR_RATIO = 4.0
TARGET_PEFT_STEP_RATIO = 0.75
TARGET_MERGED_RATIO = 1.02


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def autocast(device: torch.device):
    if device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def timed(fn, device: torch.device) -> float:
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


def summary(times: list[float]) -> dict:
    return {"min_s": min(times), "median_s": statistics.median(times), "runs_s": times}


def adapted_model(base, method: str):
    config = AdapterConfig(method=method, lr_ratio=LR_RATIO if method in PLUS_METHODS else 1.0)
    return apply_adapter(copy.deepcopy(base), config)


def saved_bytes(model) -> int:
    buffer = io.BytesIO()
    torch.save(trainable_state_dict(model), buffer)
    return len(buffer.getvalue())


def time_training(base, x, y, device, *, warmup, repeats) -> dict:
    """Step times and sizes per method; the methods take turns, so load drifts hit all alike."""
    runs = {}
    for method in BENCH_METHODS:
        torch.manual_seed(0)
        model = adapted_model(base, method).train()
        runs[method] = (model, torch.optim.AdamW(param_groups(model, lr=LR)))

    def step(model, optimizer):
        optimizer.zero_grad(set_to_none=True)
        with autocast(device):
            loss = F.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()

    for model, optimizer in runs.values():
        for _ in range(warmup):
            step(model, optimizer)
    times = {method: [] for method in runs}
    for _ in range(repeats):
        for method, (model, optimizer) in runs.items():
            times[method].append(timed(lambda: step(model, optimizer), device))
    results = {}
    for method, (model, _) in runs.items():
        results[method] = {"step": summary(times[method]), **count_parameters(model),
                           "adapter_file_bytes": saved_bytes(model)}
        print(f"{method:>10}: step {results[method]['step']['min_s']:.3f} s, trainable "
              f"{results[method]['trainable']:,}, file {results[method]['adapter_file_bytes']:,} B",
              flush=True)
    return results


def time_inference(base, x, device, *, warmup, repeats) -> dict:
    """Frozen backbone, then each adapter unmerged and merged, in turns; minimum times and ratios."""
    frozen = base.eval()
    adapted = {}
    for method in PEFT_METHODS:
        torch.manual_seed(0)
        adapted[method] = adapted_model(base, method).eval()

    def forward(model):
        with torch.inference_mode(), autocast(device):
            model(x)

    for model in (frozen, *adapted.values()):
        for _ in range(warmup):
            forward(model)
    frozen_times = []
    times = {method: {"unmerged": [], "merged": []} for method in adapted}
    # Taking turns spreads slow drifts of the machine's load over every variant alike.
    for _ in range(repeats):
        frozen_times.append(timed(lambda: forward(frozen), device))
        for method, model in adapted.items():
            unmerge_adapters(model)
            times[method]["unmerged"].append(timed(lambda: forward(model), device))
            merge_adapters(model)
            times[method]["merged"].append(timed(lambda: forward(model), device))
    frozen_summary = summary(frozen_times)
    results = {}
    for method, found in times.items():
        row = {"frozen": frozen_summary, "unmerged": summary(found["unmerged"]),
               "merged": summary(found["merged"])}
        row["unmerged_ratio"] = row["unmerged"]["min_s"] / frozen_summary["min_s"]
        row["merged_ratio"] = row["merged"]["min_s"] / frozen_summary["min_s"]
        results[method] = row
        print(f"{method:>10}: unmerged x{row['unmerged_ratio']:.3f}, "
              f"merged x{row['merged_ratio']:.3f}", flush=True)
    return results


def write_markdown(report: dict, path: Path) -> None:
    train = report["training"]
    lines = [
        "# Fine-tuning methods at SpectralGPT ViT-B size",
        "",
        f"Device: {report['device']}, torch threads: {report['threads']}, torch {report['torch']}. "
        f"Batch of {report['batch_size']} samples of 12 x {report['input_size']} x "
        f"{report['input_size']} ({report['num_tokens']} tokens), {report['num_classes']} classes; "
        f"AdamW, adapters on attn.q and attn.v of all 12 blocks; minimum of "
        f"{report['repeats']} timed runs after {report['warmup']} warm-up runs.",
        "",
        "| Method | Train step (s) | x FFT | Trainable params (incl. head) | % of backbone | Saved file |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for method, row in train.items():
        lines.append(
            f"| {METHODS[method]} | {row['step']['min_s']:.3f} | {row['step_ratio_to_fft']:.2f} | "
            f"{row['trainable']:,} | {row['trainable_percent_of_backbone']:.4f} | "
            f"{row['adapter_file_bytes'] / 1e6:.3f} MB |")
    frozen = next(iter(report["inference"].values()))["frozen"]["min_s"]
    lines += ["", f"Inference of the same batch; plain frozen backbone: {frozen:.3f} s.", "",
              "| Method | Unmerged (s) | x frozen | Merged (s) | x frozen |",
              "| --- | ---: | ---: | ---: | ---: |"]
    for method, row in report["inference"].items():
        lines.append(
            f"| {METHODS[method]} | {row['unmerged']['min_s']:.3f} | {row['unmerged_ratio']:.3f} | "
            f"{row['merged']['min_s']:.3f} | {row['merged_ratio']:.3f} |")
    targets = report["targets"]
    lines += ["", f"Targets: PEFT training step <= {TARGET_PEFT_STEP_RATIO} x FFT: "
                  f"{'met' if targets['peft_step_met'] else 'NOT met'} (worst "
                  f"{targets['worst_peft_step_ratio']:.2f}); merged inference <= "
                  f"{TARGET_MERGED_RATIO} x frozen: {'met' if targets['merged_met'] else 'NOT met'} "
                  f"(worst {targets['worst_merged_ratio']:.3f}).", ""]
    path.write_text("\n".join(lines))


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--input-size", type=int, default=32)
    parser.add_argument("--num-classes", type=int, default=16)
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads for torch (default: torch's choice)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    base = spectralgpt_base(img_size=args.input_size, num_classes=args.num_classes).to(device)
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(args.batch_size, 12, args.input_size, args.input_size,
                   generator=generator).to(device)
    y = torch.randint(0, args.num_classes, (args.batch_size,), generator=generator).to(device)

    training = time_training(base, x, y, device, warmup=args.warmup, repeats=args.repeats)
    fft_step = training["fft"]["step"]["min_s"]
    for row in training.values():
        row["step_ratio_to_fft"] = row["step"]["min_s"] / fft_step
        row["trainable_percent_of_backbone"] = 100 * row["trainable"] / row["backbone"]

    inference = time_inference(base, x, device, warmup=args.warmup, repeats=2 * args.repeats)

    worst_step = max(training[m]["step_ratio_to_fft"] for m in PEFT_METHODS)
    worst_merged = max(row["merged_ratio"] for row in inference.values())
    report = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda"
        else f"CPU {platform.processor() or platform.machine()}",
        "threads": torch.get_num_threads(), "torch": torch.__version__,
        "amp": "bfloat16" if device.type == "cuda" else None,
        "batch_size": args.batch_size, "input_size": args.input_size,
        "num_tokens": base.num_tokens, "num_classes": args.num_classes,
        "repeats": args.repeats, "warmup": args.warmup, "optimizer": "AdamW", "lr": LR,
        "lr_ratio_plus_methods": LR_RATIO,
        "training": training, "inference": inference,
        "targets": {"peft_step_ratio_max": TARGET_PEFT_STEP_RATIO,
                    "worst_peft_step_ratio": worst_step,
                    "peft_step_met": worst_step <= TARGET_PEFT_STEP_RATIO,
                    "merged_ratio_max": TARGET_MERGED_RATIO, "worst_merged_ratio": worst_merged,
                    "merged_met": worst_merged <= TARGET_MERGED_RATIO},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "methods.json").write_text(json.dumps(report, indent=1))
    write_markdown(report, args.out / "methods.md")
    print((args.out / "methods.md").read_text())
    return report


if __name__ == "__main__":
    main()
