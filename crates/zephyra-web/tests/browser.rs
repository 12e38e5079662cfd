//! A real browser against the app: headless Chromium (Debian package `chromium`; `.ci/run` installs it)
//! loads the feature browser, a feature page, the steering playground (which runs a streamed steering
//! request on load with `?run=1`) and the run page (config, eval table, plots), and the test asserts on the
//! rendered DOM. Screenshots of the steering and run pages are kept in `target/browser/{steer,run}.png`.
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

use serde_json::{json, Value};
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
        let t0 = Instant::now();
        while self.eval(&ready) != json!(true) {
            assert!(
                t0.elapsed() < PAGE_TIMEOUT,
                "{url} never finished: {}",
                self.eval("document.documentElement.outerHTML")
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        self.eval("document.documentElement.outerHTML")
            .as_str()
            .unwrap()
            .to_string()
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
