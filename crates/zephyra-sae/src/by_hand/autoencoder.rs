//! Part (a): the 4→3→2→3→4 ReLU autoencoder, one step on 4 examples.

use super::*;

pub(super) fn autoencoder_sheet() -> AutoencoderSheet {
    let x = Matrix::from_rows(&[
        &[1.0, 0.0, 2.0, 1.0],
        &[0.0, 1.0, 1.0, 2.0],
        &[2.0, 1.0, 0.0, 1.0],
        &[1.0, 2.0, 1.0, 0.0],
    ]);
    let layers = vec![
        (
            Matrix::from_rows(&[
                &[1.0, 0.0, 1.0, -1.0],
                &[0.0, 1.0, -1.0, 1.0],
                &[1.0, 1.0, 0.0, 0.0],
            ]),
            vec![0.5, 0.5, -0.5],
        ),
        (
            Matrix::from_rows(&[&[1.0, -1.0, 1.0], &[0.0, 1.0, 1.0]]),
            vec![-0.25, 0.25],
        ),
        (
            Matrix::from_rows(&[&[1.0, 0.0], &[0.0, 1.0], &[1.0, -1.0]]),
            vec![0.125, -0.125, 0.125],
        ),
        (
            Matrix::from_rows(&[
                &[1.0, 0.0, 0.0],
                &[0.0, 1.0, 0.0],
                &[0.0, 0.0, 1.0],
                &[1.0, 1.0, -1.0],
            ]),
            vec![-0.0625, 0.0625, 0.0625, -0.0625],
        ),
    ];
    let lr = 0.01;
    let names = [
        "encoder 4→3",
        "encoder 3→2 (the code)",
        "decoder 2→3",
        "decoder 3→4 (output Y)",
    ];
    let mut steps = vec![step(
        "X",
        "4 training examples (rows); the autoencoder's target is its input",
        Cell::Matrix(x.clone()),
    )];
    // Forward.
    let mut inputs = vec![x.clone()];
    let mut pres = Vec::new();
    for (l, (w, b)) in layers.iter().enumerate() {
        let mut pre = mm(inputs.last().unwrap_or(&x), &w.t());
        add_bias(&mut pre, b);
        let out = relu(&pre);
        steps.push(step(
            &format!("layer {} {}: W·h + b", l + 1, names[l]),
            "linear map of the previous layer's output (one row per example)",
            Cell::Matrix(pre.clone()),
        ));
        steps.push(step(
            &format!("layer {} ReLU", l + 1),
            "negative pre-activations become 0",
            Cell::Matrix(out.clone()),
        ));
        pres.push(pre);
        inputs.push(out);
    }
    let y = inputs.last().cloned().unwrap_or_else(|| x.clone());
    let loss: f64 = y
        .data
        .iter()
        .zip(&x.data)
        .map(|(a, b)| (a - b) * (a - b))
        .sum();
    steps.push(step(
        "loss Σ(Y−Y′)²",
        "squared error between the output Y and the target Y′ = X, summed over examples",
        Cell::Scalar(loss),
    ));
    let mut d = Matrix::new(
        y.rows,
        y.cols,
        y.data
            .iter()
            .zip(&x.data)
            .map(|(a, b)| 2.0 * (a - b))
            .collect(),
    );
    steps.push(step(
        "gradient 2(Y−Y′)",
        "dL/dY: how the loss changes with each output",
        Cell::Matrix(d.clone()),
    ));
    // Backward.
    let mut grads = vec![(Matrix::new(0, 0, vec![]), vec![]); layers.len()];
    for l in (0..layers.len()).rev() {
        let dpre = Matrix::new(
            d.rows,
            d.cols,
            d.data
                .iter()
                .zip(&pres[l].data)
                .map(|(g, p)| if *p > 0.0 { *g } else { 0.0 })
                .collect(),
        );
        steps.push(step(
            &format!("layer {} backprop through ReLU", l + 1),
            "gradient passes where the pre-activation was positive, else 0",
            Cell::Matrix(dpre.clone()),
        ));
        let gw = mm(&dpre.t(), &inputs[l]);
        let gb: Vec<f64> = (0..dpre.cols)
            .map(|c| (0..dpre.rows).map(|r| dpre.data[r * dpre.cols + c]).sum())
            .collect();
        steps.push(step(&format!("layer {} dL/dW", l + 1), "outer products of the back-propagated gradient with the layer input, summed over examples", Cell::Matrix(gw.clone())));
        steps.push(step(
            &format!("layer {} dL/db", l + 1),
            "back-propagated gradient summed over examples",
            Cell::Vector(gb.clone()),
        ));
        d = mm(&dpre, &layers[l].0);
        grads[l] = (gw, gb);
    }
    for (l, ((w, b), (gw, gb))) in layers.iter().zip(&grads).enumerate() {
        let nw = Matrix::new(
            w.rows,
            w.cols,
            w.data
                .iter()
                .zip(&gw.data)
                .map(|(a, g)| a - lr * g)
                .collect(),
        );
        let nb: Vec<f64> = b.iter().zip(gb).map(|(a, g)| a - lr * g).collect();
        steps.push(step(
            &format!("update layer {} W ← W − lr·dL/dW", l + 1),
            &format!("one gradient-descent step with lr = {lr}"),
            Cell::Matrix(nw),
        ));
        steps.push(step(
            &format!("update layer {} b ← b − lr·dL/db", l + 1),
            &format!("one gradient-descent step with lr = {lr}"),
            Cell::Vector(nb),
        ));
    }
    AutoencoderSheet {
        x,
        layers,
        lr,
        steps,
        loss,
        grads,
    }
}
