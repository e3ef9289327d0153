//! The config and users-file loaders: any text gives a config or a list of problems,
//! never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use postern::config::{Config, Problems, RateLimits, parse_users};
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut problems = Problems::default();
    let base = Path::new("/nonexistent-postern-fuzz");
    let _ = Config::from_yaml(text, &base.join("postern.yaml"), base, &mut problems);
    let mut problems = Problems::default();
    let _ = parse_users(text, &base.join("users.yaml"), &RateLimits::default(), &mut problems);
});
