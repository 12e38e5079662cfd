//! The attribution-graph routes, through `router(state)` with `oneshot`: the graph list, files and pages,
//! a layer's feature records (the hover cards and feature pages of transcoder features), interventions
//! checked against the model run by hand with the feature's contribution removed, graph jobs, and every
//! malformed request.

mod common;

use axum::http::StatusCode;
use common::graph::{app, feature_nodes, layer0_store, logits_by_hand, setup, PROMPT};
use common::{call, get, json_of, post, strings_at};
use serde_json::{json, Value};
use zephyra_analysis::attribution::intervene::demeaned;

/// POSTs `body` to `uri` and checks the 400's message holds `needle`.
async fn refused(app: &axum::Router, uri: &str, body: &Value, needle: &str) {
    let e = json_of(app, post(uri, body.to_string()), StatusCode::BAD_REQUEST).await;
    let message = e["error"].as_str().unwrap_or_default();
    assert!(message.contains(needle), "{e} lacks {needle}");
}

#[tokio::test]
async fn graph_pages_files_and_layer_features_are_served() {
    let s = setup();
    let store_dir = tempfile::tempdir().unwrap();
    let app = app(&s, false, Some(layer0_store(&s, store_dir.path())));
    for (uri, page) in [("/graphs", "graphs"), ("/graph/g", "graph")] {
        let (status, ctype, body) = call(&app, get(uri)).await;
        assert_eq!(status, StatusCode::OK, "{uri}");
        assert!(ctype.starts_with("text/html"));
        assert!(body.contains(&format!("data-page=\"{page}\"")), "{uri}");
    }
    for bad in [
        "/graph/nope",
        "/graph/..%2Fg",
        "/layer/0/feature/999999",
        "/layer/1/feature/0",
    ] {
        assert_eq!(call(&app, get(bad)).await.0, StatusCode::NOT_FOUND, "{bad}");
    }
    let list = json_of(&app, get("/api/graphs"), StatusCode::OK).await;
    assert_eq!(list["graphs"][0]["name"], "g");
    assert_eq!(list["can_make"], false);
    let file = json_of(&app, get("/api/graph/g"), StatusCode::OK).await;
    assert_eq!(file, s.graph);
    assert!(
        json_of(&app, get("/api/graph/..%2Fg"), StatusCode::BAD_REQUEST).await["error"]
            .as_str()
            .unwrap()
            .contains("not a graph name")
    );

    // The layer's store answers for the graph's layer-0 features: records of the transcoder's features
    // over the corpus, read at its input hook.
    let info = json_of(&app, get("/api/layer/0/info"), StatusCode::OK).await;
    assert_eq!(info["hook"], "blocks.0.ln2.hook_normalized");
    assert_eq!(info["d_sae"], 2 * s.p.llama.config().d_model);
    let node = feature_nodes(&s.graph)
        .into_iter()
        .find(|n| n["layer"] == "0")
        .expect("the graph keeps a layer-0 feature");
    let f = &node["feature"];
    let rec = json_of(
        &app,
        get(&format!("/api/layer/0/feature/{f}")),
        StatusCode::OK,
    )
    .await;
    assert_eq!(&rec["id"], f);
    assert!(rec["n_fires"].as_u64().unwrap() > 0 && !rec["top"].as_array().unwrap().is_empty());
    let (status, _, body) = call(&app, get(&format!("/layer/0/feature/{f}"))).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("data-page=\"feature\""));
    let e = json_of(&app, get("/api/layer/1/feature/0"), StatusCode::NOT_FOUND).await;
    assert!(
        e["error"]
            .as_str()
            .unwrap()
            .contains("zephyra features --sae"),
        "{e}"
    );
    json_of(&app, get("/api/layer/9/info"), StatusCode::NOT_FOUND).await;
    // Without a model: interventions and jobs say why they cannot run.
    let ablate = json!({ "edits": [{ "node_id": node["node_id"], "scale": 0.0 }] });
    let make = json!({ "name": "x", "prompt": "the" });
    for (uri, body) in [("/api/graph/g/intervene", ablate), ("/api/graphs", make)] {
        let r = call(&app, post(uri, body.to_string())).await;
        assert_eq!(r.0, StatusCode::SERVICE_UNAVAILABLE, "{uri}: {}", r.2);
    }
}

