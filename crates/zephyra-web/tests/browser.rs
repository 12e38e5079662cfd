//! A real browser against the app: headless Chromium (Debian package `chromium`; `.ci/run` installs it)
//! loads the feature browser, a feature page, the steering playground (which runs a streamed steering
//! request on load with `?run=1`) and the run page (config, eval table, plots), and the test asserts on the
//! rendered DOM; and it draws an attribution graph, hovers a node with a real pointer (its contexts card),
//! runs an ablation and a steering edit from the graph page, and clicks the node to open its feature page. Screenshots of the steering, run and graph pages are kept in
//! `target/browser/{steer,run,graph}.png`.
//!
//! The binary is taken from `$ZEPHYRA_CHROMIUM`, else `chromium`, else `chromium-browser`; when none exists
//! the test fails with the install command (it does not skip).

mod common;

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::graph::{feature_nodes, PROMPT};
use serde_json::{json, Value};
use zephyra_analysis::attribution::intervene::{demeaned, top_tokens, FeatureEdit};
use zephyra_web::router;

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

/// Headless Chromium driven over the DevTools protocol on a pipe (`--remote-debugging-pipe`: commands go
/// in on fd 3, answers come out on fd 4, each a JSON text ended by a NUL byte). Unlike `--dump-dom`, this
/// waits in real time for the page to say it is done (`data-ready="1"`), which a streamed answer needs.
struct Browser {
    child: Arc<Mutex<Child>>,
    to: File,
    from: BufReader<File>,
    session: String,
    next_id: u64,
    _dir: tempfile::TempDir,
}

/// How long one page may take before the test fails.
const PAGE_TIMEOUT: Duration = Duration::from_secs(60);

