//! The policy loader and compiler: YAML text -> index -> read -> validate -> lint -> compile
//! (`otfw check`, `otfw run --policy`, `otfw apply`). A policy file is operator input and may be
//! anything: it must never panic, and every refusal must say where (`file:line:col`).

#![no_main]

use libfuzzer_sys::fuzz_target;
use otfw::policy::check_str;

const FILE: &str = "fuzz.yaml";

fuzz_target!(|data: &[u8]| {
    // `policy::load` reads the file as UTF-8 and refuses anything else before parsing.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (loaded, diagnostics) = check_str(FILE, text);
    // yaml-rust2 counts a line break at "\n", "\r\n" and a lone "\r"; the end of the input may
    // be one line further.
    let last_line = text.matches(['\n', '\r']).count() + 1;
    for d in &diagnostics {
        assert_eq!(d.file, FILE);
        assert!(
            (1..=last_line).contains(&d.line) && d.col >= 1,
            "diagnostic outside the file ({last_line} lines): {d}"
        );
        assert!(
            !d.message.trim().is_empty(),
            "diagnostic without a message: {d}"
        );
        let position = format!("{FILE}:{}:{}: ", d.line, d.col);
        assert!(d.to_string().starts_with(&position), "{d}");
    }
    let errors = diagnostics.iter().filter(|d| d.is_error()).count();
    match loaded {
        None => assert!(errors > 0, "refused without an error: {diagnostics:?}"),
        Some(loaded) => {
            assert_eq!(errors, 0, "loaded despite errors: {diagnostics:?}");
            assert_eq!(loaded.warnings, diagnostics);
        }
    }
});
