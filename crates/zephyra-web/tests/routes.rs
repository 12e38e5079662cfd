//! Every route of the app, driven through `router(state)` with `oneshot` (no socket), on the tiny model with
//! a planted feature: status, content type, JSON shape and values, and every malformed request; the run page
//! over a run directory with and without an eval; streamed steering against the plain answer.

mod common;

use axum::http::StatusCode;
use common::{app, call, call_bytes, fixture, get, json_of, post, stream_lines, strings_at};
use serde_json::{json, Value};
use zephyra_web::{router, MAX_BODY_BYTES};

#[tokio::test]
async fn pages_and_assets_are_embedded() {
    let f = fixture();
    let app = app(&f, false);
    for (uri, page) in [
        ("/", "browser"),
        ("/feature/0", "feature"),
        ("/explain", "explain"),
        ("/steer", "steer"),
        ("/run", "run"),
    ] {
        let (status, ctype, body) = call(&app, get(uri)).await;
        assert_eq!(status, StatusCode::OK, "{uri}");
        assert!(ctype.starts_with("text/html"), "{uri}: {ctype}");
        assert!(body.contains(&format!("data-page=\"{page}\"")), "{uri}");
        assert!(
            body.contains("/assets/app.js")
                && !body.contains("http://")
                && !body.contains("https://"),
            "{uri}: no CDN"
        );
    }
    let (status, ctype, js) = call(&app, get("/assets/app.js")).await;
    assert_eq!(
        (status, ctype.starts_with("text/javascript")),
        (StatusCode::OK, true)
    );
    assert!(
        js.contains("/api/steer/stream") && js.contains("getReader") && !js.contains("innerHTML")
    );
    let (status, ctype, _) = call(&app, get("/assets/app.css")).await;
    assert_eq!(
        (status, ctype.starts_with("text/css")),
        (StatusCode::OK, true)
    );
    for bad in [
        "/feature/4",
        "/feature/abc",
        "/feature/-1",
        "/nope",
        "/assets/../Cargo.toml",
        "/assets/%2e%2e/Cargo.toml",
        "/assets/app.js/../../etc/passwd",
    ] {
        let (status, _, body) = call(&app, get(bad)).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{bad}");
        assert!(
            !body.contains("[package]") && !body.contains("root:"),
            "{bad} leaked a file"
        );
    }
}

#[tokio::test]
async fn feature_list_sorts_filters_and_pages() {
    let f = fixture();
    let app = app(&f, false);
    let j = json_of(&app, get("/api/features"), StatusCode::OK).await;
    // Only latent 0 ever fires; dead latents are hidden unless asked for.
    assert_eq!(j["total"], 1);
    assert_eq!(j["features"][0]["id"], 0);
    let tok = f.p.tokenizer.decode(&[f.p.token]).unwrap();
    assert_eq!(j["features"][0]["top_tokens"][0], json!(tok));
    for key in ["density", "max_act", "mean_act", "n_fires", "top_logits"] {
        assert!(j["features"][0].get(key).is_some(), "{key}");
    }
    let j = json_of(
        &app,
        get("/api/features?dead=true&sort=id&order=asc&limit=2&offset=1"),
        StatusCode::OK,
    )
    .await;
    assert_eq!(
        (j["total"].as_u64(), j["features"].as_array().unwrap().len()),
        (Some(4), 2)
    );
    assert_eq!(
        (
            j["features"][0]["id"].as_u64(),
            j["features"][1]["id"].as_u64()
        ),
        (Some(1), Some(2))
    );
    let j = json_of(
        &app,
        get("/api/features?sort=max&dead=true"),
        StatusCode::OK,
    )
    .await;
    assert_eq!(j["features"][0]["id"], 0);
    let j = json_of(
        &app,
        get(&format!("/api/features?q={}", tok.trim())),
        StatusCode::OK,
    )
    .await;
    assert!(j["features"]
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f["id"] == 0));
    let j = json_of(&app, get("/api/features?q=3"), StatusCode::OK).await;
    assert_eq!(j["features"][0]["id"], 3, "a number finds that latent");
    let j = json_of(&app, get("/api/features?q=zzzz-nothing"), StatusCode::OK).await;
    assert_eq!(j["total"], 0);
    for bad in [
        "/api/features?sort=bogus",
        "/api/features?limit=0",
        "/api/features?limit=100000",
        "/api/features?offset=-3",
        "/api/features?nope=1",
    ] {
        let j = json_of(&app, get(bad), StatusCode::BAD_REQUEST).await;
        assert!(j["error"].as_str().unwrap().len() > 5, "{bad}: {j}");
    }
    let info = json_of(&app, get("/api/info"), StatusCode::OK).await;
    assert_eq!(
        (info["d_sae"].as_u64(), info["n_alive"].as_u64()),
        (Some(4), Some(1))
    );
}