impl Browser {
    fn start(binary: &Path) -> Browser {
        let dir = tempfile::tempdir().unwrap();
        let (fifo_in, fifo_out) = (dir.path().join("in"), dir.path().join("out"));
        let ok = Command::new("mkfifo")
            .arg(&fifo_in)
            .arg(&fifo_out)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "mkfifo failed");
        let profile = dir.path().join("profile");
        let child = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "exec \"$0\" \"$@\" 3<'{}' 4>'{}'",
                fifo_in.display(),
                fifo_out.display()
            ))
            .arg(binary)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--remote-debugging-pipe",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting chromium");
        let child = Arc::new(Mutex::new(child));
        // Watchdog: a browser that hangs is killed, which ends the pipe and fails the test.
        let watched = Arc::downgrade(&child);
        std::thread::spawn(move || {
            std::thread::sleep(PAGE_TIMEOUT * 5);
            if let Some(c) = watched.upgrade() {
                let _ = c.lock().unwrap().kill();
            }
        });
        let to = File::options().write(true).open(&fifo_in).unwrap();
        let from = BufReader::new(File::open(&fifo_out).unwrap());
        let mut b = Browser {
            child,
            to,
            from,
            session: String::new(),
            next_id: 0,
            _dir: dir,
        };
        let target = b.call(None, "Target.createTarget", json!({"url": "about:blank"}));
        let target_id = target["targetId"].as_str().unwrap().to_string();
        let attached = b.call(
            None,
            "Target.attachToTarget",
            json!({"targetId": target_id, "flatten": true}),
        );
        b.session = attached["sessionId"].as_str().unwrap().to_string();
        b
    }

    /// Sends one command and returns its result (events in between are skipped).
    fn call(&mut self, session: Option<&str>, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut msg = json!({"id": id, "method": method, "params": params});
        if let Some(s) = session {
            msg["sessionId"] = json!(s);
        }
        let mut bytes = msg.to_string().into_bytes();
        bytes.push(0);
        self.to.write_all(&bytes).unwrap();
        loop {
            let mut buf = Vec::new();
            let n = self.from.read_until(0, &mut buf).unwrap();
            assert!(n > 0, "chromium closed the DevTools pipe during {method}");
            buf.pop();
            let v: Value = serde_json::from_slice(&buf).unwrap();
            if v["id"] == id {
                assert!(v.get("error").is_none(), "{method}: {v}");
                return v["result"].clone();
            }
        }
    }

    fn page(&mut self, method: &str, params: Value) -> Value {
        let s = self.session.clone();
        self.call(Some(&s), method, params)
    }

    fn eval(&mut self, expression: &str) -> Value {
        let r = self.page(
            "Runtime.evaluate",
            json!({"expression": expression, "returnByValue": true}),
        );
        r["result"]["value"].clone()
    }

    /// Opens `url`, waits until the app marks the page done, and returns the rendered DOM.
    fn open(&mut self, url: &str) -> String {
        // The page we leave may be the same URL, already done: clear its mark first.
        self.eval("document.body && delete document.body.dataset.ready");
        self.page("Page.navigate", json!({ "url": url }));
        let ready = format!(
            "location.href === {} && document.body !== null && document.body.dataset.ready === '1'",
            json!(url)
        );
        self.wait_for(&ready, &format!("{url} finishing"));
        self.eval("document.documentElement.outerHTML")
            .as_str()
            .unwrap()
            .to_string()
    }

    /// Waits until `expression` is true on the current page; fails with `what` and the page when it is not
    /// within [`PAGE_TIMEOUT`].
    fn wait_for(&mut self, expression: &str, what: &str) {
        let t0 = Instant::now();
        while self.eval(expression) != json!(true) {
            assert!(
                t0.elapsed() < PAGE_TIMEOUT,
                "{what} never happened: {}",
                self.eval("document.documentElement.outerHTML")
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Scrolls the element of `selector` into view and returns its centre in viewport coordinates,
    /// checking that the element is what a pointer there would touch.
    fn centre_of(&mut self, selector: &str) -> (f64, f64) {
        let js = format!(
            "(() => {{ const e = document.querySelector({sel}); if (!e) return null;
               e.scrollIntoView({{block: 'center', inline: 'center'}});
               const r = e.getBoundingClientRect(), x = r.left + r.width / 2, y = r.top + r.height / 2;
               const hit = document.elementFromPoint(x, y);
               return [x, y, hit === e || e.contains(hit)]; }})()",
            sel = json!(selector)
        );
        let v = self.eval(&js);
        let arr = v
            .as_array()
            .unwrap_or_else(|| panic!("no element `{selector}` on the page"));
        assert_eq!(
            arr[2],
            json!(true),
            "`{selector}` is covered by another element"
        );
        (arr[0].as_f64().unwrap(), arr[1].as_f64().unwrap())
    }

    /// Moves a real pointer onto the element of `selector` (mouse events from the browser, not from script).
    fn hover(&mut self, selector: &str) {
        let (x, y) = self.centre_of(selector);
        self.page(
            "Input.dispatchMouseEvent",
            json!({"type": "mouseMoved", "x": x, "y": y}),
        );
    }

    /// Clicks the element of `selector` with a real pointer.
    fn click(&mut self, selector: &str) {
        let (x, y) = self.centre_of(selector);
        self.page(
            "Input.dispatchMouseEvent",
            json!({"type": "mouseMoved", "x": x, "y": y}),
        );
        for kind in ["mousePressed", "mouseReleased"] {
            self.page(
                "Input.dispatchMouseEvent",
                json!({"type": kind, "x": x, "y": y, "button": "left", "clickCount": 1}),
            );
        }
    }

    /// A PNG of the whole current page, `width` pixels wide.
    fn screenshot(&mut self, width: u32) -> Vec<u8> {
        let height = self
            .eval("document.documentElement.scrollHeight")
            .as_u64()
            .unwrap_or(800);
        self.page(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": false}),
        );
        let shot = self.page("Page.captureScreenshot", json!({"format": "png"}));
        base64_decode(shot["data"].as_str().unwrap())
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let msg = format!("{}\0", json!({"id": 0, "method": "Browser.close"}));
        let _ = self.to.write_all(msg.as_bytes());
        if let Ok(mut c) = self.child.lock() {
            let t0 = Instant::now();
            while t0.elapsed() < Duration::from_secs(5) {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The text of `html` between the first `start` and the next `end`; panics naming `what` when `start`
/// is absent.
fn after<'a>(html: &'a str, start: &str, end: &str, what: &str) -> &'a str {
    let rest = html
        .split_once(start)
        .unwrap_or_else(|| panic!("no {what} (`{start}`) in {html}"))
        .1;
    rest.split(end).next().unwrap_or(rest)
}

fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {c}"),
    };
    let digits: Vec<u8> = text.bytes().filter(|&c| c != b'=').map(value).collect();
    let mut out = Vec::with_capacity(digits.len() * 3 / 4);
    for chunk in digits.chunks(4) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, &d)| acc | u32::from(d) << (18 - 6 * i));
        out.extend_from_slice(&n.to_be_bytes()[1..chunk.len()]);
    }
    out
}

