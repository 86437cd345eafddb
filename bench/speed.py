"""Classification speed at SpectralGPT ViT-B size, against the machine's compute-bound limit.

Pixels per second through the engine's batched prediction path
(``models.learning.inference.predict_windows``: windows of 12 x 9 x 9 are resized to the model input
on the device, run through the model in batches, softmaxed) for:

- the plain frozen backbone (no adapter), the adapter unmerged and the adapter merged (KronA+ by
  default; ``--methods`` adds others);
- fp32 and bfloat16 autocast on the CPU (on a GPU the engine always autocasts, so only that runs);
- model inputs of 16 x 16 (16 tokens) and 32 x 32 (64 tokens).

Each figure is set against the compute-bound limit: the model's FLOPs per pixel, counted from
its configuration (patch embedding, attention q/k/v/proj, the two attention matrix products, the
MLP, the head), divided by the matrix-multiply throughput this machine reaches on the model's own
shapes (``torch.matmul`` of (tokens x batch, 768) x (768, 768) and x (768, 3072), timed here).

The cost of a training step per method, trainable parameters and adapter file sizes are measured
by ``bench/methods.py`` (bench/results/methods.md); they are not repeated here.

    python -m bench.speed [--quick] [--input-sizes 16 32] [--methods krona_plus] [--threads 2]

Writes bench/results/speed.json, speed.md and speed.png.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import json
import time
from pathlib import Path

from .common import (RESULTS, log, machine_info, markdown_table, publish, pyplot, save_figure,
                     set_threads, synchronize, time_repeats, write_markdown)

import torch  # noqa: E402  (after .common, which sets the OpenMP waiting policy)

VARIANTS = ("frozen", "unmerged", "merged")
VARIANT_LABELS = {"frozen": "frozen backbone", "unmerged": "adapter unmerged",
                  "merged": "adapter merged"}


def model_flops_per_window(config: dict, input_size: int, num_classes: int) -> dict:
    """Multiply-add FLOPs (2 per multiply-accumulate) of one forward pass, by part.

    Counted analytically from the SpectralGPT configuration: the Conv3d tubelet embedding is a
    (tokens, tubelet_bands * patch^2) x (.., embed_dim) product; each block has four D x D
    projections (q, k, v, proj), the two attention products (QK^T and AV, N x N x D each) and the
    MLP (D x hidden and hidden x D); the head is D x classes. Norms, softmax, GELU and adds are left
    out (they are memory-bound and a few per cent of the total).
    """
    dim, depth = config["embed_dim"], config["depth"]
    patch, tubelet = config["patch_size"], config["tubelet_bands"]
    hidden = int(dim * config["mlp_ratio"])
    tokens = (input_size // patch) ** 2 * (config["in_bands"] // tubelet)
    parts = {
        "patch_embed": 2 * tokens * tubelet * patch * patch * dim,
        "attention_projections": depth * 4 * 2 * tokens * dim * dim,
        "attention_matmuls": depth * 2 * 2 * tokens * tokens * dim,
        "mlp": depth * 2 * 2 * tokens * dim * hidden,
        "head": 2 * dim * num_classes,
    }
    return {"tokens": tokens, "parts": parts, "total": sum(parts.values())}


def matmul_throughput(rows: int, inner: int, cols: int, dtype: torch.dtype, device, *,
                      repeats: int) -> dict:
    """FLOP/s of torch.matmul (rows, inner) x (inner, cols) in ``dtype`` on ``device``."""
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(rows, inner, generator=generator).to(device=device, dtype=dtype)
    b = torch.randn(inner, cols, generator=generator).to(device=device, dtype=dtype)
    # Enough products per timed call that a call lasts long enough to time well.
    flops_per_product = 2 * rows * inner * cols
    per_call = max(1, min(64, int(1e10 // flops_per_product)))

    def run():
        for _ in range(per_call):
            torch.matmul(a, b)

    timing = time_repeats(run, repeats=repeats, warmup=1, device=device)
    return {"shape": [rows, inner, cols], "dtype": str(dtype).replace("torch.", ""),
            "products_per_call": per_call, "time": timing,
            "flops_per_s": per_call * flops_per_product / timing["min_s"]}


def compute_bound_limit(flops: dict, throughput_square: float, throughput_wide: float) -> float:
    """Pixels per second if every product ran at the measured matmul throughput.

    The MLP runs at the (.., 768) x (768, 3072) rate, everything else at the (.., 768) x (768, 768)
    rate (the attention and embedding products are no larger than the projections).
    """
    parts = flops["parts"]
    wide = parts["mlp"]
    square = flops["total"] - wide
    return 1.0 / (square / throughput_square + wide / throughput_wide)


def precision_context(name: str, device):
    """fp32 runs as the engine does; "bf16" wraps the engine call in CPU bfloat16 autocast."""
    if name == "bf16" and device.type == "cpu":
        return torch.autocast(device_type="cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def build_variants(base, method: str) -> dict:
    from hyperadapt.models.network.adapters import AdapterConfig, apply_adapter, merge_adapters

    torch.manual_seed(0)
    unmerged = apply_adapter(copy.deepcopy(base), AdapterConfig(method=method, init_weights=False))
    merged = copy.deepcopy(unmerged)
    merge_adapters(merged)
    return {"frozen": base, "unmerged": unmerged.eval(), "merged": merged.eval()}


def time_classification(variants: dict, windows: torch.Tensor, *, input_size: int, device,
                        batch_size: int, precision: str, repeats: int, warmup: int) -> dict:
    """Pixels per second of each variant; variants take turns so load drifts hit all alike."""
    from hyperadapt.models.learning.inference import predict_windows

    def classify(model, inputs=windows):
        with precision_context(precision, device):
            predict_windows(model, inputs, device=device,
                            batch_size=batch_size)

    # One batch warms each variant up (kernel selection, allocator); it is not timed.
    for model in variants.values():
        for _ in range(warmup):
            classify(model, windows[:batch_size])
    runs = {name: [] for name in variants}
    for _ in range(repeats):
        for name, model in variants.items():
            synchronize(device)
            start = time.perf_counter()
            classify(model)
            synchronize(device)
            runs[name].append(time.perf_counter() - start)
    result = {}
    for name, times in runs.items():
        best = min(times)
        result[name] = {"min_s": best, "runs_s": times, "pixels": len(windows),
                        "pixels_per_s": len(windows) / best}
    return result


def write_report(report: dict, out: Path) -> None:
    rows = []
    for entry in report["runs"]:
        frozen = entry["results"]["frozen"]["pixels_per_s"]
        for variant in VARIANTS:
            found = entry["results"][variant]
            rows.append([
                f"{entry['input_size']} x {entry['input_size']} ({entry['tokens']} tokens)",
                entry["precision_label"], entry["method_label"] if variant != "frozen" else "-",
                VARIANT_LABELS[variant], f"{found['pixels_per_s']:.1f}",
                f"{found['pixels_per_s'] / frozen:.3f}",
                f"{entry['limit_pixels_per_s']:.1f}",
                f"{100 * found['pixels_per_s'] / entry['limit_pixels_per_s']:.0f} %"])
    machine = report["machine"]
    lines = [
        "# Classification speed, SpectralGPT ViT-B",
        "",
        f"Device: {machine['device']}, {machine['threads']} PyTorch threads of "
        f"{machine['cores']} cores (1-min load average at start "
        f"{machine['load_average_1min_at_start']}; "
        f"the cores are shared with other work, so each figure is the best of "
        f"{report['repeats']} runs), torch {machine['torch']}.",
        f"Path: `models.learning.inference.predict_windows` on {report['pixels']} random windows "
        f"of 12 x {report['window_size']} x {report['window_size']} (resized to the input "
        f"inside), batch {report['batch_size']} (jobs.classify uses 64), {report['num_classes']} "
        f"classes; the adapter targets attn.q and attn.v of all 12 blocks.",
        "",
        *markdown_table(["Input", "Precision", "Adapter", "Model", "Pixels/s", "x frozen",
                         "Compute-bound limit (px/s)", "Share of limit"], rows,
                        align="llllrrrr"),
        "",
        "## Compute-bound limit",
        "",
        "FLOPs per pixel are counted from the model configuration (one window per pixel): patch "
        "embedding, attention q/k/v/proj, the QK^T and AV products, the MLP and the head. The "
        "limit divides them by the `torch.matmul` throughput measured here on the model's shapes "
        "(MLP FLOPs at the (.., 768) x (768, 3072) rate, the rest at the (.., 768) x (768, 768) "
        "rate), each the better of a timing just before and one just after the model's. The "
        "unmerged adapter's own FLOPs are not in the count, so its extra cost shows as a lower "
        "share. A share above 100 % means the matrix-product timing was disturbed by other work "
        "on the machine (the model cannot beat its own products).",
        "",
    ]
    flop_rows = []
    for size, flops in report["flops"].items():
        parts = flops["parts"]
        flop_rows.append([f"{size} x {size}", flops["tokens"], f"{flops['total'] / 1e9:.2f}",
                          f"{parts['attention_projections'] / 1e9:.2f}",
                          f"{parts['attention_matmuls'] / 1e9:.3f}",
                          f"{parts['mlp'] / 1e9:.2f}", f"{parts['patch_embed'] / 1e9:.3f}"])
    lines += markdown_table(["Input", "Tokens", "GFLOP/pixel", "q/k/v/proj", "attention products",
                             "MLP", "patch embedding"], flop_rows)
    lines += [""]
    mm_rows = [[f"({m['shape'][0]}, {m['shape'][1]}) x ({m['shape'][1]}, {m['shape'][2]})",
                m["dtype"], f"{m['flops_per_s'] / 1e9:.0f}"] for m in report["matmul"]]
    lines += markdown_table(["torch.matmul shape (rows = tokens x batch)", "dtype", "GFLOP/s"],
                            mm_rows, align="llr")
    lines += ["", "## Headline", ""]
    lines += [f"- {line}" for line in report["headline"]]
    merged = [e["results"]["merged"]["pixels_per_s"] / e["results"]["frozen"]["pixels_per_s"]
              for e in report["runs"]]
    if merged:
        lines += [f"- A merged adapter runs exactly the frozen backbone's operations (the update "
                  f"is folded into the weights), so the spread of merged / frozen, "
                  f"{min(merged):.2f} to {max(merged):.2f} here, is this machine's timing noise; "
                  f"differences inside it mean nothing."]
    methods = report.get("methods_bench")
    lines += ["", "## Training step, parameters and adapter size", "",
              "Measured by `python -m bench.methods` (see [methods.md](methods.md)); not repeated "
              "here."]
    if methods:
        lines += [f"From methods.json: {methods}"]
    lines += ["", "![speed](speed.png)", ""]
    write_markdown(out / "speed.md", lines)


def plot(report: dict, path: Path) -> None:
    plt = pyplot()
    sizes = sorted({entry["input_size"] for entry in report["runs"]})
    figure, axes = plt.subplots(1, len(sizes), figsize=(5.2 * len(sizes), 4), squeeze=False)
    colors = {"fp32": "#4477aa", "bf16": "#ee6677", "bf16 autocast": "#ee6677"}
    for axis, size in zip(axes[0], sizes):
        entries = [e for e in report["runs"] if e["input_size"] == size]
        width = 0.8 / max(len(entries), 1)
        for index, entry in enumerate(entries):
            xs = [i + (index - (len(entries) - 1) / 2) * width for i in range(len(VARIANTS))]
            values = [entry["results"][v]["pixels_per_s"] for v in VARIANTS]
            label = f"{entry['precision_label']} ({entry['method_label']})"
            color = colors.get(entry["precision"], None)
            axis.bar(xs, values, width=width * 0.95, label=label, color=color,
                     alpha=1.0 - 0.3 * (index // 2))
            axis.hlines(entry["limit_pixels_per_s"], xs[0] - width / 2, xs[-1] + width / 2,
                        colors=color or "k", linestyles="dashed", linewidth=1)
        axis.set_xticks(range(len(VARIANTS)))
        axis.set_xticklabels([VARIANT_LABELS[v].replace(" ", "\n", 1) for v in VARIANTS])
        axis.set_title(f"input {size} x {size} ({entries[0]['tokens']} tokens)")
        axis.set_ylabel("pixels per second")
        axis.set_ylim(0, 1.35 * max(e["limit_pixels_per_s"] for e in entries))
        axis.legend(fontsize=8, title="dashed: compute-bound limit", title_fontsize=8,
                    loc="upper left", ncol=2)
    figure.suptitle(f"SpectralGPT ViT-B classification speed, {report['machine']['device']}, "
                    f"{report['machine']['threads']} threads", fontsize=10)
    save_figure(figure, path)


def methods_bench_summary() -> str | None:
    """One line from bench/methods.py's results, when they exist (read, never re-measured)."""
    path = RESULTS / "methods.json"
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
        row = data["training"]["krona_plus"]
        return (f"KronA+ training step {row['step_ratio_to_fft']:.2f} x full fine-tuning, "
                f"{row['trainable']:,} trainable parameters, adapter + head file "
                f"{row['adapter_file_bytes'] / 1e3:.0f} kB ({data['device']}).")
    except (KeyError, ValueError, TypeError):
        return None


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 16 x 16 only, few pixels, one repeat")
    parser.add_argument("--input-sizes", type=int, nargs="+", default=[16, 32])
    parser.add_argument("--methods", nargs="+", default=["krona_plus"])
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"],
                        help="CPU only; a GPU always runs the engine's autocast")
    parser.add_argument("--pixels", type=int, default=None,
                        help="windows per timed call (default: 2 batches)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--window-size", type=int, default=9)
    parser.add_argument("--num-classes", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.quick:
        args.input_sizes, args.repeats, args.warmup = [16], 1, 0
        args.batch_size, args.pixels = 16, 16

    from hyperadapt.models.learning.device import choose_device
    from hyperadapt.models.network.adapters import METHODS
    from hyperadapt.models.network.spectralgpt import BASE_CONFIG, spectralgpt_base

    set_threads(args.threads)
    device = choose_device(args.device)
    precisions = args.precisions if device.type == "cpu" else ["autocast"]
    pixels = args.pixels or 2 * args.batch_size
    started = time.perf_counter()
    generator = torch.Generator().manual_seed(0)
    windows = torch.rand(pixels, 12, args.window_size, args.window_size, generator=generator)

    report = {"machine": machine_info(device), "pixels": pixels, "batch_size": args.batch_size,
              "window_size": args.window_size, "num_classes": args.num_classes,
              "repeats": args.repeats, "warmup": args.warmup, "flops": {}, "matmul": [],
              "runs": []}
    for size in args.input_sizes:
        torch.manual_seed(0)
        base = spectralgpt_base(img_size=size, num_classes=args.num_classes).to(device).eval()
        config = {**BASE_CONFIG, **base.config}
        flops = model_flops_per_window(config, size, args.num_classes)
        report["flops"][size] = flops
        rows = flops["tokens"] * args.batch_size
        log(f"input {size}: {flops['tokens']} tokens, {flops['total'] / 1e9:.2f} GFLOP per pixel")
        widths = (config["embed_dim"], int(config["embed_dim"] * config["mlp_ratio"]))

        def measure_matmul(precision):
            fp32 = precision == "fp32" and device.type == "cpu"
            dtype = torch.float32 if fp32 else torch.bfloat16
            return [matmul_throughput(rows, config["embed_dim"], cols, dtype, device,
                                      repeats=max(5, args.repeats)) for cols in widths]

        for method in args.methods:
            variants = build_variants(base, method)
            for precision in precisions:
                # The matrix products are timed just before and just after the model, and the
                # better figure of each kept, so a burst of other work on the machine during one
                # of them does not lower the limit.
                before = measure_matmul(precision)
                results = time_classification(variants, windows, input_size=size, device=device,
                                              batch_size=args.batch_size, precision=precision,
                                              repeats=args.repeats, warmup=args.warmup)
                after = measure_matmul(precision)
                best = [max(pair, key=lambda m: m["flops_per_s"]) for pair in zip(before, after)]
                report["matmul"] += [{**m, "input_size": size} for m in best]
                limit = compute_bound_limit(flops, best[0]["flops_per_s"], best[1]["flops_per_s"])
                log(f"  matmul {precision}: {best[0]['flops_per_s'] / 1e9:.0f} / "
                    f"{best[1]['flops_per_s'] / 1e9:.0f} GFLOP/s")
                label = {"fp32": "fp32", "bf16": "bf16 autocast",
                         "autocast": "engine autocast (bf16/fp16)"}[precision]
                report["runs"].append({"input_size": size, "tokens": flops["tokens"],
                                       "method": method, "method_label": METHODS[method],
                                       "precision": precision, "precision_label": label,
                                       "limit_pixels_per_s": limit, "results": results})
                log(f"  {METHODS[method]} {label}: " + ", ".join(
                    f"{v} {results[v]['pixels_per_s']:.1f} px/s" for v in VARIANTS)
                    + f" (limit {limit:.1f})")
            del variants
        del base

    headline = []
    for entry in report["runs"]:
        res = entry["results"]
        headline.append(
            f"{entry['input_size']} x {entry['input_size']}, {entry['precision_label']}: merged "
            f"{entry['method_label']} {res['merged']['pixels_per_s']:.1f} px/s = "
            f"{res['merged']['pixels_per_s'] / res['frozen']['pixels_per_s']:.3f} x frozen "
            f"({res['frozen']['pixels_per_s']:.1f} px/s), unmerged "
            f"{res['unmerged']['pixels_per_s'] / res['frozen']['pixels_per_s']:.3f} x frozen; "
            f"{100 * res['merged']['pixels_per_s'] / entry['limit_pixels_per_s']:.0f} % of the "
            f"compute-bound limit ({entry['limit_pixels_per_s']:.1f} px/s)")
    by_key = {(e["input_size"], e["precision"], e["method"]): e for e in report["runs"]}
    for size in args.input_sizes:
        for method in args.methods:
            fp32, bf16 = by_key.get((size, "fp32", method)), by_key.get((size, "bf16", method))
            if fp32 and bf16:
                ratio = (bf16["results"]["merged"]["pixels_per_s"]
                         / fp32["results"]["merged"]["pixels_per_s"])
                headline.append(f"{size} x {size}: bf16 autocast / fp32 (merged) = {ratio:.2f}")
    report["headline"] = headline
    report["methods_bench"] = methods_bench_summary()
    report["seconds"] = time.perf_counter() - started
    return publish(report, args.out, "speed", write_report, plot)


if __name__ == "__main__":
    main()
