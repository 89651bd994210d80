//! End to end in a real browser: Debian's headless Chromium, driven over WebDriver
//! (fantoccini) through Debian's chromedriver, which the test starts on a free
//! loopback port and stops at the end.
//!
//! Two browser sessions with separate profiles and User-Agents are two devices of one
//! user: device A signs up, device B logs in, A's devices page lists both (each with
//! its browser, system and sign-in method), A signs B out, and B's next page load lands on the login page; then B logs in again and A
//! signs out everywhere. The app runs with its production cookie settings
//! (`__Host-sid`, `Secure`), which Chromium accepts on `http://localhost`.
//!
//! Needs `/usr/bin/chromium` and `/usr/bin/chromedriver` (`apt-get install -y chromium
//! chromium-driver`; other paths with `SESSIONDB_CHROMIUM` / `SESSIONDB_CHROMEDRIVER`).
//! Without them the test fails and says so, unless `SESSIONDB_SKIP_BROWSER=1` asks to
//! skip it. Screenshots of the devices page go to `SESSIONDB_SCREENSHOT_DIR` if set
//! (relative to the repository root: `docs/screenshots` refreshes the README's), else
//! to the target directory, so a plain test run leaves the work tree clean.

mod support;

use std::error::Error;
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use sessiondb_axum_app::Config;
use support::Running;

type Res<T = ()> = Result<T, Box<dyn Error>>;

/// The browser window's width, in CSS pixels.
const WIDTH: u32 = 1000;

const SKIP_ENV: &str = "SESSIONDB_SKIP_BROWSER";
const SCREENSHOT_ENV: &str = "SESSIONDB_SCREENSHOT_DIR";

/// Device A's User-Agent: a Linux desktop.
const UA_LAPTOP: &str = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) \
     Chrome/156.0.0.0 Safari/537.36";
/// Device B's User-Agent: an Android phone.
const UA_PHONE: &str = "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 \
     (KHTML, like Gecko) Chrome/156.0.0.0 Mobile Safari/537.36";

fn tool(env: &str, default: &str) -> PathBuf {
    std::env::var_os(env).map_or_else(|| PathBuf::from(default), PathBuf::from)
}

/// chromedriver, in its own process group so that stopping it also stops any browser
/// it started (even if the test panics half-way).
struct Driver {
    child: Child,
    port: u16,
}