#[test]
fn chromium_renders_the_feature_page_a_streamed_steering_run_and_the_run_page() {
    let mut browser = Browser::start(&chromium());
    let f = common::fixture();
    let run = common::evaluated_run(&f);
    let addr = common::serve_in_background(router(f.state(true).with_run_dir(run.path())));
    let p = &f.p;
    let token = p.tokenizer.decode(&[p.token]).unwrap();

    let dom = browser.open(&format!("http://{addr}/"));
    assert!(
        dom.contains("data-ready=\"1\""),
        "the browser page never finished: {dom}"
    );
    assert!(
        dom.contains("href=\"/feature/0\""),
        "feature 0 is listed: {dom}"
    );

    let dom = browser.open(&format!("http://{addr}/feature/0"));
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
    let dom = browser.open(&steer);
    assert!(
        dom.contains(">done<"),
        "the steering request finished: {dom}"
    );
    // (opening tag, text) of the element with `id`.
    let grab = |id: &str| {
        let start = dom
            .find(&format!("id=\"{id}\""))
            .unwrap_or_else(|| panic!("no #{id}: {dom}"));
        let tag_start = dom[..start].rfind('<').unwrap();
        let rest = &dom[start..];
        let open = rest.find('>').unwrap() + 1;
        (
            dom[tag_start..start + open].to_string(),
            rest[open..open + rest[open..].find("</div>").unwrap()].to_string(),
        )
    };
    let ((steered_tag, steered), (unsteered_tag, unsteered)) = (grab("steered"), grab("unsteered"));
    assert!(
        steered.starts_with("the cat") && unsteered.starts_with("the cat"),
        "{steered} | {unsteered}"
    );
    assert_ne!(steered, unsteered, "strength 500 changes the continuation");
    for tag in [&steered_tag, &unsteered_tag] {
        // The page filled the column from the stream, several pieces, and they add up to the final text.
        assert!(tag.contains("data-match=\"1\""), "{tag}");
        let pieces: usize = after(tag, "data-pieces=\"", "\"", "data-pieces")
            .parse()
            .unwrap_or_else(|e| panic!("data-pieces in {tag}: {e}"));
        assert!(pieces > 1, "{tag}");
    }

    let run_url = format!("http://{addr}/run");
    let dom = browser.open(&run_url);
    assert!(dom.contains("data-ready=\"1\""), "{dom}");
    assert!(
        dom.contains("id=\"run-link\""),
        "the header links the run page"
    );
    let eval_table = after(&dom, "id=\"eval-table\"", "</table>", "eval table");
    assert!(
        eval_table.contains("<th>FVE (centred)</th><td>0.8191</td>"),
        "{eval_table}"
    );
    assert!(dom.contains("id=\"cfg\"") && dom.contains("<td>blocks.0.hook_resid_pre</td>"));
    for plot in ["training.svg", "density.svg"] {
        let img = after(&dom, &format!("src=\"/run/plots/{plot}\""), ">", "<img>");
        assert!(
            img.contains("data-loaded=\"1\""),
            "{plot} was not loaded: {img}"
        );
    }
    assert!(!dom.contains("id=\"no-eval\"") && !dom.contains("id=\"problems\""));

    // A run without an eval or plots: the page says how to make one, and draws the training curves itself.
    let bare_run = common::trained_run(&f);
    let addr2 = common::serve_in_background(router(f.state(false).with_run_dir(bare_run.path())));
    let dom = browser.open(&format!("http://{addr2}/run"));
    let command = format!(
        "<code id=\"eval-command\">zephyra eval --sae {}</code>",
        bare_run.path().display()
    );
    assert!(dom.contains(&command), "{dom}");
    assert!(dom.contains("id=\"no-plots\"") && !dom.contains("id=\"eval-table\""));
    for key in ["loss", "l0", "fve"] {
        assert!(
            dom.contains(&format!("data-key=\"{key}\"")),
            "no {key} curve: {dom}"
        );
    }
    assert!(
        dom.contains("last 0.750<"),
        "the FVE curve ends at the last record: {dom}"
    );

    let shots = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../target/browser"));
    std::fs::create_dir_all(&shots).unwrap();
    for (name, url) in [("steer.png", &steer), ("run.png", &run_url)] {
        let png = shots.join(name);
        let _ = std::fs::remove_file(&png);
        browser.open(url);
        let bytes = browser.screenshot(1200);
        assert!(
            bytes.len() > 1000 && bytes.starts_with(b"\x89PNG\r\n\x1a\n"),
            "{name} is not a PNG"
        );
        std::fs::write(&png, bytes).unwrap();
    }
}