#[tokio::test]
async fn ablating_a_graph_node_runs_the_model_without_its_contribution() {
    let s = setup();
    let app = app(&s, true, None);
    let node = feature_nodes(&s.graph)[0].clone();
    let (layer, pos) = (
        node["layer"].as_str().unwrap().parse::<usize>().unwrap(),
        node["ctx_idx"].as_u64().unwrap() as usize,
    );
    let (f, act) = (
        node["feature"].as_u64().unwrap() as usize,
        node["activation"].as_f64().unwrap() as f32,
    );
    let target = s.graph["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["is_target_logit"] == true)
        .unwrap()["feature"]
        .as_u64()
        .unwrap() as usize;
    for scale in [0.0f32, 3.0] {
        let body = json!({ "edits": [{ "node_id": node["node_id"], "scale": scale }], "top_k": 5 });
        let r = json_of(
            &app,
            post("/api/graph/g/intervene", body.to_string()),
            StatusCode::OK,
        )
        .await;
        let plain = logits_by_hand(&s, layer, pos, f, 0.0);
        let edited = logits_by_hand(&s, layer, pos, f, (1.0 - scale) * act);
        let got = |k: &str| r["target"][k].as_f64().unwrap();
        assert_eq!(r["target"]["id"], target);
        assert!(
            (got("before") - demeaned(&plain, target as u32)).abs() < 1e-4,
            "{r}"
        );
        assert!(
            (got("after") - demeaned(&edited, target as u32)).abs() < 1e-4,
            "{r} vs {}",
            demeaned(&edited, target as u32)
        );
        assert!(
            (got("after") - got("before")).abs() > 1e-6,
            "the edit moves the target: {r}"
        );
        let top = r["after"].as_array().unwrap();
        assert_eq!(top.len(), 5);
        let best = (0..edited.len())
            .max_by(|&a, &b| edited[a].total_cmp(&edited[b]))
            .unwrap();
        assert_eq!(top[0]["id"], best);
        assert!((top[0]["logit"].as_f64().unwrap() - f64::from(edited[best])).abs() < 1e-4);
    }
    // Scale 1 changes nothing.
    let body = json!({ "edits": [{ "node_id": node["node_id"], "scale": 1.0 }] });
    let r = json_of(
        &app,
        post("/api/graph/g/intervene", body.to_string()),
        StatusCode::OK,
    )
    .await;
    assert_eq!(r["before"], r["after"]);

    let embedding = s.graph["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["feature_type"] == "embedding")
        .unwrap()["node_id"]
        .clone();
    for (body, needle) in [
        (json!({ "edits": [] }), "1 to 64 edits"),
        (
            json!({ "edits": [{ "node_id": "nope", "scale": 0 }] }),
            "no node `nope`",
        ),
        (
            json!({ "edits": [{ "node_id": embedding, "scale": 0 }] }),
            "not a feature",
        ),
        (
            json!({ "edits": [{ "node_id": node["node_id"], "scale": 1000 }] }),
            "scale 1000",
        ),
        (
            json!({ "edits": [{ "node_id": node["node_id"], "scale": 0 }], "top_k": 0 }),
            "top_k 0",
        ),
        (
            json!({ "edits": [{ "node_id": node["node_id"] }] }),
            "invalid JSON",
        ),
    ] {
        refused(&app, "/api/graph/g/intervene", &body, needle).await;
    }
    let ablate = json!({ "edits": [{ "node_id": node["node_id"], "scale": 0 }] });
    let r = call(&app, post("/api/graph/nope/intervene", ablate.to_string())).await;
    assert_eq!(r.0, StatusCode::NOT_FOUND, "{}", r.2);
}

#[tokio::test]
async fn a_graph_job_writes_the_graph_the_tracer_makes() {
    let s = setup();
    let app = app(&s, true, None);
    let body = json!({ "name": "made", "prompt": PROMPT }).to_string();
    let (status, _, answer) = call(&app, post("/api/graphs", body)).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    let job = serde_json::from_str::<Value>(&answer).unwrap()["job"].clone();
    let mut last = Value::Null;
    for _ in 0..6000 {
        last = json_of(&app, get(&format!("/api/graph-jobs/{job}")), StatusCode::OK).await;
        if last["state"] == "done" || last["state"] == "failed" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(last["state"], "done", "{last}");
    assert_eq!(last["name"], "made");
    assert!(last["total"].as_u64().unwrap() > 0 && last["done"] == last["total"]);
    // The same prompt and options as `g.json`: the same graph but for its name.
    let mut made = json_of(&app, get("/api/graph/made"), StatusCode::OK).await;
    made["metadata"]["slug"] = json!("g");
    assert_eq!(made, s.graph);
    let list = json_of(&app, get("/api/graphs"), StatusCode::OK).await;
    assert_eq!(strings_at(&list["graphs"], "name"), ["g", "made"]);
    for (body, needle) in [
        (
            json!({ "name": "made", "prompt": "the" }),
            "choose another name",
        ),
        (
            json!({ "name": "a/b", "prompt": "the" }),
            "not a graph name",
        ),
        (json!({ "name": "x", "prompt": "  " }), "the prompt"),
        (
            json!({ "name": "x", "prompt": "the", "node_threshold": 1.5 }),
            "node_threshold",
        ),
    ] {
        refused(&app, "/api/graphs", &body, needle).await;
    }
    json_of(&app, get("/api/graph-jobs/7"), StatusCode::NOT_FOUND).await;
}
