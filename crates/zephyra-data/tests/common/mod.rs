//! Helpers shared by the integration tests: small corpora and pipelines.
#![allow(dead_code)]

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use zephyra_data::corpus::CorpusOptions;
use zephyra_data::harvest::{
    harvest, HarvestConfig, HarvestSummary, HookModel, Pipeline, WithCapture,
};
use zephyra_data::store::manifest::ModelInfo;
use zephyra_data::store::StoreDtype;
use zephyra_data::{Corpus, ExclusionRule};
use zephyra_lm::{HookPoint, Llama, Tokenizer};

#[path = "../../../../testdata/testdata.rs"]
pub mod testdata;

/// Writes a small mixed corpus (a few thousand tokens) into `dir`.
pub fn write_corpus(dir: &Path) {
    let para = "Ownership is a set of rules that govern how a Rust program manages memory. \
        All programs have to manage the way they use a computer's memory while running. \
        Some languages have garbage collection; in others, the programmer must explicitly allocate and free memory.\n";
    for i in 0..6 {
        std::fs::write(
            dir.join(format!("doc{i}.txt")),
            format!("Chapter {i}.\n{}", para.repeat(2 + i % 3)),
        )
        .unwrap();
    }
    std::fs::write(
        dir.join("page.html"),
        format!("<html><script>x()</script><main><h1>Borrowing</h1><p>{}</p><pre>let s = String::from(\"hi\");\nlet r = &amp;s;</pre></main></html>", para.repeat(3)),
    )
    .unwrap();
    let lines: Vec<String> = (0..8).map(|i| format!("{{\"text\": \"Record {i}: the borrow checker compares scopes to decide whether borrows are valid.\"}}")).collect();
    std::fs::write(dir.join("records.jsonl"), lines.join("\n")).unwrap();
}

pub fn corpus_of(dir: &Path) -> Corpus {
    Corpus::from_specs(&[dir.display().to_string()], CorpusOptions::default()).unwrap()
}

pub fn config(
    hooks: Vec<HookPoint>,
    ctx: usize,
    n_tokens: u64,
    contexts_per_shard: usize,
    batch: usize,
) -> HarvestConfig {
    HarvestConfig {
        hooks,
        ctx,
        n_tokens,
        seed: 7,
        shuffle_contexts: 16,
        contexts_per_shard,
        batch_contexts: batch,
        dtype: StoreDtype::Float32,
        rule: ExclusionRule::default(),
    }
}

/// Model + tokenizer of a GGUF file.
pub fn load(path: &Path) -> (Arc<Llama>, Arc<Tokenizer>) {
    (
        Arc::new(Llama::load_gguf(path).unwrap()),
        Arc::new(Tokenizer::from_gguf(path).unwrap()),
    )
}

/// The tiny Llama of `seed`, loaded, and a temp dir holding [`write_corpus`]'s corpus.
pub fn tiny_with_corpus(
    seed: u64,
) -> (
    zephyra_lm::testing::TinyLlama,
    Arc<Llama>,
    Arc<Tokenizer>,
    tempfile::TempDir,
) {
    let t = zephyra_lm::testing::tiny_llama(seed).unwrap();
    let (model, tok) = load(&t.path);
    let data = tempfile::tempdir().unwrap();
    write_corpus(data.path());
    (t, model, tok, data)
}

pub fn pipeline(
    model: Arc<dyn HookModel>,
    tok: Arc<Tokenizer>,
    corpus: Corpus,
    config: HarvestConfig,
) -> Pipeline {
    Pipeline {
        model,
        encoder: tok,
        corpus,
        config,
    }
}

/// Harvests the corpus in `corpus_dir` through `model` into `out`, without progress reports.
pub fn harvest_corpus(
    model: Arc<dyn HookModel>,
    tok: &Arc<Tokenizer>,
    corpus_dir: &Path,
    config: HarvestConfig,
    info: ModelInfo,
    vocab_size: usize,
    out: &Path,
) -> zephyra_data::Result<HarvestSummary> {
    harvest(
        pipeline(model, tok.clone(), corpus_of(corpus_dir), config),
        info,
        vocab_size,
        out,
        &mut |_| {},
    )
}

/// [`harvest_corpus`] (vocabulary size 1) through `inner` made to fail after `ok_batches` forward batches
/// ([`fail_after`]): the error of the interrupted harvest, which leaves a partial store in `out`.
pub fn interrupted_harvest(
    inner: Arc<Llama>,
    ok_batches: usize,
    tok: &Arc<Tokenizer>,
    corpus_dir: &Path,
    config: HarvestConfig,
    info: ModelInfo,
    out: &Path,
) -> zephyra_data::DataError {
    let failing = fail_after(inner, Arc::new(ok_batches.into()));
    match harvest_corpus(failing, tok, corpus_dir, config, info, 1, out) {
        Ok(_) => panic!("the harvest should have failed after {ok_batches} batches"),
        Err(e) => e,
    }
}

/// `inner`, counting its forward batches down in `ok_batches` and failing once that is 0 (to simulate an
/// interrupted harvest; `usize::MAX` counts batches without failing).
pub fn fail_after(inner: Arc<Llama>, ok_batches: Arc<AtomicUsize>) -> Arc<dyn HookModel> {
    let capture = move |llama: &Llama, contexts: &[Vec<u32>], hooks: &[HookPoint]| {
        if ok_batches.load(Ordering::SeqCst) == 0 {
            return Err(zephyra_data::DataError::io(
                "running the model on",
                "simulated-crash",
                std::io::Error::other("simulated crash"),
            ));
        }
        ok_batches.fetch_sub(1, Ordering::SeqCst);
        llama.capture(contexts, hooks)
    };
    Arc::new(WithCapture::new(inner, capture))
}

/// Harvests [`write_corpus`] (written into `root/data`) with the tiny model of seed 3 into `root/<name>`:
/// contexts of 16 tokens, 4 per shard, `n_contexts` in all. Returns the output directory.
pub fn tiny_store(
    root: &Path,
    name: &str,
    hooks: Vec<HookPoint>,
    n_contexts: u64,
) -> std::path::PathBuf {
    let t = zephyra_lm::testing::tiny_llama(3).unwrap();
    let (model, tok) = load(&t.path);
    let info = zephyra_data::harvest::model_info(&t.path, model.as_ref()).unwrap();
    let data = root.join("data");
    if !data.exists() {
        std::fs::create_dir(&data).unwrap();
        write_corpus(&data);
    }
    let out = root.join(name);
    let cfg = config(hooks, 16, n_contexts * 16, 4, 2);
    harvest_corpus(model, &tok, &data, cfg, info, 1, &out).unwrap();
    out
}
