//! The CSV reader (`gpuprep::io::parse_csv`, and `read_matrix` on a .csv
//! file, which reads as f32) on any text and options: an `Ok` or an `Err`,
//! never a panic, an abort or a hang.
#![no_main]

use gpuprep::io::{parse_csv, read_matrix, CsvOptions, Delimiter, Format, NonFinite, ReadOptions};
use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let delimiter = match flags & 3 {
        0 => Delimiter::Char(','),
        1 => Delimiter::Char('\t'),
        2 => Delimiter::Char(';'),
        _ => Delimiter::Whitespace,
    };
    let non_finite = if flags & 4 == 0 {
        NonFinite::Reject
    } else {
        NonFinite::Allow
    };
    if let Ok(text) = std::str::from_utf8(rest) {
        let options = CsvOptions {
            delimiter,
            non_finite,
            op: "fuzz",
        };
        let _ = parse_csv(std::path::Path::new("fuzz.csv"), text, &options);
    }
    let path = common::scratch_file("csv", rest);
    let _ = read_matrix(
        &path,
        &ReadOptions {
            format: Some(Format::Csv),
            delimiter,
            non_finite,
            ..Default::default()
        },
    );
});
