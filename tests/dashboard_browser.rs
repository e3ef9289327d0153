//! The dashboard in a real headless Chromium (Debian's `chromium` and
//! `chromium-driver`), driven over WebDriver by tests/dashboard_browser.py: sign
//! in, see the users (a hostile one shown as text), suspend one (checked through
//! the API), and a screenshot of the charts that is not blank.

mod common;

use common::web::{admin_addr, request};
use common::{Harness, Setup, TestUser, have};
use serde_json::Value;

const TOKEN: &str = "0123456789abcdef0123456789abcdef";

/// Markup that would run script if the page ever inserted it as HTML. User names
/// cannot hold spaces (the users file refuses them), so this one uses `/`.
const HOSTILE_NAME: &str = "<img/src=x/onerror=alert(1)>";
const HOSTILE_REASON: &str = "<img src=x onerror=alert(2)>";

/// Chromium and its driver are needed: missing, the test fails and says so.
fn require_browser() {
    for tool in ["chromium", "chromedriver"] {
        assert!(
            have_quietly(tool),
            "{tool} is not installed: `apt-get install chromium chromium-driver` \
             (.ci/run installs them); this test never skips"
        );
    }
}

fn have_quietly(tool: &str) -> bool {
    std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .is_ok_and(|o| o.status.success())
}

#[tokio::test]
async fn sign_in_see_users_suspend_one_and_the_charts_are_drawn() {
    require_browser();
    assert!(have("python3") && have("curl"));
    let mut users = Setup::default().users;
    users.push(TestUser::new(
        HOSTILE_NAME,
        "hostile-password",
        &["@hostile.example"],
    ));
    let h = Harness::start(Setup {
        users,
        extra: "admin:\n  address: \"127.0.0.1:0\"\n  token_file: admin.token\n".into(),
        files: vec![("admin.token", format!("{TOKEN}\n"))],
        ..Setup::default()
    })
    .await;
    let base = format!("http://{}", admin_addr(&h));
    let auth = format!("Authorization: Bearer {TOKEN}");
    // The hostile user is suspended with a hostile reason: both show on the page.
    let hostile_path = format!(
        "{base}/api/v1/users/{}/suspend",
        HOSTILE_NAME
            .bytes()
            .map(|b| format!("%{b:02X}"))
            .collect::<String>()
    );
    let body = serde_json::json!({ "reason": HOSTILE_REASON }).to_string();
    let headers = [auth.clone(), "Content-Type: application/json".to_string()];
    let r = request("POST", &hostile_path, &headers, Some(&body), &[]).await;
    assert_eq!(r.status, 200, "{r:?}");

    let work = h.dir.path().join("browser");
    std::fs::create_dir_all(&work).unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/dashboard_browser.py");
    let out = tokio::time::timeout(
        std::time::Duration::from_secs(180),
        tokio::process::Command::new("python3")
            .args([script, &base, TOKEN, "alice", HOSTILE_NAME])
            .arg(&work)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the browser run finishes within 3 minutes")
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "browser run failed: {stderr}\n{stdout}"
    );
    let seen: Value = serde_json::from_str(stdout.trim()).expect("one JSON line");

    // The users, the hostile name and reason as text: no image, no alert.
    let names: Vec<&str> = seen["names"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap())
        .collect();
    assert!(names.contains(&"alice"), "{seen}");
    assert!(names.contains(&HOSTILE_NAME), "{seen}");
    let row = seen["hostile_row_text"].as_str().unwrap();
    assert!(row.contains(HOSTILE_REASON), "{row}");
    assert_eq!(seen["images"], 0, "markup from data became an element");
    assert_eq!(seen["alert"], false);
    assert_eq!(
        seen["cookie_visible_to_script"], "",
        "the cookie is HttpOnly"
    );
    assert_eq!(seen["status_note"], "", "no error shown: {seen}");

    // The click suspended alice, as the API says.
    let alice = request(
        "GET",
        &format!("{base}/api/v1/users/alice"),
        &[auth],
        None,
        &[],
    )
    .await;
    let alice = alice.json();
    assert_eq!(alice["suspended"], true, "{alice}");
    assert_eq!(
        alice["suspension"]["reason"],
        "suspended from the dashboard"
    );

    // The charts were drawn: a real image with the series' colours in it.
    let shot = &seen["shot"];
    assert!(shot["width"].as_u64().unwrap() > 300, "{shot}");
    assert!(shot["height"].as_u64().unwrap() > 200, "{shot}");
    assert!(
        shot["colours"].as_u64().unwrap() >= 8,
        "a blank screenshot? {shot}"
    );
    assert_eq!(shot["has_accepted"], true, "{shot}");
    assert_eq!(shot["has_refused"], true, "{shot}");
    assert!(seen["chart_bars"].as_u64().unwrap() >= 2, "{seen}");
    // The dashboard's calls left no secret in the log.
    for line in h.logs() {
        assert!(!line.contains(TOKEN), "{line}");
    }
}
