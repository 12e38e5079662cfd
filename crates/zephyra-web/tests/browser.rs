//! A real browser against the app: headless Chromium (Debian package `chromium`; `.ci/run` installs it)
//! loads the feature browser, a feature page and the steering playground (which runs a steering request on
//! load with `?run=1`), and the test asserts on the rendered DOM. A screenshot of the steering page is kept
//! in `target/browser/steer.png`.
//!
//! The binary is taken from `$ZEPHYRA_CHROMIUM`, else `chromium`, else `chromium-browser`; when none exists
//! the test fails with the install command (it does not skip).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;

use zephyra_analysis::features::planted::planted;
use zephyra_analysis::features::{
    compute_features, FeatureJob, FeatureOptions, FeatureStore, Provenance,
};
use zephyra_analysis::steer::Engine;
use zephyra_data::Corpus;
use zephyra_web::{router, AppState};

fn chromium() -> PathBuf {
    if let Some(p) = std::env::var_os("ZEPHYRA_CHROMIUM") {
        return p.into();
    }
    for name in ["chromium", "chromium-browser"] {
        if Command::new(name)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
        {
            return name.into();
        }
    }
    panic!("headless Chromium is needed for this test: `apt-get install -y chromium` (or set ZEPHYRA_CHROMIUM)");
}

fn browse(browser: &PathBuf, profile: &std::path::Path, url: &str, extra: &[&str]) -> String {
    let out = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--virtual-time-budget=20000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(extra)
        .arg(url)
        .output()
        .expect("running chromium");
    assert!(
        out.status.success(),
        "chromium failed on {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn chromium_renders_the_feature_page_and_a_steering_run() {
    let browser = chromium();
    let p = planted(3);
    let dir = tempfile::tempdir().unwrap();
    let corpus =
        Corpus::from_specs(&[p.corpus_path.display().to_string()], Default::default()).unwrap();
    let job = FeatureJob {
        llama: &p.llama,
        tokenizer: p.tokenizer.clone(),
        sae: &p.sae,
        hook: p.hook,
        corpus: &corpus,
        options: FeatureOptions {
            ctx: 16,
            n_top: 5,
            checkpoint_every: 0,
            ..Default::default()
        },
        out_dir: dir.path(),
        provenance: Provenance::default(),
    };
    compute_features(&job, &mut |_| {}).unwrap();
    let store = FeatureStore::open(dir.path()).unwrap();
    let engine = Engine::new(
        p.llama.clone(),
        p.tokenizer.clone(),
        Arc::clone(&p.sae),
        p.hook,
    )
    .unwrap();
    let app = router(AppState::new(store, Some(engine)));

    let (tx, rx) = std::sync::mpsc::channel::<SocketAddr>();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            axum::serve(listener, app).await.unwrap();
        });
    });
    let addr = rx.recv().unwrap();
    let profile = tempfile::tempdir().unwrap();
    let token = p.tokenizer.decode(&[p.token]).unwrap();

    let dom = browse(
        &browser,
        profile.path(),
        &format!("http://{addr}/"),
        &["--dump-dom"],
    );
    assert!(
        dom.contains("data-ready=\"1\""),
        "the browser page never finished: {dom}"
    );
    assert!(
        dom.contains("href=\"/feature/0\""),
        "feature 0 is listed: {dom}"
    );

    let dom = browse(
        &browser,
        profile.path(),
        &format!("http://{addr}/feature/0"),
        &["--dump-dom"],
    );
    assert!(dom.contains("data-ready=\"1\""), "{dom}");
    assert!(dom.contains("id=\"top-contexts\""), "{dom}");
    assert!(
        dom.contains("tok center"),
        "contexts are rendered with the maximum marked: {dom}"
    );
    assert!(
        dom.contains(&format!(">{token}</td>")),
        "the logit table lists the planted token `{token}`: {dom}"
    );
    assert!(dom.contains("<svg class=\"hist\""), "{dom}");

    let steer =
        format!("http://{addr}/steer?feature=0&strength=500&max_tokens=8&prompt=the%20cat&run=1");
    let dom = browse(&browser, profile.path(), &steer, &["--dump-dom"]);
    assert!(
        dom.contains(">done<"),
        "the steering request finished: {dom}"
    );
    let grab = |id: &str| {
        let start = dom
            .find(&format!("id=\"{id}\""))
            .unwrap_or_else(|| panic!("no #{id}: {dom}"));
        let rest = &dom[start..];
        let open = rest.find('>').unwrap() + 1;
        rest[open..open + rest[open..].find("</div>").unwrap()].to_string()
    };
    let (steered, unsteered) = (grab("steered"), grab("unsteered"));
    assert!(
        steered.starts_with("the cat") && unsteered.starts_with("the cat"),
        "{steered} | {unsteered}"
    );
    assert_ne!(steered, unsteered, "strength 500 changes the continuation");

    let shots = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../target/browser"));
    std::fs::create_dir_all(&shots).unwrap();
    let png = shots.join("steer.png");
    let _ = std::fs::remove_file(&png);
    browse(
        &browser,
        profile.path(),
        &steer,
        &[
            &format!("--screenshot={}", png.display()),
            "--window-size=1200,800",
        ],
    );
    assert!(
        std::fs::metadata(&png)
            .map(|m| m.len() > 1000)
            .unwrap_or(false),
        "no screenshot at {}",
        png.display()
    );
}
