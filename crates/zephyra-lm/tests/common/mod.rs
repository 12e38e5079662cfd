//! Shared helpers of the real-model tests: the model (loaded once) and the reference oracle.
#![allow(dead_code)]

use std::sync::OnceLock;

use zephyra_lm::{Llama, Tensor};

#[path = "../../../../testdata/testdata.rs"]
pub mod testdata;

/// The SmolLM2 model, fetched on first use and loaded once per test binary.
pub fn smollm2() -> &'static Llama {
    static MODEL: OnceLock<Llama> = OnceLock::new();
    MODEL.get_or_init(|| {
        let path = zephyra_lm::fetch::resolve_model("smollm2").expect("fetching SmolLM2");
        Llama::load_gguf(path).expect("loading SmolLM2")
    })
}

/// One reference prompt: its token ids and mean next-token cross-entropy.
pub struct Prompt {
    pub ids: Vec<u32>,
    pub mean_ce: f64,
}

/// Hugging Face's tokenization of the reference texts and prompts (`testdata/smollm2/tokens.json`).
pub fn reference_tokens() -> serde_json::Value {
    testdata::json("smollm2/tokens.json")
}

/// The three reference prompts from `tokens.json`.
pub fn prompts() -> Vec<Prompt> {
    reference_tokens()["prompts"]
        .as_array()
        .expect("prompts array")
        .iter()
        .map(|p| Prompt {
            ids: p["ids"]
                .as_array()
                .expect("ids")
                .iter()
                .map(|v| v.as_u64().expect("id") as u32)
                .collect(),
            mean_ce: p["mean_ce"].as_f64().expect("mean_ce"),
        })
        .collect()
}

/// Tensors of `testdata/smollm2/activations.safetensors`: the hook tensors hold the rows of the positions
/// in `prompt{p}.positions` (see testdata/README.md).
pub struct Oracle {
    bytes: Vec<u8>,
}

impl Oracle {
    pub fn load() -> Oracle {
        Oracle {
            bytes: testdata::read("smollm2/activations.safetensors"),
        }
    }

    /// The positions whose rows prompt `p`'s hook tensors hold, ascending.
    pub fn positions(&self, p: usize) -> Vec<usize> {
        let (_, positions) = self.i64(&format!("prompt{p}.positions"));
        positions.into_iter().map(|t| t as usize).collect()
    }

    fn view(&self) -> safetensors::SafeTensors<'_> {
        safetensors::SafeTensors::deserialize(&self.bytes)
            .unwrap_or_else(|err| panic!("testdata/smollm2/activations.safetensors: {err}"))
    }

    pub fn names(&self) -> Vec<String> {
        self.view()
            .names()
            .into_iter()
            .map(|s| s.to_string())
            .collect()
    }

    /// A float32 tensor.
    pub fn f32(&self, name: &str) -> (Vec<usize>, Vec<f32>) {
        self.read(name, safetensors::Dtype::F32, |b: [u8; 4]| {
            f32::from_le_bytes(b)
        })
    }

    /// An int64 tensor.
    pub fn i64(&self, name: &str) -> (Vec<usize>, Vec<i64>) {
        self.read(name, safetensors::Dtype::I64, |b: [u8; 8]| {
            i64::from_le_bytes(b)
        })
    }

    /// Tensor `name`, which must be stored as `dtype`, decoded from little-endian `N`-byte elements.
    fn read<T, const N: usize>(
        &self,
        name: &str,
        dtype: safetensors::Dtype,
        decode: impl Fn([u8; N]) -> T,
    ) -> (Vec<usize>, Vec<T>) {
        let view = self.view();
        let t = view.tensor(name).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(t.dtype(), dtype, "{name}");
        let data = t
            .data()
            .chunks_exact(N)
            .map(|b| decode(b.try_into().expect("N bytes")))
            .collect();
        (t.shape().to_vec(), data)
    }
}

/// Rows `positions` of a row-major `[rows, width]` matrix, concatenated.
pub fn rows(values: &[f32], width: usize, positions: &[usize]) -> Vec<f32> {
    positions
        .iter()
        .flat_map(|&t| &values[t * width..(t + 1) * width])
        .copied()
        .collect()
}

/// The values of `t` in row-major order.
pub fn flat(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

/// ‖a − b‖ / ‖b‖ in f64.
pub fn rel_err(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    let (mut num, mut den) = (0.0f64, 0.0f64);
    for (x, y) in a.iter().zip(b) {
        num += (*x as f64 - *y as f64).powi(2);
        den += (*y as f64).powi(2);
    }
    (num / den).sqrt()
}

/// log softmax(row)[id] in f64.
pub fn log_softmax_at(row: &[f32], id: u32) -> f64 {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let sum: f64 = row.iter().map(|&x| (x as f64 - max).exp()).sum();
    row[id as usize] as f64 - max - sum.ln()
}

/// Mean next-token cross-entropy (nats) of `ids` given logits `[seq, vocab]`.
pub fn mean_ce(logits: &[f32], vocab: usize, ids: &[u32]) -> f64 {
    let n = ids.len() - 1;
    let total: f64 = (0..n)
        .map(|t| -log_softmax_at(&logits[t * vocab..(t + 1) * vocab], ids[t + 1]))
        .sum();
    total / n as f64
}
