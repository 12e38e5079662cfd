#!/usr/bin/env python3
"""Side-by-side anchor for `zephyra bench forward`: the same two workloads in Hugging Face transformers.

Loads the same GGUF file with `AutoModelForCausalLM.from_pretrained(dir, gguf_file=..., dtype=DTYPE)`
(transformers dequantizes every tensor to float32, then casts to `--dtype`: float32, the default, or
bfloat16, where every weight, activation and the logits are bf16 and PyTorch's CPU matrix products use
the AVX-512 BF16 instructions when the CPU has them), runs on CPU with `--threads` torch threads
(intra-op and inter-op), and times:

  (a) "resid": the residual stream entering block 15 (`blocks.15.hook_resid_pre`), no logits.
      transformers cannot stop a forward early, so the model is cut for this workload:
      `model.model.layers` is truncated to its first 15 decoder layers, the final RMSNorm
      `model.model.norm` is replaced by `nn.Identity`, and only `model.model` (the decoder stack, not
      the LM head) is called. Its `last_hidden_state` is then the input of block 15, unnormalised,
      exactly what zephyra captures (checked against shared/reference with `--check-reference`).
      Work done: embedding + 15 decoder layers, nothing after. The model is restored for (b).
  (b) "logits": the full model (`model(input_ids)`), logits at every position `[batch, seq, vocab]`.

Both under `torch.inference_mode()`, batch `--batch` x `--seq` tokens cut from the same text zephyra
uses (pass `--token-file` with the ids zephyra benchmarks, or `--text-file`), `--warmup` untimed passes
and `--iters` timed ones. Prints one JSON line per workload with the same fields as
`zephyra bench forward --json` (plus "impl": "transformers"); peak RSS is `ru_maxrss` of the process
(so the (b) figure includes (a)'s peak if it was higher; run `--workload logits` alone for its own).
"""

import argparse
import json
import os
import resource
import sys
import time


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gguf", default=os.path.join(
        os.environ.get("ZEPHYRA_HOME", os.path.expanduser("~/.cache/zephyra")),
        "models", "SmolLM2-135M-Instruct.Q4_1.gguf"))
    p.add_argument("--workload", nargs="+", choices=["resid", "logits"], default=["resid", "logits"])
    p.add_argument("--layer", type=int, default=15, help="block whose hook_resid_pre ends workload (a)")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32",
                   help="dtype of the model's weights and activations")
    p.add_argument("--iters", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--text-file", help="UTF-8 text to cut the batch from (tokenized with the GGUF's tokenizer)")
    p.add_argument("--token-file", help="JSON list of token ids (e.g. from `zephyra tokenize`) to cut the batch from")
    p.add_argument("--check-reference", metavar="DIR",
                   help="first check that workload (a) reproduces DIR/activations.safetensors "
                        "(shared/reference) prompt0.blocks.{layer}.hook_resid_pre; prints the relative error")
    return p.parse_args()


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def cut_rows(stream, batch, seq):
    """Same rule as zephyra: row i starts i * (len // batch) tokens in, wrapping around."""
    if len(stream) < seq:
        sys.exit(f"the text has {len(stream)} tokens, fewer than --seq {seq}")
    stride = max(len(stream) // batch, 1)
    return [[stream[(i * stride + j) % len(stream)] for j in range(seq)] for i in range(batch)]


def check_reference(model, directory, layer, dtype):
    import torch
    from safetensors.numpy import load_file
    with open(os.path.join(directory, "tokens.json")) as f:
        ids = json.load(f)["prompts"][0]["ids"]
    want = torch.from_numpy(load_file(os.path.join(directory, "activations.safetensors"))[
        f"prompt0.blocks.{layer}.hook_resid_pre"])
    full_layers, full_norm = model.model.layers, model.model.norm
    model.model.layers = full_layers[:layer]
    model.model.norm = torch.nn.Identity()
    with torch.inference_mode():
        got = model.model(input_ids=torch.tensor([ids]), use_cache=False).last_hidden_state[0]
    model.model.layers, model.model.norm = full_layers, full_norm
    err = ((got.float() - want).norm() / want.norm()).item()
    print(f"workload (a) vs reference prompt0.blocks.{layer}.hook_resid_pre: relative error {err:.2e}",
          file=sys.stderr)
    # float32 reproduces the reference; bfloat16 (8 significant bits everywhere) errs by a few 1e-2.
    if err > (1e-4 if dtype == "float32" else 0.1):
        sys.exit("workload (a) does not compute hook_resid_pre: refusing to time it")


def main():
    args = parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import torch
    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(args.threads)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    directory, name = os.path.split(os.path.abspath(args.gguf))
    t0 = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(directory, gguf_file=name, dtype=getattr(torch, args.dtype))
    model.eval()
    load_s = time.perf_counter() - t0

    if args.token_file:
        with open(args.token_file) as f:
            data = json.load(f)
        stream = data["ids"] if isinstance(data, dict) else data
    else:
        tok = AutoTokenizer.from_pretrained(directory, gguf_file=name)
        if args.text_file:
            with open(args.text_file, encoding="utf-8") as f:
                text = f.read()
        else:
            sys.exit("give --token-file (ids zephyra uses: `zephyra bench forward` prints how) or --text-file")
        stream = tok(text, add_special_tokens=False)["input_ids"]
    ids = torch.tensor(cut_rows(stream, args.batch, args.seq), dtype=torch.long)

    full_layers = model.model.layers
    if args.check_reference:
        check_reference(model, args.check_reference, args.layer, args.dtype)
    full_norm = model.model.norm
    for workload in args.workload:
        if workload == "resid":
            # Cut the decoder stack to the blocks before `--layer` and drop the final norm: the
            # decoder's output is then the input of block `--layer`, unnormalised.
            model.model.layers = full_layers[: args.layer]
            model.model.norm = torch.nn.Identity()

            def run():
                return model.model(input_ids=ids, use_cache=False).last_hidden_state
        else:
            model.model.layers = full_layers
            model.model.norm = full_norm

            def run():
                return model(input_ids=ids, use_cache=False).logits

        with torch.inference_mode():
            for _ in range(args.warmup):
                run()
            times = []
            for _ in range(args.iters):
                start = time.perf_counter()
                out = run()
                times.append(time.perf_counter() - start)
        model.model.layers = full_layers
        model.model.norm = full_norm
        total = sum(times)
        print(json.dumps({
            "bench": "forward",
            "impl": "transformers",
            "workload": workload,
            "hook": f"blocks.{args.layer}.hook_resid_pre" if workload == "resid" else None,
            "out_shape": list(out.shape),
            "batch": args.batch,
            "seq": args.seq,
            "threads": args.threads,
            "dtype": args.dtype,
            "iters": args.iters,
            "tokens_per_s": args.batch * args.seq * args.iters / total,
            "best_iter_s": min(times),
            "mean_iter_s": total / args.iters,
            "peak_rss_mb": peak_rss_mb(),
            "load_s": load_s,
            "torch": torch.__version__,
        }), flush=True)


if __name__ == "__main__":
    main()
