//! The DATA receiver: split anywhere, it finds the same end and yields the same
//! content; it ends a message only after CRLF.CRLF; its output is canonical CRLF text.
#![no_main]
use libfuzzer_sys::fuzz_target;
use postern::proto::data::{DataReceiver, Feed};

fn run(input: &[u8], cuts: &[usize], limit: usize) -> (Option<usize>, Vec<u8>, Option<String>) {
    let mut rx = DataReceiver::new(limit);
    let mut out = Vec::new();
    let mut start = 0;
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
    points.push(input.len());
    points.sort_unstable();
    for end in points {
        if end < start {
            continue;
        }
        if let Feed::Done { consumed } = rx.feed(&input[start..end], &mut out) {
            return (Some(start + consumed), out, rx.error().map(|e| e.to_string()));
        }
        start = end;
    }
    (None, out, rx.error().map(|e| e.to_string()))
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 3 {
        return;
    }
    let limit = usize::from(data[0]) * 64 + 1;
    let ncuts = usize::from(data[1] % 8);
    let cuts: Vec<usize> = data[2..].iter().take(ncuts).map(|&b| usize::from(b) * 7).collect();
    let input = &data[(2 + ncuts).min(data.len())..];

    let whole = run(input, &[], limit);
    let split = run(input, &cuts, limit);
    assert_eq!(whole, split, "a split changed the result");

    let (end, out, error) = whole;
    if let Some(end) = end {
        let taken = &input[..end];
        // Only CRLF.CRLF ends a message (or .CRLF right after the DATA line).
        assert!(taken == b".\r\n" || taken.ends_with(b"\r\n.\r\n"), "{taken:?}");
    }
    if error.is_none() {
        // Canonical: every LF has its CR, every CR its LF, no NUL.
        for (i, &b) in out.iter().enumerate() {
            match b {
                b'\n' => assert!(i > 0 && out[i - 1] == b'\r'),
                b'\r' => assert_eq!(out.get(i + 1), Some(&b'\n')),
                0 => panic!("NUL in output"),
                _ => {}
            }
        }
        assert!(out.is_empty() || out.ends_with(b"\r\n"));
        assert!(out.len() <= limit);
    }
});
