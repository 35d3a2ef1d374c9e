//! The HTML report as a person sees it: it renders in headless Chromium, draws one chart per
//! column, lists every test, and asks the network for nothing.
//!
//! Chromium comes from Debian's `chromium` package; `.ci/run` installs it and sets
//! `POISONGATE_REQUIRE_CHROMIUM=1`, so there the test fails instead of skipping.

use std::path::Path;
use std::process::Command;

use crate::common::*;

/// Flags that keep the browser's own services quiet (they still make a few requests of
/// their own, which the net log attributes to Google hosts, never to the page).
const FLAGS: &[&str] = &[
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-domain-reliability",
    "--no-pings",
    "--disable-breakpad",
    "--window-size=1200,2400",
];

/// Hosts Chromium itself talks to at start (update checks, time, accounts), whatever page
/// it shows.
const BROWSER_HOSTS: &[&str] = &["google.com", "googleapis.com", "gstatic.com"];

/// Renders `page` to a screenshot; returns the URLs in the network log.
fn render(dir: &Path, page: &Path, shot: &Path) -> Vec<String> {
    let net = dir.join(format!("{}.net.json", shot.display().to_string().len()));
    let mut cmd = Command::new("chromium");
    cmd.args(FLAGS)
        .arg(format!("--user-data-dir={}", dir.join("profile").display()))
        .arg(format!("--log-net-log={}", net.display()))
        .arg(format!("--screenshot={}", shot.display()))
        .arg(format!("file://{}", page.display()));
    let out = cmd.output().expect("chromium runs");
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let log = std::fs::read_to_string(&net).unwrap_or_default();
    let mut urls = Vec::new();
    for part in log.split("\"url\":\"").skip(1) {
        if let Some(end) = part.find('"') {
            urls.push(part[..end].to_owned());
        }
    }
    urls
}

fn page_requests(urls: &[String]) -> Vec<&String> {
    urls.iter()
        .filter(|u| {
            let host = u
                .split("://")
                .nth(1)
                .and_then(|r| r.split(['/', ':', '?']).next())
                .unwrap_or("");
            !BROWSER_HOSTS
                .iter()
                .any(|h| host == *h || host.ends_with(&format!(".{h}")))
        })
        .collect()
}

fn png_size(path: &Path) -> (u32, u32) {
    let b = std::fs::read(path).unwrap();
    assert_eq!(&b[1..4], b"PNG", "{} is not a PNG", path.display());
    let w = u32::from_be_bytes(b[16..20].try_into().unwrap());
    let h = u32::from_be_bytes(b[20..24].try_into().unwrap());
    (w, h)
}

#[test]
fn the_html_report_renders_in_chromium_with_charts_and_no_network_request() {
    let have = Command::new("chromium").arg("--version").output().is_ok();
    if !have {
        assert!(
            std::env::var_os("POISONGATE_REQUIRE_CHROMIUM").is_none(),
            "chromium is required here (POISONGATE_REQUIRE_CHROMIUM) but not installed"
        );
        eprintln!("skipped: chromium is not installed (apt-get install chromium)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let html = dir.path().join("report.html");
    let base = baseline().to_str().unwrap().to_owned();
    let out = run(&[
        "check",
        "--baseline",
        &base,
        testdata("drifted/batch.parquet").to_str().unwrap(),
        "--html",
        html.to_str().unwrap(),
    ]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    let text = std::fs::read_to_string(&html).unwrap();
    // Self-contained: no script, no external asset (the SVG namespace is a name, not a fetch).
    assert!(!text.contains("<script"), "the report carries a script");
    for attr in ["src=", "href=", "url("] {
        assert!(!text.contains(attr), "the report references {attr}");
    }
    // One chart per summarised column (9), flagged ones first, and every test listed.
    assert_eq!(text.matches("<svg ").count(), 9);
    let first = text.find("<figcaption>").unwrap();
    assert!(text[first..].starts_with("<figcaption><code>"));
    assert!(
        text[first..first + 200].contains("flagged"),
        "the first chart is not a flagged column"
    );
    assert!(text.contains("Every test ("));
    assert!(text.contains(">pass</td>") && text.contains(">deny</td>"));

    // A control page that does fetch something: the net log must see it, or an empty log
    // proves nothing.
    let control = dir.path().join("control.html");
    std::fs::write(
        &control,
        "<!DOCTYPE html><html><body><img src=\"http://127.0.0.1:9/probe.png\"></body></html>",
    )
    .unwrap();
    let urls = render(dir.path(), &control, &dir.path().join("control.png"));
    assert!(
        urls.iter().any(|u| u.contains("127.0.0.1:9/probe.png")),
        "the net log did not record the control page's request: {urls:?}"
    );

    let shot = dir.path().join("report.png");
    let urls = render(dir.path(), &html, &shot);
    let requests = page_requests(&urls);
    assert!(
        requests.is_empty(),
        "the report page made requests: {requests:?}"
    );
    assert_eq!(png_size(&shot), (1200, 2400));
    // A rendered page, not a blank one: a blank 1200x2400 PNG compresses to a few KiB.
    let size = std::fs::metadata(&shot).unwrap().len();
    assert!(size > 50_000, "screenshot of {size} bytes looks blank");
}