#[tokio::test]
async fn feature_records_and_bad_ids() {
    let f = fixture();
    let app = app(&f, false);
    let j = json_of(&app, get("/api/feature/0"), StatusCode::OK).await;
    assert_eq!(j["id"], 0);
    assert_eq!(j["logits_pos"][0]["id"], json!(f.p.token));
    assert_eq!(
        j["top"][0]["token_ids"][j["top"][0]["center"].as_u64().unwrap() as usize],
        json!(f.p.token)
    );
    for key in ["histogram", "quantiles", "cofire", "logits_neg", "density"] {
        assert!(j.get(key).is_some(), "{key}");
    }
    for bad in [
        "/api/feature/4",
        "/api/feature/99999999999",
        "/api/feature/x",
        "/api/feature/-1",
    ] {
        let j = json_of(&app, get(bad), StatusCode::NOT_FOUND).await;
        assert!(
            j["error"].as_str().unwrap().contains("no feature"),
            "{bad}: {j}"
        );
    }
}

#[tokio::test]
async fn explain_marks_the_planted_token() {
    let f = fixture();
    let app = app(&f, true);
    let text = "the box and six";
    let j = json_of(
        &app,
        post("/api/explain", json!({ "text": text }).to_string()),
        StatusCode::OK,
    )
    .await;
    let tokens = j["tokens"].as_array().unwrap();
    let ids = f.p.tokenizer.encode(text).unwrap();
    assert_eq!(tokens.len(), ids.len());
    assert_eq!(tokens[0]["excluded"], true, "position 0 is excluded");
    for (t, &id) in tokens.iter().zip(&ids).skip(1) {
        let feats = t["features"].as_array().unwrap();
        if id == f.p.token {
            assert_eq!(feats[0]["id"], 0);
            assert!((feats[0]["act"].as_f64().unwrap() - 1.0).abs() < 1e-4);
        } else {
            assert!(feats.is_empty(), "{t}");
        }
    }
}

#[tokio::test]
async fn steer_zero_equals_unsteered_and_large_changes_it() {
    let f = fixture();
    let app = app(&f, true);
    let body = |strength: f32, mode: &str| {
        json!({"prompt": "the cat", "feature": 0, "strength": strength, "mode": mode, "max_tokens": 12, "seed": 5}).to_string()
    };
    let j = json_of(&app, post("/api/steer", body(0.0, "add")), StatusCode::OK).await;
    assert_eq!(j["steered"], j["unsteered"]);
    assert_eq!(j["steered_ids"], j["unsteered_ids"]);
    assert_eq!(j["request"]["mode"], "add");
    let j = json_of(&app, post("/api/steer", body(500.0, "add")), StatusCode::OK).await;
    assert_ne!(j["steered_ids"], j["unsteered_ids"]);
    let j = json_of(
        &app,
        post("/api/steer", body(500.0, "clamp")),
        StatusCode::OK,
    )
    .await;
    assert_ne!(j["steered_ids"], j["unsteered_ids"]);
}

