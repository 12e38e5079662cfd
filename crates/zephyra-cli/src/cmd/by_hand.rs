//! `zephyra by-hand`: the seed article's worksheet (an autoencoder, then a sparse autoencoder) with real
//! numbers, step by step. The maths is `zephyra_sae::by_hand`; this module renders it: the text walkthrough
//! ([`render_text`]) or, with `--json`, one object ([`to_json`], schema in its docs).

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;
use serde_json::{json, Value};
use zephyra_sae::by_hand::{Cell, Matrix, Step, Worksheet};

use super::Global;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print one JSON object instead of the text walkthrough.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args, _global: &Global) -> anyhow::Result<ExitCode> {
    let sheet = zephyra_sae::by_hand::worksheet().context("computing the worksheet")?;
    let mut out = std::io::stdout().lock();
    if args.json {
        let text = serde_json::to_string(&to_json(&sheet))?;
        writeln!(out, "{text}")?;
    } else {
        out.write_all(render_text(&sheet).as_bytes())?;
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// Nested JSON arrays.
fn matrix_json(m: &Matrix) -> Value {
    Value::Array(m.data.chunks(m.cols.max(1)).map(|r| json!(r)).collect())
}

fn cell_json(c: &Cell) -> Value {
    match c {
        Cell::Scalar(v) => json!(v),
        Cell::Vector(v) => json!(v),
        Cell::Matrix(m) => matrix_json(m),
    }
}

fn steps_json(steps: &[Step]) -> Value {
    Value::Array(
        steps
            .iter()
            .map(|s| json!({"name": s.name, "value": cell_json(&s.value)}))
            .collect(),
    )
}

/// The `--json` object: `{"autoencoder": {...}, "sae": {"X", "W_enc", "b_enc", "W_dec", "b_dec",
/// "lambda", "steps", "loss", "grad_W_enc", "grad_b_enc", "grad_W_dec", "grad_b_dec"}}`.
pub fn to_json(sheet: &Worksheet) -> Value {
    let a = &sheet.autoencoder;
    let s = &sheet.sae;
    let layer = |(w, b): &(Matrix, Vec<f64>)| json!({"W": matrix_json(w), "b": b});
    json!({
        "autoencoder": {
            "X": matrix_json(&a.x),
            "layers": a.layers.iter().map(layer).collect::<Vec<_>>(),
            "lr": a.lr,
            "steps": steps_json(&a.steps),
            "loss": a.loss,
            "grads": a.grads.iter().map(layer).collect::<Vec<_>>(),
        },
        "sae": {
            "X": matrix_json(&s.x),
            "W_enc": matrix_json(&s.w_enc),
            "b_enc": s.b_enc,
            "W_dec": matrix_json(&s.w_dec),
            "b_dec": s.b_dec,
            "lambda": s.lambda,
            "steps": steps_json(&s.steps),
            "loss": s.loss,
            "grad_W_enc": matrix_json(&s.grad_w_enc),
            "grad_b_enc": s.grad_b_enc,
            "grad_W_dec": matrix_json(&s.grad_w_dec),
            "grad_b_dec": s.grad_b_dec,
        }
    })
}

/// Human-readable text: every step's name, explanation and value.
pub fn render_text(sheet: &Worksheet) -> String {
    let mut out = String::new();
    let a = &sheet.autoencoder;
    out.push_str("(a) AUTOENCODER 4→3→2→3→4, ReLU at every layer, 4 examples\n\n");
    for (l, (w, b)) in a.layers.iter().enumerate() {
        out.push_str(&format!(
            "W{} =\n{}b{} = {}\n\n",
            l + 1,
            fmt_matrix(w),
            l + 1,
            fmt_vec(b)
        ));
    }
    for s in &a.steps {
        push_step(&mut out, s);
    }
    let s = &sheet.sae;
    out.push_str(
        "\n(b) SPARSE AUTOENCODER: 5 activations of dimension 3 → 6 features (relu architecture)\n",
    );
    out.push_str("L = Σ_samples ‖x′−x‖² + λ Σ_samples Σ_i f_i ‖W_dec[:,i]‖₂\n\n");
    out.push_str(&format!(
        "X =\n{}W_enc =\n{}b_enc = {}\n\nW_dec =\n{}b_dec = {}\n\nλ = {}\n\n",
        fmt_matrix(&s.x),
        fmt_matrix(&s.w_enc),
        fmt_vec(&s.b_enc),
        fmt_matrix(&s.w_dec),
        fmt_vec(&s.b_dec),
        s.lambda
    ));
    for st in &s.steps[..10] {
        push_step(&mut out, st);
    }
    out.push_str(&format!("loss L = {:.6}\n\n", s.loss));
    out.push_str(&format!(
        "dL/dW_enc =\n{}dL/db_enc = {}\n\ndL/dW_dec =\n{}dL/db_dec = {}\n\n",
        fmt_matrix(&s.grad_w_enc),
        fmt_vec(&s.grad_b_enc),
        fmt_matrix(&s.grad_w_dec),
        fmt_vec(&s.grad_b_dec)
    ));
    for st in &s.steps[10..] {
        push_step(&mut out, st);
    }
    out
}

fn push_step(out: &mut String, s: &Step) {
    out.push_str(&format!("{}\n  {}\n", s.name, s.explanation));
    match &s.value {
        Cell::Scalar(v) => out.push_str(&format!("  = {v:.6}\n\n")),
        Cell::Vector(v) => out.push_str(&format!("  = {}\n\n", fmt_vec(v))),
        Cell::Matrix(m) => out.push_str(&format!("{}\n", fmt_matrix(m))),
    }
}

fn fmt_num(v: f64) -> String {
    let r = (v * 1e4).round() / 1e4;
    if r == r.trunc() {
        format!("{:>8}", r as i64)
    } else {
        format!("{r:>8.4}")
    }
}

fn fmt_vec(v: &[f64]) -> String {
    format!(
        "[{}]",
        v.iter()
            .map(|x| fmt_num(*x).trim().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    )
}

fn fmt_matrix(m: &Matrix) -> String {
    let mut s = String::new();
    for row in m.data.chunks(m.cols.max(1)) {
        s.push_str("  ");
        s.push_str(
            &row.iter()
                .map(|v| fmt_num(*v))
                .collect::<Vec<_>>()
                .join(" "),
        );
        s.push('\n');
    }
    s
}
