//! Writes random-initialised skip transcoders (TopK) for every layer of a model, in SAELens' layout, for
//! timing `zephyra attribute` when no trained ones exist:
//!
//! `cargo run --release -p zephyra-analysis --example random_transcoders -- OUT_DIR D_MODEL N_LAYERS EXPANSION K`
//!
//! Each `OUT_DIR/layer-{l}/` reads `blocks.{l}.ln2.hook_normalized` and writes `blocks.{l}.hook_mlp_out`;
//! `W_skip` gets small random entries (SAELens initialises it at zero) so the skip path is exercised.

use std::path::PathBuf;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use zephyra_sae::{Architecture, SaeConfig, SaeOf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() != 5 {
        return Err("usage: random_transcoders OUT_DIR D_MODEL N_LAYERS EXPANSION K".into());
    }
    let out = PathBuf::from(&args[0]);
    let (d, n_layers, expansion, k): (usize, usize, usize, usize) = (
        args[1].parse()?,
        args[2].parse()?,
        args[3].parse()?,
        args[4].parse()?,
    );
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    for l in 0..n_layers {
        let mut cfg = SaeConfig::transcoder(d, d, d * expansion, Architecture::TopK { k }, true)?;
        cfg.metadata.hook_name = Some(format!("blocks.{l}.ln2.hook_normalized"));
        cfg.metadata.hook_name_out = Some(format!("blocks.{l}.hook_mlp_out"));
        let mut sae = SaeOf::<f32>::init(cfg, &mut rng)?;
        let scale = 0.5 / (d as f32).sqrt();
        sae.w_skip
            .iter_mut()
            .for_each(|w| *w = rng.random_range(-scale..scale));
        let dir = out.join(format!("layer-{l}"));
        std::fs::create_dir_all(&dir)?;
        zephyra_sae::saelens::save(&sae, &dir)?;
        eprintln!("wrote {}", dir.display());
    }
    Ok(())
}