impl Driver {
    fn start(chromedriver: &Path, log: &Path) -> Res<Driver> {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let log = std::fs::File::create(log)?;
        let child = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", chromedriver.display()))?;
        let mut driver = Driver { child, port };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(status) = driver.child.try_wait()? {
                return Err(format!("chromedriver exited at start: {status}").into());
            }
            if Instant::now() > deadline {
                return Err("chromedriver did not listen within 20 s".into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(driver)
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // The group id is chromedriver's pid (process_group(0)): this ends it and
        // every browser process it started, and nothing else.
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill").args(["-TERM", "--", &group]).status();
        std::thread::sleep(Duration::from_millis(200));
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        // chromedriver itself, even if no `kill` program was found.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A browser session: its own fresh profile directory and User-Agent.
async fn browser(
    driver: &Driver,
    chromium: &Path,
    profile: &Path,
    user_agent: &str,
) -> Res<Client> {
    let args = [
        "--headless".to_owned(),
        "--no-sandbox".to_owned(),
        "--disable-gpu".to_owned(),
        "--disable-quic".to_owned(),
        "--no-first-run".to_owned(),
        "--disable-background-networking".to_owned(),
        "--disable-component-update".to_owned(),
        "--disable-sync".to_owned(),
        "--disable-dev-shm-usage".to_owned(),
        "--hide-scrollbars".to_owned(),
        format!("--window-size={WIDTH},800"),
        format!("--user-data-dir={}", profile.display()),
        format!("--user-agent={user_agent}"),
    ];
    let caps = serde_json::json!({
        "browserName": "chrome",
        "goog:chromeOptions": { "binary": chromium, "args": args },
    });
    let serde_json::Value::Object(caps) = caps else {
        unreachable!("a JSON object literal")
    };
    let client = ClientBuilder::new(HttpConnector::new())
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{}", driver.port))
        .await
        .map_err(|e| format!("cannot start a Chromium session: {e}"))?;
    Ok(client)
}

/// Fills the username and password fields and submits, then waits for `then`.
async fn submit_credentials(
    b: &Client,
    url: &str,
    user: &str,
    password: &str,
    then: Locator<'_>,
) -> Res {
    b.goto(url).await?;
    b.find(Locator::Id("username"))
        .await?
        .send_keys(user)
        .await?;
    b.find(Locator::Id("password"))
        .await?
        .send_keys(password)
        .await?;
    b.find(Locator::Id("submit")).await?.click().await?;
    b.wait()
        .at_most(Duration::from_secs(20))
        .for_element(then)
        .await?;
    Ok(())
}

/// The number of device cards on the page.
async fn device_count(b: &Client) -> Res<usize> {
    Ok(b.find_all(Locator::Css("section.device")).await?.len())
}

/// The path of the page the browser is on.
async fn path_of(b: &Client) -> Res<String> {
    Ok(b.current_url().await?.path().to_owned())
}

/// Waits until the page is at `path`.
async fn wait_for_path(b: &Client, path: &str) -> Res {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let at = path_of(b).await?;
        if at == path {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("still at {at}, expected {path}").into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Saves a screenshot of the whole page (the window is first fitted to it) and
/// checks it is a PNG of a real page.
async fn screenshot(b: &Client, dir: &Path, name: &str) -> Res<PathBuf> {
    let sizes = b
        .execute(
            "return [document.documentElement.scrollHeight, \
                     window.outerHeight - window.innerHeight];",
            vec![],
        )
        .await?;
    let px = |i: usize| sizes.get(i).and_then(serde_json::Value::as_u64);
    if let (Some(page), Some(frame)) = (px(0), px(1)) {
        let height = u32::try_from((page + frame).clamp(400, 4000))?;
        b.set_window_size(WIDTH, height).await?;
    }
    let png = b.screenshot().await?;
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "{name} is not a PNG");
    assert!(
        png.len() > 10_000,
        "{name} is suspiciously small ({} bytes)",
        png.len()
    );
    let path = dir.join(name);
    std::fs::write(&path, &png)?;
    Ok(path)
}

/// The whole flow; any failure is an error naming the step.
async fn flow(chromium: &Path, driver: &Driver, shots: &Path) -> Res {
    let data = tempfile::tempdir()?;
    // Changing the password asks for it again once a sign-in is 3 s old.
    let config = Config {
        reauth_window: Duration::from_secs(3),
        ..Config::default()
    };
    let app = Running::start(data.path(), config).await;
    // Chromium treats http://localhost as a secure context, so the production cookie
    // (__Host- prefix, Secure) is set and sent over plain HTTP here.
    let base = format!("http://localhost:{}", app.addr.port());
    let profiles = tempfile::tempdir()?;
    let a = browser(driver, chromium, &profiles.path().join("a"), UA_LAPTOP).await?;
    let b = browser(driver, chromium, &profiles.path().join("b"), UA_PHONE).await?;
    let devices = Locator::Css("section.device.current");
    let login_form = Locator::Css("form#credentials[action='/login']");
    let password = "correct horse battery";

    // A signs up (and is signed in), B logs in as the same user.
    submit_credentials(&a, &format!("{base}/signup"), "alice", password, devices).await?;
    assert_eq!(path_of(&a).await?, "/devices");
    submit_credentials(&b, &format!("{base}/login"), "alice", password, devices).await?;
    assert_eq!(path_of(&b).await?, "/devices");

    // A's devices page lists both, A's own marked and labelled from its User-Agent;
    // each with its browser and how it signed in.
    a.goto(&format!("{base}/devices")).await?;
    assert_eq!(device_count(&a).await?, 2, "A sees two devices");
    let current = a.find(Locator::Css("section.device.current h2")).await?;
    assert!(current.text().await?.starts_with("Chrome 156 on Linux"));
    let other = a.find(Locator::Css("section.device:not(.current)")).await?;
    assert!(other.text().await?.contains("Chrome 156 on Android"));
    for (card, system) in [
        ("section.device.current", "Linux"),
        ("section.device:not(.current)", "Android"),
    ] {
        let field = |class: &str| {
            let css = format!("{card} dd.{class}");
            let a = a.clone();
            async move { a.find(Locator::Css(&css)).await?.text().await }
        };
        assert_eq!(field("browser").await?, "Chrome 156", "{card}");
        assert_eq!(field("system").await?, system, "{card}");
        let signed_in = field("signed-in").await?;
        assert!(signed_in.ends_with(" with password"), "{card}: {signed_in}");
    }
    let b_id = other.attr("data-session").await?.expect("a session id");
    assert_eq!(app.store.sessions_of("alice").await?.len(), 2);
    screenshot(&a, shots, "devices.png").await?;

    // A signs B out.
    other
        .find(Locator::Css("button.danger"))
        .await?
        .click()
        .await?;
    let deadline = Instant::now() + Duration::from_secs(20);
    while device_count(&a).await? != 1 {
        assert!(Instant::now() < deadline, "A's page still lists B");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(path_of(&a).await?, "/devices");
    let ended = b_id.parse().map_err(|e| format!("{b_id}: {e:?}"))?;
    assert!(
        app.store.get_by_id(ended).await?.is_none(),
        "B's session ended"
    );
    screenshot(&a, shots, "devices-after-sign-out.png").await?;

    // B's next page load lands on the login page.
    b.goto(&format!("{base}/devices")).await?;
    wait_for_path(&b, "/login").await?;
    b.find(login_form).await?;
    screenshot(&b, shots, "signed-out-device.png").await?;

    // B logs in again and signs out all other devices: A is signed out, B stays.
    submit_credentials(&b, &format!("{base}/login"), "alice", password, devices).await?;
    assert_eq!(device_count(&b).await?, 2);
    b.find(Locator::Id("sign-out-others"))
        .await?
        .click()
        .await?;
    let deadline = Instant::now() + Duration::from_secs(20);
    while device_count(&b).await? != 1 {
        assert!(Instant::now() < deadline, "B's page still lists A");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(path_of(&b).await?, "/devices");
    a.goto(&format!("{base}/devices")).await?;
    wait_for_path(&a, "/login").await?;
    assert_eq!(app.store.sessions_of("alice").await?.len(), 1);

    // A logs in again and, a while later, changes the password: asked for the current
    // one first, then signed in afresh, and B (signed in before) is signed out.
    submit_credentials(&a, &format!("{base}/login"), "alice", password, devices).await?;
    assert_eq!(device_count(&a).await?, 2);
    tokio::time::sleep(Duration::from_millis(3100)).await;
    a.find(Locator::Id("change-password"))
        .await?
        .click()
        .await?;
    wait_for_path(&a, "/password").await?;
    a.find(Locator::Id("reauth")).await?;
    let new_password = "a brand new password";
    a.find(Locator::Id("current"))
        .await?
        .send_keys(password)
        .await?;
    a.find(Locator::Id("new"))
        .await?
        .send_keys(new_password)
        .await?;
    screenshot(&a, shots, "change-password.png").await?;
    a.find(Locator::Id("submit")).await?.click().await?;
    a.wait()
        .at_most(Duration::from_secs(20))
        .for_element(devices)
        .await?;
    assert_eq!(device_count(&a).await?, 1, "B was signed out");
    b.goto(&format!("{base}/devices")).await?;
    wait_for_path(&b, "/login").await?;
    assert_eq!(app.store.sessions_of("alice").await?.len(), 1);
    // The old password no longer signs B in; the new one does.
    let refused = Locator::Css("p.error");
    submit_credentials(&b, &format!("{base}/login"), "alice", password, refused).await?;
    assert_eq!(path_of(&b).await?, "/login");
    submit_credentials(&b, &format!("{base}/login"), "alice", new_password, devices).await?;

    // A signs out everywhere; both are signed out.
    a.goto(&format!("{base}/devices")).await?;
    assert_eq!(device_count(&a).await?, 2);
    a.find(Locator::Id("sign-out-everywhere"))
        .await?
        .click()
        .await?;
    wait_for_path(&a, "/login").await?;
    b.goto(&format!("{base}/devices")).await?;
    wait_for_path(&b, "/login").await?;
    assert!(app.store.sessions_of("alice").await?.is_empty());

    a.close().await?;
    b.close().await?;
    app.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_browsers_one_signs_the_other_out_which_lands_on_the_login_page() {
    if std::env::var_os(SKIP_ENV).is_some_and(|v| v == "1") {
        eprintln!("SKIPPED: {SKIP_ENV}=1 (the browser test did not run)");
        return;
    }
    let chromium = tool("SESSIONDB_CHROMIUM", "/usr/bin/chromium");
    let chromedriver = tool("SESSIONDB_CHROMEDRIVER", "/usr/bin/chromedriver");
    for (what, path) in [("chromium", &chromium), ("chromedriver", &chromedriver)] {
        assert!(
            path.is_file(),
            "{what} not found at {}: install Debian's browser and driver with \
             `apt-get install -y chromium chromium-driver` (or set SESSIONDB_CHROMIUM / \
             SESSIONDB_CHROMEDRIVER), or set {SKIP_ENV}=1 to skip this test",
            path.display()
        );
    }
    // A relative screenshot directory is relative to the repository root.
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let target = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let shots = std::env::var_os(SCREENSHOT_ENV)
        .map_or_else(|| target.join("screenshots"), |d| repo.join(d));
    std::fs::create_dir_all(&shots).unwrap();
    let log = target.join("chromedriver.log");
    let driver = Driver::start(&chromedriver, &log).unwrap();
    let outcome =
        tokio::time::timeout(Duration::from_secs(180), flow(&chromium, &driver, &shots)).await;
    drop(driver);
    match outcome {
        Ok(Ok(())) => eprintln!("screenshots in {}", shots.display()),
        Ok(Err(e)) => panic!(
            "browser flow failed: {e} (chromedriver log: {})",
            log.display()
        ),
        Err(_) => panic!(
            "browser flow took over 180 s (chromedriver log: {})",
            log.display()
        ),
    }
}
