//! Transcoders as dictionaries: configuration, shapes and inference (`encode`, `decode`, `transcode`)
//! against values worked out by hand.

use zephyra_sae::{Architecture, Sae, SaeConfig};

/// d_in 2, d_out 3, d_sae 2, relu, with a skip path; weights chosen so every product is exact in f32.
fn hand_transcoder(skip: bool) -> Sae {
    let cfg = SaeConfig::transcoder(2, 3, 2, Architecture::Relu, skip).unwrap();
    let mut tc = Sae::zeros(cfg).unwrap();
    tc.w_enc = vec![1.0, 0.0, 0.0, 1.0]; // [d_in, d_sae] = identity
    tc.b_enc = vec![0.0, -1.0];
    tc.w_dec = vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]; // [d_sae, d_out]
    tc.b_dec = vec![0.5, 0.0, -0.5];
    if skip {
        tc.w_skip = vec![1.0, 0.0, 0.0, 1.0, 1.0, 1.0]; // [d_out, d_in]
    }
    tc.check_shapes().unwrap();
    tc
}

#[test]
fn config_of_a_transcoder() {
    let cfg = SaeConfig::transcoder(4, 6, 16, Architecture::TopK { k: 3 }, true).unwrap();
    assert_eq!((cfg.d_in, cfg.d_out(), cfg.d_sae), (4, 6, 16));
    assert!(cfg.is_transcoder() && cfg.has_skip());
    assert!(!cfg.apply_b_dec_to_input, "b_dec lives in the output space");
    assert_eq!(cfg.row_width(), 10);
    let plain = SaeConfig::transcoder(4, 6, 16, Architecture::JumpRelu, false).unwrap();
    assert!(plain.is_transcoder() && !plain.has_skip());
    let sae = SaeConfig::new(4, 16, Architecture::Relu).unwrap();
    assert!(!sae.is_transcoder() && !sae.has_skip());
    assert_eq!((sae.d_out(), sae.row_width()), (4, 4));

    let z = Sae::zeros(cfg).unwrap();
    assert_eq!(z.w_dec.len(), 16 * 6);
    assert_eq!(z.b_dec.len(), 6);
    assert_eq!(z.w_skip.len(), 6 * 4);
    assert!(Sae::zeros(plain).unwrap().w_skip.is_empty());
    assert!(Sae::zeros(sae).unwrap().w_skip.is_empty());
}

#[test]
fn invalid_transcoders_are_refused_with_reasons() {
    let gated = SaeConfig::transcoder(4, 6, 16, Architecture::Gated, false).unwrap_err();
    assert!(gated.to_string().contains("gated"), "{gated}");
    // Matryoshka's nested-prefix losses reconstruct the input: refused, whether built or loaded.
    let matryoshka = Architecture::Matryoshka {
        k: 2,
        groups: zephyra_sae::MatryoshkaWidths::new(&[4, 16]).unwrap(),
    };
    let err = SaeConfig::transcoder(4, 6, 16, matryoshka, true).unwrap_err();
    assert!(err.to_string().contains("matryoshka"), "{err}");
    let mut cfg = SaeConfig::transcoder(4, 6, 16, Architecture::BatchTopK { k: 2 }, false).unwrap();
    cfg.architecture = matryoshka;
    let err = cfg.validate().unwrap_err();
    assert!(err.to_string().contains("matryoshka"), "{err}");
    assert!(SaeConfig::transcoder(4, 0, 16, Architecture::Relu, false).is_err());
    let mut cfg = SaeConfig::transcoder(4, 6, 16, Architecture::Relu, false).unwrap();
    cfg.apply_b_dec_to_input = true;
    let err = cfg.validate().unwrap_err();
    assert!(err.to_string().contains("apply_b_dec_to_input"), "{err}");
    // A skip matrix of the wrong size is a shape error.
    let mut tc = hand_transcoder(true);
    tc.w_skip.pop();
    assert!(tc.check_shapes().is_err());
    assert!(tc.transcode(&[1.0, 1.0], 1).is_err());
}

#[test]
fn encode_decode_transcode_by_hand() {
    // Row 0: x = (2, 0.5): z = (2, −0.5), f = (2, 0), W_dec f + b_dec = (2.5, 4, 5.5), W_skip x = (2, 0.5, 2.5).
    // Row 1: x = (−1, 3): z = (−1, 2), f = (0, 2), W_dec f + b_dec = (8.5, 10, 11.5), W_skip x = (−1, 3, 2).
    let x = [2.0, 0.5, -1.0, 3.0];
    let tc = hand_transcoder(true);
    let f = tc.encode(&x, 2).unwrap();
    assert_eq!(f, vec![2.0, 0.0, 0.0, 2.0]);
    assert_eq!(
        tc.decode(&f, 2).unwrap(),
        vec![2.5, 4.0, 5.5, 8.5, 10.0, 11.5]
    );
    assert_eq!(
        tc.transcode(&x, 2).unwrap(),
        vec![4.5, 4.5, 8.0, 7.5, 13.0, 13.5]
    );
    // Without the skip path, transcode is decode ∘ encode.
    let plain = hand_transcoder(false);
    assert_eq!(
        plain.transcode(&x, 2).unwrap(),
        vec![2.5, 4.0, 5.5, 8.5, 10.0, 11.5]
    );
    // The input must have d_in columns, not d_out.
    assert!(tc.encode(&[1.0, 2.0, 3.0], 1).is_err());
}
