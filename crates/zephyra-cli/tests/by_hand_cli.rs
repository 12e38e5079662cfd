//! `zephyra by-hand`: its printed (`--json`) loss and gradients against finite differences of the loss
//! recomputed here from the printed inputs alone, and the worksheet's promises (schema, no ReLU kinks,
//! non-zero decoder columns, sparse codes).

#![allow(clippy::needless_range_loop)] // index loops mirror the formulas

mod common;

use common::{ok, run};
use serde_json::Value;

/// What `zephyra by-hand --json` prints.
fn sheet_json() -> Value {
    serde_json::from_str(ok(run(["by-hand", "--json"])).trim()).unwrap()
}

fn mat(v: &Value) -> Vec<Vec<f64>> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect()
        })
        .collect()
}

fn vector(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

/// A JSON list of `{"W": matrix, "b": vector}` layers.
fn weights_and_biases(v: &Value) -> Vec<(Vec<Vec<f64>>, Vec<f64>)> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|l| (mat(&l["W"]), vector(&l["b"])))
        .collect()
}

#[derive(Clone)]
struct SaeInputs {
    x: Vec<Vec<f64>>,
    w_enc: Vec<Vec<f64>>, // 6×3
    b_enc: Vec<f64>,
    w_dec: Vec<Vec<f64>>, // 3×6
    b_dec: Vec<f64>,
    lambda: f64,
}

/// L = Σ_samples ‖x′−x‖² + λ Σ_samples Σ_i f_i ‖W_dec[:,i]‖₂, from the worksheet's own orientation.
fn sae_loss(p: &SaeInputs) -> f64 {
    let n_feat = p.w_enc.len();
    let d = p.b_dec.len();
    let norms: Vec<f64> = (0..n_feat)
        .map(|i| (0..d).map(|j| p.w_dec[j][i].powi(2)).sum::<f64>().sqrt())
        .collect();
    let mut loss = 0.0;
    for x in &p.x {
        let f: Vec<f64> = (0..n_feat)
            .map(|i| ((0..d).map(|j| p.w_enc[i][j] * x[j]).sum::<f64>() + p.b_enc[i]).max(0.0))
            .collect();
        for j in 0..d {
            let xr = (0..n_feat).map(|i| p.w_dec[j][i] * f[i]).sum::<f64>() + p.b_dec[j];
            loss += (xr - x[j]).powi(2);
        }
        loss += p.lambda * (0..n_feat).map(|i| f[i] * norms[i]).sum::<f64>();
    }
    loss
}

fn close(what: &str, got: f64, want: f64) {
    assert!(
        (got - want).abs() <= 1e-6 * (1.0 + want.abs()),
        "{what}: printed {got}, finite differences {want}"
    );
}

#[test]
fn sae_gradients_match_finite_differences_of_the_summed_loss() {
    let json = sheet_json();
    let s = &json["sae"];
    let mut keys: Vec<&str> = s.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "W_dec",
            "W_enc",
            "X",
            "b_dec",
            "b_enc",
            "grad_W_dec",
            "grad_W_enc",
            "grad_b_dec",
            "grad_b_enc",
            "lambda",
            "loss",
            "steps"
        ]
    );
    let p = SaeInputs {
        x: mat(&s["X"]),
        w_enc: mat(&s["W_enc"]),
        b_enc: vector(&s["b_enc"]),
        w_dec: mat(&s["W_dec"]),
        b_dec: vector(&s["b_dec"]),
        lambda: s["lambda"].as_f64().unwrap(),
    };
    assert_eq!((p.x.len(), p.x[0].len()), (5, 3));
    assert_eq!((p.w_enc.len(), p.w_enc[0].len()), (6, 3));
    assert_eq!((p.w_dec.len(), p.w_dec[0].len()), (3, 6));
    assert!(p.lambda > 0.0);
    close("loss", s["loss"].as_f64().unwrap(), sae_loss(&p));
    let h = 1e-6;
    let g_w_enc = mat(&s["grad_W_enc"]);
    let g_w_dec = mat(&s["grad_W_dec"]);
    let g_b_enc = vector(&s["grad_b_enc"]);
    let g_b_dec = vector(&s["grad_b_dec"]);
    let fd = |edit: &dyn Fn(&mut SaeInputs, f64)| {
        let mut plus = p.clone();
        let mut minus = p.clone();
        edit(&mut plus, h);
        edit(&mut minus, -h);
        (sae_loss(&plus) - sae_loss(&minus)) / (2.0 * h)
    };
    let mut nonzero = 0;
    for i in 0..6 {
        for j in 0..3 {
            close(
                &format!("grad_W_enc[{i}][{j}]"),
                g_w_enc[i][j],
                fd(&|q, e| q.w_enc[i][j] += e),
            );
            close(
                &format!("grad_W_dec[{j}][{i}]"),
                g_w_dec[j][i],
                fd(&|q, e| q.w_dec[j][i] += e),
            );
            nonzero += (g_w_enc[i][j] != 0.0) as usize;
        }
        close(
            &format!("grad_b_enc[{i}]"),
            g_b_enc[i],
            fd(&|q, e| q.b_enc[i] += e),
        );
    }
    for j in 0..3 {
        close(
            &format!("grad_b_dec[{j}]"),
            g_b_dec[j],
            fd(&|q, e| q.b_dec[j] += e),
        );
    }
    assert!(
        nonzero > 3,
        "the worksheet should show non-trivial encoder gradients"
    );
}