/// The `[data-…]` values of the elements of `selector`, sorted.
fn sorted_strings(browser: &mut Browser, selector: &str, js_map: &str) -> Vec<String> {
    let v = browser.eval(&format!(
        "[...document.querySelectorAll({})].map({js_map})",
        json!(selector)
    ));
    let mut out: Vec<String> = serde_json::from_value(v).unwrap();
    out.sort();
    out
}

/// `x` as the app's `fmt(x)` shows it (3 decimals, or 3 digits in exponent form outside 0.01..10,000).
fn js_fmt(x: f64) -> String {
    if x == 0.0 {
        "0".into()
    } else if (1e-2..1e4).contains(&x.abs()) {
        format!("{x:.3}")
    } else {
        let s = format!("{x:.2e}");
        match s.split_once('e') {
            Some((m, e)) if !e.starts_with('-') => format!("{m}e+{e}"),
            _ => s,
        }
    }
}

/// The token texts of the `i`-th table of the intervention result, in order.
fn shown_tokens(browser: &mut Browser, i: usize) -> Vec<String> {
    let js = format!(
        "[...document.querySelectorAll('#intervention table')[{i}].querySelectorAll('td.tok')].map(t => t.textContent)"
    );
    serde_json::from_value(browser.eval(&js)).unwrap()
}

