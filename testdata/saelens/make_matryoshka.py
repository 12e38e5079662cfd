"""Matryoshka BatchTopK fixtures written and read by SAELens 6.54 itself (issue 17, part 1).

Run with the venv that has torch + sae-lens 6.54.12, from the repository root:

    /work/venvs/torch/bin/python testdata/saelens/make_matryoshka.py

It writes, next to this script (d_in 16, d_sae 64, k 4, matryoshka_widths [8, 24, 64], seed 17; inputs are
`inputs.safetensors`'s `x` [32, 16], shared with the other SAELens fixtures):

- `matryoshka_training/`: `MatryoshkaBatchTopKTrainingSAE.save_model` (architecture `matryoshka_batchtopk`,
  the training keys, tensor `topk_threshold`), and `expected.safetensors` with SAELens'
  `training_forward_pass` on x (no dead latents): `feature_acts` [32, 64] (BatchTopK over the batch),
  `mse_loss` [1] and `inner_mse_loss` [2] (the prefixes 8 and 24), `topk_threshold_after` [1].
- `matryoshka/`: `save_inference_model` of the same SAE (architecture `jumprelu`, the Matryoshka settings
  in `metadata.training_architecture_details`), and `expected.safetensors` with
  `SAE.load_from_disk(dir).encode(x)` as `codes` and its `decode` as `reconstruction`.
- `matryoshka_rescaled_training/` and `matryoshka_rescaled/`: the same SAE with SAELens' default
  `rescale_acts_by_decoder_norm=True` and decoder rows of norms 0.05 … 1.85 (training save: norms kept;
  inference save: folded), and `matryoshka_rescaled/expected.safetensors` as above.
- `zephyra_matryoshka/saelens_codes.safetensors`: the folder Zephyra saved (`cfg.json` +
  `sae_weights.safetensors`, written by `cargo test --release -p zephyra-sae --test saelens_matryoshka --
  --ignored`) loaded by `SAE.load_from_disk`, with its `codes` and `reconstruction` of x — Zephyra's file
  read by SAELens. Skipped with a message when that folder has not been written yet.
"""

import json
import pathlib

import torch
from safetensors.torch import load_file, save_file

from sae_lens import SAE
from sae_lens.saes.matryoshka_batchtopk_sae import (
    MatryoshkaBatchTopKTrainingSAE,
    MatryoshkaBatchTopKTrainingSAEConfig,
)
from sae_lens.saes.sae import TrainStepInput

HERE = pathlib.Path(__file__).resolve().parent
WIDTHS = [8, 24, 64]


def make_sae(rescaled: bool = False) -> MatryoshkaBatchTopKTrainingSAE:
    cfg = MatryoshkaBatchTopKTrainingSAEConfig(
        d_in=16,
        d_sae=64,
        k=4,
        matryoshka_widths=list(WIDTHS),
        rescale_acts_by_decoder_norm=rescaled,
        dtype="float32",
        device="cpu",
    )
    sae = MatryoshkaBatchTopKTrainingSAE(cfg)
    gen = torch.Generator().manual_seed(17)
    with torch.no_grad():
        w_dec = torch.randn(64, 16, generator=gen)
        sae.W_dec.copy_(w_dec / w_dec.norm(dim=-1, keepdim=True))
        if rescaled:
            # SAELens' default parametrisation: rows of any norm, used as unit vectors.
            sae.W_dec.mul_(torch.linspace(0.05, 1.85, 64).unsqueeze(1))
        sae.W_enc.copy_(sae.W_dec.T + 0.3 * torch.randn(16, 64, generator=gen))
        sae.b_enc.copy_(0.2 * torch.randn(64, generator=gen))
        sae.b_dec.copy_(0.1 * torch.randn(16, generator=gen))
        sae.topk_threshold.fill_(0.9)
    return sae


def main() -> None:
    x = load_file(str(HERE / "inputs.safetensors"))["x"].float()
    sae = make_sae()

    train_dir = HERE / "matryoshka_training"
    sae.save_model(train_dir)
    step = TrainStepInput(
        sae_in=x,
        coefficients={},
        dead_neuron_mask=None,
        n_training_steps=0,
        is_logging_step=False,
    )
    with torch.no_grad():
        out = sae.training_forward_pass(step)
    inner = [float(out.losses[f"inner_mse_loss_{w}"]) for w in WIDTHS[:-1]]
    save_file(
        {
            "feature_acts": out.feature_acts.contiguous(),
            "mse_loss": torch.tensor([float(out.losses["mse_loss"])]),
            "inner_mse_loss": torch.tensor(inner),
            "topk_threshold_after": torch.tensor([float(sae.topk_threshold)]),
        },
        str(train_dir / "expected.safetensors"),
    )

    # The inference file (threshold 0.9 as saved before the training pass above moved it).
    sae = make_sae()
    inf_dir = HERE / "matryoshka"
    sae.save_inference_model(inf_dir)
    write_codes(inf_dir, x, inf_dir / "expected.safetensors")

    # SAELens' default (`rescale_acts_by_decoder_norm: true`): the training save keeps the rows' norms, the
    # inference save folds them into the encoder (the flag stays in `training_architecture_details`).
    sae = make_sae(rescaled=True)
    sae.save_model(HERE / "matryoshka_rescaled_training")
    inf_dir = HERE / "matryoshka_rescaled"
    sae.save_inference_model(inf_dir)
    write_codes(inf_dir, x, inf_dir / "expected.safetensors")

    ours = HERE / "zephyra_matryoshka"
    if (ours / "cfg.json").exists():
        write_codes(ours, x, ours / "saelens_codes.safetensors")
        print("SAELens loaded", json.loads((ours / "cfg.json").read_text())["architecture"], "from", ours)
    else:
        print(f"{ours} not written yet: run the ignored test named in this script's docstring, then rerun")


def write_codes(folder: pathlib.Path, x: torch.Tensor, dest: pathlib.Path) -> None:
    loaded = SAE.load_from_disk(str(folder), device="cpu")
    with torch.no_grad():
        codes = loaded.encode(x)
        rec = loaded.decode(codes)
    save_file({"codes": codes.contiguous(), "reconstruction": rec.contiguous()}, str(dest))


if __name__ == "__main__":
    main()
