//! Several dictionaries from one forward pass: each on-the-fly source serves exactly the rows (and order)
//! of the store harvested at its hook, a two-hook source serves both hooks' rows side by side, and the
//! model runs once per batch however many dictionaries read it.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use common::*;
use zephyra_data::harvest::{model_info, HookModel};
use zephyra_data::source::BufferedSource;
use zephyra_data::store::manifest::Manifest;
use zephyra_data::ActivationStore;
use zephyra_lm::HookPoint;
use zephyra_sae::train::ActivationSource;

/// Every row of `src`, read `chunk` rows at a time.
fn read_all(src: &mut dyn ActivationSource, chunk: usize) -> Vec<f32> {
    let d = src.d_in();
    let mut out = vec![0.0; chunk * d];
    let mut all = Vec::new();
    loop {
        let n = src.next_rows(&mut out).unwrap();
        if n == 0 {
            return all;
        }
        all.extend_from_slice(&out[..n * d]);
    }
}

#[test]
fn one_forward_pass_feeds_every_dictionary_its_own_rows() {
    let (t, model, tok, data) = tiny_with_corpus(5);
    let hooks = vec![HookPoint::ResidPre(1), HookPoint::MlpOut(0)];
    // 24 contexts of 16 in shards of 4, 2 per forward pass; windows of 2 shards (128 rows).
    let cfg = config(hooks.clone(), 16, 24 * 16, 4, 2);
    let buffer = 128;
    let d = model.d_model();

    let out = tempfile::tempdir().unwrap();
    let info = model_info(&t.path, model.as_ref()).unwrap();
    harvest_corpus(
        model.clone(),
        &tok,
        data.path(),
        cfg.clone(),
        info,
        1,
        out.path(),
    )
    .unwrap();
    let stores: Vec<Vec<f32>> = hooks
        .iter()
        .map(|h| {
            let store = ActivationStore::open(out.path().join(h.to_string())).unwrap();
            read_all(
                &mut BufferedSource::store(store, buffer, cfg.seed, false),
                50,
            )
        })
        .collect();
    // One verdict per row: both stores kept the same positions.
    let manifests: Vec<Manifest> = hooks
        .iter()
        .map(|h| Manifest::read(&out.path().join(h.to_string())).unwrap())
        .collect();
    assert_eq!(manifests[0].exclusion.counts, manifests[1].exclusion.counts);
    assert!(manifests[0].n_rows > 0 && manifests[0].n_rows < 24 * 16);
    assert_eq!(stores[0].len(), manifests[0].n_rows as usize * d);

    // A model that never fails, counting its forward batches down.
    let ok_batches = Arc::new(AtomicUsize::new(usize::MAX));
    let counting = fail_after(model.clone(), ok_batches.clone());
    let mut sources = BufferedSource::harvesting_many(
        counting.clone(),
        tok.clone(),
        corpus_of(data.path()),
        cfg.clone(),
        vec![vec![0], vec![1], vec![0, 1]],
        buffer,
    )
    .unwrap();
    assert_eq!(
        sources.iter().map(|s| s.d_in()).collect::<Vec<_>>(),
        [d, d, 2 * d]
    );
    // Read in lockstep, as the trainer steps its dictionaries: 37 rows from each in turn.
    let mut got: Vec<Vec<f32>> = vec![Vec::new(); 3];
    loop {
        let mut any = false;
        for (s, g) in sources.iter_mut().zip(got.iter_mut()) {
            let mut out = vec![0.0; 37 * s.d_in()];
            let n = s.next_rows(&mut out).unwrap();
            any |= n > 0;
            g.extend_from_slice(&out[..n * s.d_in()]);
        }
        if !any {
            break;
        }
    }
    assert!(
        got[0] == stores[0],
        "hook 0 on the fly differs from its store"
    );
    assert!(
        got[1] == stores[1],
        "hook 1 on the fly differs from its store"
    );
    let side_by_side: Vec<f32> = stores[0]
        .chunks(d)
        .zip(stores[1].chunks(d))
        .flat_map(|(a, b)| a.iter().chain(b).copied())
        .collect();
    assert!(got[2] == side_by_side, "the [x | y] rows do not pair up");
    // 24 contexts, 2 per forward pass: 12 batches for all three dictionaries together.
    assert_eq!(usize::MAX - ok_batches.load(Ordering::SeqCst), 12);
}

fn one_process() -> Box<dyn zephyra_sae::train::Collective + Send> {
    Box::new(zephyra_sae::train::SingleProcess)
}