#[test]
fn chromium_draws_a_graph_hovers_and_opens_a_node_and_ablates_and_steers_from_it() {
    let s = common::graph::setup();
    let store_dir = tempfile::tempdir().unwrap();
    let store = common::graph::layer0_store(&s, store_dir.path());
    let addr = common::serve_in_background(common::graph::app(&s, true, Some(store.clone())));
    let mut browser = Browser::start(&chromium());
    let url = format!("http://{addr}/graph/g");
    browser.open(&url);
    assert_eq!(
        browser.eval("document.querySelector('#status').className"),
        json!("muted")
    );

    // Every node of the file is drawn once with its id; every link once, between its ends, red when negative.
    let nodes = s.graph["nodes"].as_array().unwrap();
    let links = s.graph["links"].as_array().unwrap();
    assert!(nodes.len() > 5 && !links.is_empty(), "{}", s.graph);
    let mut want_nodes: Vec<String> = nodes
        .iter()
        .map(|n| n["node_id"].as_str().unwrap().to_string())
        .collect();
    want_nodes.sort();
    let drawn = sorted_strings(&mut browser, "#graph-svg .node", "e => e.dataset.node");
    assert_eq!(drawn, want_nodes);
    let mut want_links: Vec<String> = links
        .iter()
        .map(|l| {
            let sign = if l["weight"].as_f64().unwrap() < 0.0 {
                "neg"
            } else {
                "pos"
            };
            format!(
                "{} {} {sign}",
                l["source"].as_str().unwrap(),
                l["target"].as_str().unwrap()
            )
        })
        .collect();
    want_links.sort();
    let drawn = sorted_strings(
        &mut browser,
        "#graph-svg line.edge",
        "e => `${e.dataset.source} ${e.dataset.target} ${e.classList.contains('neg') ? 'neg' : 'pos'}`",
    );
    assert_eq!(drawn, want_links);
    // Legible: no node covers another (the cells of a position share its column side by side).
    let overlaps = browser.eval(
        "(() => { const b = [...document.querySelectorAll('#graph-svg .node')].map(e => e.getBoundingClientRect());
           let n = 0;
           for (let i = 0; i < b.length; i++) for (let j = i + 1; j < b.length; j++)
             if (b[i].left < b[j].right && b[j].left < b[i].right && b[i].top < b[j].bottom && b[j].top < b[i].bottom) n++;
           return n; })()",
    );
    assert_eq!(overlaps, json!(0), "overlapping nodes");
    let features = feature_nodes(&s.graph);
    let n_drawn =
        browser.eval("document.querySelectorAll('#graph-svg circle.node.feature').length");
    assert_eq!(n_drawn, json!(features.len()));

    // Hovering a layer-0 feature fills the card with its top contexts from layer 0's store.
    let node = features
        .iter()
        .find(|n| n["layer"] == "0")
        .expect("the graph keeps a layer-0 feature");
    let (id, f) = (
        node["node_id"].as_str().unwrap(),
        node["feature"].as_u64().unwrap(),
    );
    let record = store
        .record(f as u32)
        .unwrap()
        .expect("a record per feature");
    assert!(!record.top.is_empty(), "feature {f} fired on the corpus");
    browser.hover(&format!("#graph-svg .node[data-node=\"{id}\"]"));
    browser.wait_for(
        "document.querySelectorAll('#hover-card .ctx').length > 0",
        "the hover card's contexts",
    );
    let centres: Vec<String> = serde_json::from_value(browser.eval(
        "[...document.querySelectorAll('#hover-card .ctx')].map(r => r.querySelector('.tok.center').textContent)",
    ))
    .unwrap();
    let want: Vec<String> = record
        .top
        .iter()
        .take(5)
        .map(|ex| ex.tokens[ex.center as usize].replace('\n', "\u{21b5}"))
        .collect();
    assert_eq!(centres, want);
    let title = browser.eval("document.querySelector('#hover-card h2').textContent");
    let pos = node["ctx_idx"].as_u64().unwrap();
    assert!(
        title
            .as_str()
            .unwrap()
            .starts_with(&format!("L0 feature {f} @{pos}")),
        "{title}"
    );

    // The ablate/steer form: pick the feature (scale 0), run the real model, then steer it (scale 3).
    let tokens = s.tracer.tokens(PROMPT).unwrap();
    let target = nodes
        .iter()
        .find(|n| n["is_target_logit"] == true)
        .and_then(|n| n["feature"].as_u64())
        .expect("a target logit") as u32;
    let expected = |scale: f32| {
        let edit = FeatureEdit {
            layer: 0,
            pos: pos as usize,
            feature: f as usize,
            activation: node["activation"].as_f64().unwrap() as f32,
            scale,
        };
        let out = s.tracer.intervene(&tokens, &[edit]).unwrap();
        let pieces = |logits: &[f32]| -> Vec<String> {
            top_tokens(logits, 10)
                .iter()
                .map(|t| s.tracer.piece(t.id).replace('\n', "\u{21b5}"))
                .collect()
        };
        let change = format!(
            "{}: logit − mean {} → {}",
            json!(s.tracer.piece(target)),
            js_fmt(demeaned(&out.before, target)),
            js_fmt(demeaned(&out.after, target))
        );
        (pieces(&out.before), pieces(&out.after), change)
    };
    browser.eval(&format!(
        "document.querySelector('#pick').value = {}; true",
        json!(id)
    ));
    browser.click("#add-edit");
    browser.wait_for(
        "document.querySelectorAll('#edits li').length === 1",
        "the edit being listed",
    );
    for (run, scale) in [(1, 0.0f32), (2, 3.0)] {
        if run > 1 {
            // Type the new scale into the edit's box, as a user would.
            browser.click("#edits input.scale");
            browser.eval("document.querySelector('#edits input.scale').select(); true");
            browser.page("Input.insertText", json!({ "text": scale.to_string() }));
        }
        browser.click("#intervene");
        browser.wait_for(
            &format!("document.querySelector('#intervention').dataset.runs === '{run}'"),
            "the intervention's answer",
        );
        let (before, after, change) = expected(scale);
        assert_eq!(shown_tokens(&mut browser, 0), before, "scale {scale}");
        assert_eq!(shown_tokens(&mut browser, 1), after, "scale {scale}");
        let shown = browser.eval("document.querySelector('#target-change').textContent");
        assert_eq!(shown, json!(change), "scale {scale}");
        let side_by_side = browser.eval(
            "(() => { const [a, b] = [...document.querySelectorAll('#intervention table')].map(t => t.getBoundingClientRect());
               return a.top === b.top && a.right <= b.left; })()",
        );
        assert_eq!(
            side_by_side,
            json!(true),
            "the before and after tables sit side by side"
        );
    }
    assert_eq!(
        browser.eval("document.querySelector('#status').textContent"),
        json!("")
    );

    let shots = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../target/browser"));
    std::fs::create_dir_all(&shots).unwrap();
    let png = browser.screenshot(1200);
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n"),
        "graph.png is not a PNG"
    );
    std::fs::write(shots.join("graph.png"), png).unwrap();

    // Clicking the feature opens its page: layer 0's record, all its top contexts.
    browser.click(&format!("#graph-svg .node[data-node=\"{id}\"]"));
    browser.wait_for(
        &format!(
            "location.pathname === '/layer/0/feature/{f}' && document.body.dataset.ready === '1'"
        ),
        "the feature page after the click",
    );
    let title = browser.eval("document.querySelector('#title').textContent");
    assert_eq!(title, json!(format!("Layer 0 feature {f}")));
    let rows = browser.eval("document.querySelectorAll('#top-contexts .ctx').length");
    assert_eq!(rows, json!(record.top.len()));
}

