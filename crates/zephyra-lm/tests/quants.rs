//! Dequantization of the real Gemma 3 270M file, block for block against the `gguf` Python package
//! (`testdata/gemma3/quants.json`, made by `testdata/gemma3/make_quants_fixture.py`).

#[path = "../../../testdata/testdata.rs"]
mod testdata;

use serde::Deserialize;
use zephyra_lm::gguf;

#[derive(Deserialize)]
struct Fixture {
    tensors: Vec<FixtureTensor>,
}

#[derive(Deserialize)]
struct FixtureTensor {
    name: String,
    #[serde(rename = "type")]
    type_name: String,
    block_size: usize,
    n_blocks: usize,
    blocks: Vec<FixtureBlock>,
}

#[derive(Deserialize)]
struct FixtureBlock {
    index: usize,
    values: Vec<f64>,
}

fn fixture() -> Fixture {
    serde_json::from_value(testdata::json("gemma3/quants.json"))
        .expect("testdata/gemma3/quants.json has the fixture's fields")
}

#[test]
fn real_tensors_match_the_gguf_package_block_for_block() {
    let path = zephyra_lm::fetch::resolve_model("gemma3-270m").expect("fetching Gemma 3 270M");
    let fixture = fixture();
    let types: Vec<&str> = fixture
        .tensors
        .iter()
        .map(|t| t.type_name.as_str())
        .collect();
    assert_eq!(types, ["Q4_K", "Q5_0", "Q6_K", "Q8_0"]);
    for t in &fixture.tensors {
        let tensor = gguf::read_tensor(&path, &t.name).expect("read tensor");
        assert_eq!(tensor.data.len(), t.n_blocks * t.block_size, "{}", t.name);
        assert_eq!(t.blocks.len(), 5);
        for block in &t.blocks {
            let at = block.index * t.block_size;
            let got = &tensor.data[at..at + t.block_size];
            for (i, (&g, &want)) in got.iter().zip(&block.values).enumerate() {
                let want = want as f32;
                let tol = 1e-6 * want.abs().max(1e-3);
                assert!(
                    (g - want).abs() <= tol,
                    "{} ({}) block {} value {i}: {g} vs {want}",
                    t.name,
                    t.type_name,
                    block.index
                );
            }
        }
    }
}

#[test]
fn f32_tensors_are_read_as_stored() {
    let path = zephyra_lm::fetch::resolve_model("gemma3-270m").expect("fetching Gemma 3 270M");
    let norm = gguf::read_tensor(&path, "output_norm.weight").expect("read");
    assert_eq!(norm.shape, [640]);
    assert!(norm.data.iter().all(|x| x.is_finite()));
    let err = gguf::read_tensor(&path, "blk.99.attn_q.weight").expect_err("no such tensor");
    assert!(err.to_string().contains("blk.99.attn_q.weight"), "{err}");
}
