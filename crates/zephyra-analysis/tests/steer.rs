//! Steering and explain on the tiny model with a planted latent: strength 0 is exactly the unsteered
//! generation, a large strength changes it (add and clamp), bad requests are refused with a message.

use zephyra_analysis::features::planted::planted;
use zephyra_analysis::steer::{Engine, SteerMode, SteerRequest};
use zephyra_analysis::AnalysisError;
use zephyra_data::ExclusionRule;

fn engine() -> (zephyra_analysis::features::planted::Planted, Engine) {
    let p = planted(3);
    let e = Engine::new(p.llama.clone(), p.tokenizer.clone(), p.sae.clone(), p.hook).unwrap();
    (p, e)
}

fn req(strength: f32, mode: SteerMode, temperature: f32) -> SteerRequest {
    SteerRequest {
        prompt: "the cat sat".into(),
        feature: 0,
        strength,
        mode,
        max_tokens: 16,
        seed: 9,
        temperature,
    }
}

#[test]
fn strength_zero_is_unsteered_and_large_strength_changes_the_output() {
    let (p, e) = engine();
    for temperature in [0.0, 0.8] {
        let out = e.steer(&req(0.0, SteerMode::Add, temperature)).unwrap();
        assert_eq!(out.steered_ids, out.unsteered_ids);
        assert!(!out.unsteered_ids.is_empty());
        // The unsteered side is plain generation with the same settings.
        let prompt = p.tokenizer.encode("the cat sat").unwrap();
        let cfg = zephyra_lm::GenerateConfig {
            max_new_tokens: 16,
            sampling: zephyra_lm::Sampling::from_temperature(temperature, 0.9),
            seed: 9,
            stop_tokens: p.tokenizer.eos_token_id().into_iter().collect(),
        };
        let plain = p
            .llama
            .generate(&prompt, &cfg, &mut zephyra_lm::Hooks::new(), |_| {})
            .unwrap();
        assert_eq!(out.unsteered_ids, plain.tokens);
        let big = e.steer(&req(500.0, SteerMode::Add, temperature)).unwrap();
        assert_eq!(big.unsteered_ids, out.unsteered_ids);
        assert_ne!(big.steered_ids, big.unsteered_ids);
    }
    // The planted direction promotes its token: pushed hard, greedy generation emits it.
    let big = e.steer(&req(1000.0, SteerMode::Add, 0.0)).unwrap();
    assert!(big.steered_ids.contains(&p.token), "{:?}", big.steered_ids);
    let clamp = e.steer(&req(1000.0, SteerMode::Clamp, 0.0)).unwrap();
    assert_ne!(clamp.steered_ids, clamp.unsteered_ids);
}

#[test]
fn bad_steering_requests_are_refused() {
    let (_, e) = engine();
    for r in [
        SteerRequest {
            feature: 4,
            ..req(1.0, SteerMode::Add, 0.0)
        },
        SteerRequest {
            max_tokens: 0,
            ..req(1.0, SteerMode::Add, 0.0)
        },
        SteerRequest {
            prompt: String::new(),
            ..req(1.0, SteerMode::Add, 0.0)
        },
        req(f32::NAN, SteerMode::Add, 0.0),
        req(1.0, SteerMode::Add, -1.0),
    ] {
        let err = e.steer(&r).unwrap_err();
        assert!(matches!(err, AnalysisError::InvalidArgument(_)), "{err}");
    }
}

#[test]
fn explain_finds_the_planted_latent_only_on_its_token() {
    let (p, e) = engine();
    let text = "six boxes fix the mix";
    let toks = e.explain(text, 3, &ExclusionRule::default()).unwrap();
    let ids = p.tokenizer.encode(text).unwrap();
    assert_eq!(toks.iter().map(|t| t.id).collect::<Vec<_>>(), ids);
    assert!(toks[0].excluded && toks[0].features.is_empty());
    let mut seen = 0;
    for t in &toks[1..] {
        if t.id == p.token {
            seen += 1;
            assert_eq!(t.features.len(), 1);
            assert_eq!(t.features[0].id, 0);
            assert!((t.features[0].act - 1.0).abs() < 1e-4);
        } else {
            assert!(t.features.is_empty());
        }
    }
    assert!(seen > 0, "the text contains the planted token");
    assert!(matches!(
        e.explain("", 3, &ExclusionRule::default()),
        Err(AnalysisError::InvalidArgument(_))
    ));
}
