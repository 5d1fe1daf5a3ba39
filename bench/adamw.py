"""AdamW's step on MiniLM-sized parameters: the fused kernel against the foreach one, on this device.

    python -m bench.adamw [--threads N] [--repeats 20] [--json out.json]

The parameter shapes are those of the MiniLM texttune ships (all-MiniLM-L6-v2: 6 layers, hidden
384, 22.6 M parameters without its unused pooler, the 30,522 x 384 word embeddings included);
gradients are random. Prints the median milliseconds per ``optimizer.step()``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

LAYERS = 6
# Embeddings (+ their norm), then per layer: 4 attention projections, FFN in/out, biases and 2 norms.
SHAPES = ([(30522, 384), (512, 384), (2, 384), (384,), (384,)] + [(384, 384), (384,)] * 4 * LAYERS
          + [(1536, 384), (1536,), (384, 1536), (384,)] * LAYERS + [(384,)] * (2 * 2 * LAYERS))


def time_step(kind: str, repeats: int, device: str) -> float:
    params = [torch.nn.Parameter(torch.randn(*s, device=device) * 0.02) for s in SHAPES]
    for p in params:
        p.grad = torch.randn_like(p) * 1e-3
    opt = torch.optim.AdamW(params, lr=1e-4, fused=kind == "fused" or None, foreach=kind == "foreach" or None)
    opt.step()  # the state is created on the first step
    times = []
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        tic = time.perf_counter()
        opt.step()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - tic)
    return statistics.median(times) * 1000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    result = {"device": args.device, "threads": torch.get_num_threads(), "torch": torch.__version__,
              "params_m": round(sum(torch.Size(s).numel() for s in SHAPES) / 1e6, 2), "repeats": args.repeats}
    for kind in ("foreach", "fused"):
        result[f"{kind}_ms"] = round(time_step(kind, args.repeats, args.device), 1)
    result["fused_speedup"] = round(result["foreach_ms"] / result["fused_ms"], 2)
    print(json.dumps(result))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