#[test]
fn chromium_draws_the_strongest_edges_of_a_graph_too_large_to_draw_whole() {
    // 150,000 links (a pruned graph of trained transcoders keeps 10^5 and more): 20,000 strong ones between
    // two nodes, 130,000 weak ones between two others. The page must draw exactly the strong ones and say so
    // (drawing all of them, or `Math.max(...)` over all weights, stalls or throws).
    let s = common::graph::setup();
    let mut big = s.graph.clone();
    let ids: Vec<String> = big["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["node_id"].as_str().unwrap().to_string())
        .collect();
    assert!(ids.len() >= 4, "{ids:?}");
    let link = |a: &str, b: &str, w: f64| json!({"source": a, "target": b, "weight": w});
    let mut links: Vec<Value> = (0..20_000)
        .map(|i| link(&ids[0], &ids[1], 1.0 + f64::from(i) * 1e-3))
        .collect();
    links.extend((0..130_000).map(|i| link(&ids[2], &ids[3], -0.5 + f64::from(i % 1000) * 1e-4)));
    big["links"] = Value::Array(links);
    std::fs::write(
        s.dir.path().join("big.json"),
        serde_json::to_vec(&big).unwrap(),
    )
    .unwrap();
    let addr = common::serve_in_background(common::graph::app(&s, false, None));
    let mut browser = Browser::start(&chromium());
    browser.open(&format!("http://{addr}/graph/big"));
    assert_eq!(
        browser.eval("document.querySelector('#status').className"),
        json!("muted")
    );
    let strong = format!(
        "[...document.querySelectorAll('#graph-svg line.edge')].filter(e => e.dataset.source === {} && e.dataset.target === {}).length",
        json!(ids[0]),
        json!(ids[1])
    );
    assert_eq!(
        browser.eval("document.querySelectorAll('#graph-svg line.edge').length"),
        json!(20_000)
    );
    assert_eq!(browser.eval(&strong), json!(20_000));
    let said = browser.eval("document.querySelector('#prompt').textContent");
    assert!(
        said.as_str()
            .is_some_and(|t| t.contains("150000 edges (the 20000 strongest drawn)")),
        "{said}"
    );
}
