"""Transcoder oracles made by SAELens 6.54 itself (see testdata/README.md, "saelens_transcoders/").

Run with the Python that has sae-lens 6.54 and torch (e.g. /work/venvs/torch/bin/python):

    python testdata/make_saelens_transcoders.py saelens   # SAELens writes transcoders, computes their outputs
    python testdata/make_saelens_transcoders.py zephyra   # SAELens loads the folders Zephyra wrote, computes

`saelens` writes testdata/saelens_transcoders/inputs.safetensors (x [16, 8]) and one folder per SAELens
architecture (`save_model` output + expected.safetensors with `codes = encode(x)` and `output = forward(x)`,
the skip term included). `zephyra` reads the folders under testdata/saelens_transcoders/zephyra/ (written by
`cargo test --release -p zephyra-sae --test saelens_transcoders -- --ignored write_zephyra_fixtures`), loads
each with `SAE.load_from_disk` and writes its expected.safetensors the same way. Output is deterministic.
"""

import sys
from pathlib import Path

import torch
from safetensors.torch import save_file, load_file
from sae_lens import SAE
from sae_lens.saes.sae import SAEMetadata
from sae_lens.saes.transcoder import (
    JumpReLUSkipTranscoder,
    JumpReLUSkipTranscoderConfig,
    JumpReLUTranscoder,
    JumpReLUTranscoderConfig,
    SkipTranscoder,
    SkipTranscoderConfig,
    Transcoder,
    TranscoderConfig,
)

ROOT = Path(__file__).resolve().parent / "saelens_transcoders"
D_IN, D_OUT, D_SAE, N = 8, 6, 32, 16

CLASSES = {
    "transcoder": (Transcoder, TranscoderConfig),
    "skip_transcoder": (SkipTranscoder, SkipTranscoderConfig),
    "jumprelu_transcoder": (JumpReLUTranscoder, JumpReLUTranscoderConfig),
    "jumprelu_skip_transcoder": (JumpReLUSkipTranscoder, JumpReLUSkipTranscoderConfig),
}


def expected(sae, x, folder):
    with torch.no_grad():
        codes = sae.encode(x)
        output = sae(x)
    save_file(
        {"codes": codes.contiguous(), "output": output.contiguous()},
        str(folder / "expected.safetensors"),
    )
    active = (codes != 0).float().mean().item()
    print(f"{folder.name}: active fraction {active:.3f}")


def make_saelens():
    torch.manual_seed(0)
    x = torch.randn(N, D_IN)
    ROOT.mkdir(parents=True, exist_ok=True)
    save_file({"x": x}, str(ROOT / "inputs.safetensors"))
    for i, (name, (cls, cfg_cls)) in enumerate(CLASSES.items()):
        torch.manual_seed(100 + i)
        cfg = cfg_cls(
            d_in=D_IN,
            d_sae=D_SAE,
            d_out=D_OUT,
            dtype="float32",
            device="cpu",
            apply_b_dec_to_input=False,
            metadata=SAEMetadata(
                model_name="tiny",
                hook_name="blocks.0.ln2.hook_normalized",
                hook_name_out="blocks.0.hook_mlp_out",
            ),
        )
        sae = cls(cfg)
        with torch.no_grad():
            for pname, p in sae.named_parameters():
                p.copy_(0.5 * torch.randn_like(p))
            sae.b_enc.add_(-0.3)
            if hasattr(sae, "threshold") and isinstance(sae.threshold, torch.nn.Parameter):
                sae.threshold.copy_(0.05 + 0.3 * torch.rand(D_SAE))
        folder = ROOT / "saelens" / name
        folder.mkdir(parents=True, exist_ok=True)
        sae.save_model(folder)
        expected(sae, x, folder)


def check_zephyra():
    x = load_file(str(ROOT / "inputs.safetensors"))["x"]
    for folder in sorted((ROOT / "zephyra").iterdir()):
        sae = SAE.load_from_disk(str(folder), device="cpu")
        print(f"{folder.name}: loaded as {type(sae).__name__}, d_out {sae.cfg.d_out}, "
              f"hook_name_out {sae.cfg.metadata.hook_name_out}")
        expected(sae, x, folder)


if __name__ == "__main__":
    {"saelens": make_saelens, "zephyra": check_zephyra}[sys.argv[1]]()