#[test]
fn sae_steps_follow_the_worksheet_and_avoid_kinks() {
    let json = sheet_json();
    let s = &json["sae"];
    let steps = s["steps"].as_array().unwrap();
    for (k, step) in steps.iter().take(10).enumerate() {
        let name = step["name"].as_str().unwrap();
        assert!(
            name.starts_with(&format!("({})", k + 1)),
            "step {k} is {name}"
        );
    }
    assert!(steps[10..]
        .iter()
        .all(|st| st["name"].as_str().unwrap().starts_with("update")));
    // (1) no pre-activation exactly 0; (2) some features off and some on.
    let z = mat(&steps[0]["value"]);
    assert_eq!((z.len(), z[0].len()), (5, 6));
    assert!(
        z.iter().flatten().all(|&v| v != 0.0 && v.abs() >= 0.25),
        "a pre-activation is at or near the ReLU kink"
    );
    let f = mat(&steps[1]["value"]);
    let on = f.iter().flatten().filter(|&&v| v > 0.0).count();
    assert!(
        on > 5 && on < 25,
        "{on} of 30 features active: the example should be visibly sparse"
    );
    // (4) every decoder column non-zero.
    let norms = vector(&steps[3]["value"]);
    assert!(norms.iter().all(|&n| n > 0.0));
    // (10) = 2(X′ − X) with X′ from (3).
    let xr = mat(&steps[2]["value"]);
    let x = mat(&s["X"]);
    let g = mat(&steps[9]["value"]);
    for r in 0..5 {
        for j in 0..3 {
            close("2(X′−X)", g[r][j], 2.0 * (xr[r][j] - x[r][j]));
        }
    }
}

/// Part (a): the autoencoder's printed gradients against finite differences of its summed squared error.
#[test]
fn autoencoder_gradients_match_finite_differences() {
    let json = sheet_json();
    let a = &json["autoencoder"];
    let x = mat(&a["X"]);
    let (layers, grads) = (
        weights_and_biases(&a["layers"]),
        weights_and_biases(&a["grads"]),
    );
    let dims: Vec<usize> = layers.iter().map(|(w, _)| w.len()).collect();
    assert_eq!(dims, vec![3, 2, 3, 4]);
    let loss = |ls: &[(Vec<Vec<f64>>, Vec<f64>)]| -> f64 {
        let mut total = 0.0;
        for xr in &x {
            let mut h = xr.clone();
            for (w, b) in ls {
                h = w
                    .iter()
                    .zip(b)
                    .map(|(row, bb)| {
                        (row.iter().zip(&h).map(|(a, c)| a * c).sum::<f64>() + bb).max(0.0)
                    })
                    .collect();
            }
            total += h.iter().zip(xr).map(|(y, t)| (y - t).powi(2)).sum::<f64>();
        }
        total
    };
    let pre: Vec<f64> = a["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|st| st["name"].as_str().unwrap().ends_with("W·h + b"))
        .flat_map(|st| mat(&st["value"]).into_iter().flatten())
        .collect();
    assert_eq!(pre.len(), 4 * (3 + 2 + 3 + 4));
    assert!(
        pre.iter().all(|&v| v != 0.0),
        "an autoencoder pre-activation sits on the ReLU kink"
    );
    assert!(
        pre.iter().any(|&v| v < 0.0),
        "no ReLU ever switches off: the example would not show it"
    );
    close(
        "autoencoder loss",
        a["loss"].as_f64().unwrap(),
        loss(&layers),
    );
    let h = 1e-6;
    let mut nonzero = 0;
    for l in 0..4 {
        for i in 0..layers[l].0.len() {
            for j in 0..layers[l].0[0].len() {
                let mut p = layers.clone();
                p[l].0[i][j] += h;
                let mut m = layers.clone();
                m[l].0[i][j] -= h;
                close(
                    &format!("layer {} dW[{i}][{j}]", l + 1),
                    grads[l].0[i][j],
                    (loss(&p) - loss(&m)) / (2.0 * h),
                );
                nonzero += (grads[l].0[i][j] != 0.0) as usize;
            }
            let mut p = layers.clone();
            p[l].1[i] += h;
            let mut m = layers.clone();
            m[l].1[i] -= h;
            close(
                &format!("layer {} db[{i}]", l + 1),
                grads[l].1[i],
                (loss(&p) - loss(&m)) / (2.0 * h),
            );
        }
    }
    assert!(
        nonzero >= 10,
        "only {nonzero} non-zero weight gradients: backprop would not be visible"
    );
}

#[test]
fn text_walkthrough_names_every_step() {
    let text = ok(run(["by-hand"]));
    for k in 1..=10 {
        assert!(
            text.contains(&format!("({k})")),
            "step ({k}) missing from the text"
        );
    }
    assert!(text.contains("gradient 2(Y−Y′)") && text.contains("update W_dec"));
}