#[tokio::test]
async fn malformed_requests_are_4xx_with_a_message() {
    let f = fixture();
    let app = app(&f, true);
    let cases: Vec<(&str, String, StatusCode)> = vec![
        ("/api/explain", "{not json".into(), StatusCode::BAD_REQUEST),
        ("/api/explain", "{}".into(), StatusCode::BAD_REQUEST),
        (
            "/api/explain",
            json!({"text": 5}).to_string(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "/api/explain",
            json!({"text": ""}).to_string(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "/api/explain",
            json!({"text": "x".repeat(70_000)}).to_string(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "/api/explain",
            json!({"text": "the cat", "top_k": 0}).to_string(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "/api/explain",
            json!({"text": "x".repeat(MAX_BODY_BYTES + 10)}).to_string(),
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
    ];
    let steer_cases = bad_steer_bodies();
    let steer_routes = ["/api/steer", "/api/steer/stream"];
    let cases = cases
        .into_iter()
        .chain(steer_routes.iter().flat_map(|&uri| {
            steer_cases
                .iter()
                .map(move |(body, want)| (uri, body.clone(), *want))
        }));
    for (uri, body, want) in cases {
        let short = body.chars().take(60).collect::<String>();
        let j = json_of(&app, post(uri, body), want).await;
        assert!(
            j["error"].as_str().is_some_and(|m| m.len() > 5),
            "{uri} {short}: {j}"
        );
    }
    // Without a model, explain and steer say so (503), they do not fail.
    let no_model = self::app(&f, false);
    let j = json_of(
        &no_model,
        post("/api/explain", json!({"text": "a"}).to_string()),
        StatusCode::SERVICE_UNAVAILABLE,
    )
    .await;
    assert!(j["error"].as_str().unwrap().contains("model"));
    let j = json_of(
        &no_model,
        post(
            "/api/steer/stream",
            json!({"prompt": "a", "feature": 0, "strength": 1.0}).to_string(),
        ),
        StatusCode::SERVICE_UNAVAILABLE,
    )
    .await;
    assert!(j["error"].as_str().unwrap().contains("model"));
    // Wrong method.
    for uri in steer_routes {
        let (status, _, _) = call(&app, get(uri)).await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{uri}");
    }
}

/// Steering bodies both steering routes refuse before generating, with the status they answer.
fn bad_steer_bodies() -> Vec<(String, StatusCode)> {
    vec![
        ("[]".into(), StatusCode::BAD_REQUEST),
        (
            json!({"prompt": "a", "feature": 4, "strength": 1.0}).to_string(),
            StatusCode::BAD_REQUEST,
        ),
        (
            json!({"prompt": "a", "feature": -1, "strength": 1.0}).to_string(),
            StatusCode::BAD_REQUEST,
        ),
        (
            json!({"prompt": "a", "feature": 0, "strength": 1.0, "mode": "multiply"}).to_string(),
            StatusCode::BAD_REQUEST,
        ),
        (
            json!({"prompt": "a", "feature": 0, "strength": 1.0, "max_tokens": 0}).to_string(),
            StatusCode::BAD_REQUEST,
        ),
        (
            json!({"prompt": "a", "feature": 0, "strength": 1.0, "max_tokens": 100000}).to_string(),
            StatusCode::BAD_REQUEST,
        ),
        (
            json!({"prompt": "", "feature": 0, "strength": 1.0}).to_string(),
            StatusCode::BAD_REQUEST,
        ),
        (
            json!({"prompt": "x ".repeat(400), "feature": 0, "strength": 1.0}).to_string(),
            StatusCode::BAD_REQUEST,
        ),
        (
            json!({"prompt": "a", "feature": 0, "strength": "big"}).to_string(),
            StatusCode::BAD_REQUEST,
        ),
        (
            json!({"prompt": "a", "feature": 0, "strength": 1.0, "temperature": -1.0}).to_string(),
            StatusCode::BAD_REQUEST,
        ),
        (
            json!({"prompt": "x".repeat(MAX_BODY_BYTES + 10), "feature": 0, "strength": 1.0})
                .to_string(),
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
    ]
}

/// Text of one side, joined from the streamed pieces.
fn joined(lines: &[Value], side: &str) -> (String, usize) {
    let pieces: Vec<&str> = lines
        .iter()
        .filter(|l| l["side"] == side)
        .map(|l| l["token"].as_str().unwrap())
        .collect();
    (pieces.concat(), pieces.len())
}

#[tokio::test]
async fn streamed_steering_equals_the_plain_answer() {
    let f = fixture();
    let app = app(&f, true);
    for (strength, mode, temperature) in
        [(500.0, "add", 0.8), (0.0, "add", 0.8), (40.0, "clamp", 0.0)]
    {
        let body = json!({"prompt": "the cat", "feature": 0, "strength": strength, "mode": mode,
            "max_tokens": 12, "seed": 7, "temperature": temperature})
        .to_string();
        let plain = json_of(&app, post("/api/steer", body.clone()), StatusCode::OK).await;
        let (ctype, lines) = stream_lines(&app, post("/api/steer/stream", body)).await;
        assert_eq!(ctype, "application/x-ndjson");
        let last = lines.last().unwrap();
        assert_eq!(last["done"], true, "{last}");
        for key in [
            "steered",
            "unsteered",
            "steered_ids",
            "unsteered_ids",
            "request",
        ] {
            assert_eq!(last[key], plain[key], "{key}");
        }
        // Only the last line is not a token event.
        assert!(lines[..lines.len() - 1]
            .iter()
            .all(|l| l["side"].is_string() && l["token"].is_string()));
        let (steered, n_steered) = joined(&lines, "steered");
        let (unsteered, n_unsteered) = joined(&lines, "unsteered");
        assert_eq!(
            steered,
            plain["steered"].as_str().unwrap(),
            "{mode} {strength}"
        );
        assert_eq!(unsteered, plain["unsteered"].as_str().unwrap());
        assert!(
            n_steered > 1 && n_unsteered > 1,
            "streamed token by token: {n_steered} / {n_unsteered} pieces"
        );
        if strength == 0.0 {
            assert_eq!(steered, unsteered, "strength 0 is the unsteered generation");
        } else {
            assert_ne!(last["steered_ids"], last["unsteered_ids"]);
        }
    }
}

#[tokio::test]
async fn run_page_shows_config_training_eval_and_plots() {
    let f = fixture();
    let run = common::evaluated_run(&f);
    let app = router(f.state(false).with_run_dir(run.path()));
    let (status, ctype, html) = call(&app, get("/run")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(ctype.starts_with("text/html") && html.contains("data-page=\"run\""));
    assert!(
        html.contains("href=\"/run\""),
        "the header links the run page"
    );

    let j = json_of(&app, get("/api/run"), StatusCode::OK).await;
    assert_eq!(j["problems"], json!([]), "{j}");
    let cfg = &j["cfg"];
    assert_eq!(
        (
            cfg["architecture"].as_str(),
            cfg["d_in"].as_u64(),
            cfg["d_sae"].as_u64()
        ),
        (
            Some(f.p.sae.cfg.architecture.name()),
            Some(f.p.sae.cfg.d_in as u64),
            Some(4)
        )
    );
    assert_eq!(cfg["hook"], "blocks.0.hook_resid_pre");
    let t = &j["training"];
    assert_eq!(t["n_records"], 3);
    assert_eq!(t["last"]["fve"], 0.75);
    assert_eq!(t["curve"].as_array().unwrap().len(), 3);
    let rows = j["eval"]["rows"].as_array().unwrap();
    let row = |name: &str| {
        rows.iter()
            .find(|r| r["name"] == name)
            .map(|r| r["value"].clone())
    };
    // Values of the eval fixture, formatted as `zephyra eval` prints them.
    assert_eq!(row("FVE (centred)"), Some(json!("0.8191")));
    assert_eq!(row("L0 (active latents/token)"), Some(json!("32.00")));
    assert_eq!(row("CE loss recovered (zero)"), Some(json!("0.9410")));
    // The SAELens / SAEBench convention is listed too; this eval.json predates it.
    assert_eq!(
        row("CE loss recovered (zero, all positions; SAELens/SAEBench)"),
        Some(json!("n/a"))
    );
    assert_eq!(j["eval"]["report"]["d_sae"], 2304);
    let names = strings_at(&j["plots"], "name");
    assert_eq!(names, ["training.svg", "density.svg"], "SVG preferred");

    for (name, ctype_want) in [
        ("density.svg", "image/svg+xml"),
        ("training.svg", "image/svg+xml"),
        ("density.png", "image/png"),
    ] {
        let (status, ctype, bytes) = call_bytes(&app, get(&format!("/run/plots/{name}"))).await;
        assert_eq!(
            (status, ctype.as_str()),
            (StatusCode::OK, ctype_want),
            "{name}"
        );
        let on_disk = std::fs::read(run.path().join("plots").join(name)).unwrap();
        assert_eq!(bytes, on_disk, "{name} is served as written");
    }
    let (_, _, svg) = call(&app, get("/run/plots/density.svg")).await;
    assert!(svg.contains("<svg") && svg.contains("Feature density"));

    // Outside the allow-list, or outside the run directory: 404, never the file.
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret.svg"), "<svg>secret</svg>").unwrap();
    #[cfg(unix)]
    std::os::unix::fs::symlink(
        outside.path().join("secret.svg"),
        run.path().join("plots/l0_vs_fve.svg"),
    )
    .unwrap();
    for bad in [
        "/run/plots/cfg.json",
        "/run/plots/../cfg.json",
        "/run/plots/..%2Fcfg.json",
        "/run/plots/%2e%2e%2fcfg.json",
        "/run/plots/%2e%2e%2f%2e%2e%2f%2e%2e%2fetc%2fpasswd",
        "/run/plots/training.svg/../../cfg.json",
        "/run/plots/..%5Ccfg.json",
        "/run/plots/density.svg%00.png",
        "/run/plots/l0_vs_fve.png",
        "/run/plots/l0_vs_fve.svg",
        "/run/plots/",
        "/run/eval.json",
        "/run/cfg.json",
    ] {
        let (status, _, body) = call_bytes(&app, get(bad)).await;
        assert!(
            status == StatusCode::NOT_FOUND || status == StatusCode::BAD_REQUEST,
            "{bad}: {status}"
        );
        let body = String::from_utf8_lossy(&body);
        assert!(
            !body.contains("d_sae") && !body.contains("secret") && !body.contains("root:"),
            "{bad} leaked a file: {body}"
        );
    }
}

#[tokio::test]
async fn run_page_without_an_eval_says_how_to_make_one() {
    let f = fixture();
    let run = common::trained_run(&f);
    let app = router(f.state(false).with_run_dir(run.path()));
    let (status, _, _) = call(&app, get("/run")).await;
    assert_eq!(status, StatusCode::OK);
    let j = json_of(&app, get("/api/run"), StatusCode::OK).await;
    assert_eq!(j["eval"], Value::Null);
    assert_eq!(j["plots"], json!([]));
    assert_eq!(
        j["training"]["n_records"], 3,
        "training is shown without an eval"
    );
    let dir = run.path().display().to_string();
    assert_eq!(j["eval_command"], format!("zephyra eval --sae {dir}"));
    assert_eq!(j["plot_command"], format!("zephyra plot --run {dir}"));
    assert_eq!(j["problems"], json!([]));

    // A broken eval.json or metrics file is reported on the page, not a 500.
    std::fs::write(run.path().join("eval.json"), "{ not json").unwrap();
    std::fs::write(run.path().join("metrics.jsonl"), "garbage\n").unwrap();
    let j = json_of(&app, get("/api/run"), StatusCode::OK).await;
    assert_eq!((&j["eval"], &j["training"]), (&Value::Null, &Value::Null));
    let problems = j["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(problems[1].as_str().unwrap().contains("zephyra eval"));

    // An empty directory: no cfg.json is a problem too, still 200.
    let empty = tempfile::tempdir().unwrap();
    let app2 = router(f.state(false).with_run_dir(empty.path()));
    let j = json_of(&app2, get("/api/run"), StatusCode::OK).await;
    assert!(j["problems"][0].as_str().unwrap().contains("cfg.json"));

    // No run directory at all: the JSON says how to give one; the page still renders.
    let bare = common::app(&f, false);
    let j = json_of(&bare, get("/api/run"), StatusCode::NOT_FOUND).await;
    assert!(j["error"].as_str().unwrap().contains("--sae"));
    let (status, _, _) = call(&bare, get("/run")).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, _) = call(&bare, get("/run/plots/density.svg")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}