/// Forward batches the model ran to train `dictionaries` (hook lists) together from one forward pass
/// until the harvest runs out, each dictionary first reading every row for its scale and `b_dec`.
fn batches_to_train(dictionaries: Vec<Vec<usize>>) -> usize {
    use std::ops::ControlFlow;
    use zephyra_sae::train::{Member, MultiSession, TrainConfig};
    use zephyra_sae::{Architecture, SaeConfig};

    let (_t, model, tok, data) = tiny_with_corpus(5);
    let hooks = vec![HookPoint::ResidPre(1), HookPoint::MlpOut(0)];
    // 24 contexts of 16 in shards of 4, 2 per forward pass (12 batches); windows of 2 shards.
    let cfg = config(hooks, 16, 24 * 16, 4, 2);
    let d = model.d_model();
    let ok_batches = Arc::new(AtomicUsize::new(usize::MAX));
    let counting = fail_after(model.clone(), ok_batches.clone());
    let mut sources: Vec<Box<dyn ActivationSource>> = BufferedSource::harvesting_many(
        counting.clone(),
        tok.clone(),
        corpus_of(data.path()),
        cfg,
        dictionaries.clone(),
        128,
    )
    .unwrap()
    .into_iter()
    .map(|s| Box::new(s) as Box<dyn ActivationSource>)
    .collect();
    let root = tempfile::tempdir().unwrap();
    let members = dictionaries
        .iter()
        .enumerate()
        .map(|(i, hooks)| {
            let arch = Architecture::TopK { k: 4 };
            let sae = match hooks[..] {
                [_, _] => SaeConfig::transcoder(d, d, 4 * d, arch, true),
                _ => SaeConfig::new(d, 4 * d, arch),
            };
            let mut c = TrainConfig::for_sae(sae.unwrap(), 40, 1 << 20);
            // More than the harvest holds: the first rows are all of them, the harvest runs to its end
            // (no prefetching cut short), so the count is exact.
            c.init_rows = 10_000;
            c.threads = 1;
            Member::Start(c, root.path().join(format!("d{i}")))
        })
        .collect();
    let mut session = MultiSession::new(members, &mut sources, &one_process).unwrap();
    let outcomes = session
        .run(&mut sources, &mut |_, _| ControlFlow::Continue(()))
        .unwrap();
    assert!(outcomes.iter().all(|o| o.steps > 0 && !o.finished));
    usize::MAX - ok_batches.load(Ordering::SeqCst)
}

#[test]
fn dictionaries_started_together_harvest_their_first_rows_once() {
    // One dictionary: 12 batches read for its first rows, 12 again after the rewind, for training.
    assert_eq!(batches_to_train(vec![vec![0]]), 24);
    // Three read their first rows in lockstep: each window is harvested once for all of them (read one
    // after the other, each would harvest the whole corpus again).
    assert_eq!(batches_to_train(vec![vec![0], vec![1], vec![0, 1]]), 24);
}

/// Rows as sortable bit patterns, to compare two passes as multisets.
fn sorted_rows(rows: &[f32], d: usize) -> Vec<Vec<u32>> {
    let mut v: Vec<Vec<u32>> = rows
        .chunks(d)
        .map(|r| r.iter().map(|x| x.to_bits()).collect())
        .collect();
    v.sort();
    v
}

/// `repeat_corpus`: when the harvest ends the source reads the corpus again, the first pass being the
/// single-pass source's rows and every later pass the same rows in another order; a cursor taken inside
/// the second pass seeks back to exactly the rows that followed it (a run resumed there).
#[test]
fn a_repeating_source_reads_the_corpus_again_and_resumes_inside_a_later_pass() {
    let (_t, model, tok, data) = tiny_with_corpus(5);
    // 24 contexts of 16 in shards of 4, 2 per forward pass; windows of 2 shards (128 rows).
    let cfg = config(vec![HookPoint::ResidPre(1)], 16, 24 * 16, 4, 2);
    let d = model.d_model();
    let open = || {
        BufferedSource::harvesting(
            model.clone(),
            tok.clone(),
            corpus_of(data.path()),
            cfg.clone(),
            128,
        )
        .unwrap()
    };
    let once = read_all(&mut open(), 50);
    let n = once.len() / d;
    assert!(n > 100, "{n} rows");

    let mut src = open().repeat_corpus();
    let mut got = Vec::new();
    let mut buf = vec![0.0; 37 * d];
    let mut cursor = None;
    let mut after_cursor = Vec::new();
    while got.len() < (2 * n + n / 2) * d {
        let k = src.next_rows(&mut buf).unwrap();
        assert!(
            k > 0,
            "the repeating source ended after {} rows",
            got.len() / d
        );
        got.extend_from_slice(&buf[..k * d]);
        if cursor.is_none() && got.len() >= (n + 40) * d {
            cursor = Some(src.cursor());
            let k = src.next_rows(&mut buf).unwrap();
            after_cursor = buf[..k * d].to_vec();
            got.extend_from_slice(&after_cursor);
        }
    }
    assert!(
        got[..n * d] == once[..],
        "the first pass differs from one pass"
    );
    let second = &got[n * d..2 * n * d];
    assert_eq!(sorted_rows(second, d), sorted_rows(&once, d));
    assert!(second != &once[..], "the second pass was not reshuffled");

    let cursor = cursor.unwrap();
    let mut resumed = open().repeat_corpus();
    resumed.seek(&cursor).unwrap();
    let k = resumed.next_rows(&mut buf).unwrap();
    assert_eq!(k * d, after_cursor.len());
    assert!(
        buf[..k * d] == after_cursor[..],
        "the resumed source serves other rows"
    );

    // Without repeat_corpus the same source ends after one pass.
    let mut single = open();
    single.seek(&cursor).unwrap();
    assert_eq!(single.next_rows(&mut buf).unwrap(), 0);
}
