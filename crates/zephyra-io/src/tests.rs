use super::*;

#[test]
fn replaces_the_contents_and_leaves_no_temporary() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.json");
    std::fs::write(&path, "old contents, longer than the new").unwrap();
    write_atomic(&path, b"new").unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), b"new");
    assert_eq!(names(dir.path()), ["a.json"]);
}

#[test]
fn an_open_reader_keeps_the_old_file_whole() {
    // The new file is renamed over the old one, never written into it: a reader that opened the old file
    // reads all of it, and the next open sees all of the new one.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.bin");
    write_atomic(&path, &[1u8; 4096]).unwrap();
    let mut reader = std::fs::File::open(&path).unwrap();
    write_atomic(&path, &[2u8; 100]).unwrap();
    let mut old = Vec::new();
    std::io::Read::read_to_end(&mut reader, &mut old).unwrap();
    assert_eq!(old, [1u8; 4096]);
    assert_eq!(std::fs::read(&path).unwrap(), [2u8; 100]);
}

#[cfg(unix)]
#[test]
fn new_files_are_readable_by_all_like_any_user_file() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sae_weights.safetensors");
    write_atomic(&path, b"x").unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    // What `File::create` gives under the same umask.
    let plain = dir.path().join("plain");
    std::fs::write(&plain, b"x").unwrap();
    let expected = std::fs::metadata(&plain).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, expected, "{mode:o} vs File::create's {expected:o}");
    assert_eq!(mode & 0o644, mode, "never more than 0644: {mode:o}");
    assert_eq!(mode & 0o600, 0o600, "the owner reads and writes: {mode:o}");
}

#[test]
fn creates_a_missing_parent_directory() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run").join("cfg.json");
    write_atomic(&path, b"{}").unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), b"{}");
}

#[test]
fn a_failure_names_the_path_and_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    // The destination is a non-empty directory: the rename fails after the temporary file was written.
    let target = dir.path().join("taken");
    std::fs::create_dir(&target).unwrap();
    std::fs::write(target.join("keep"), b"k").unwrap();
    let err = write_atomic(&target, b"new").unwrap_err();
    assert_eq!(
        (err.action, err.path.as_path()),
        ("renaming into", target.as_path())
    );
    assert!(err.to_string().contains("taken"), "{err}");
    assert_eq!(names(dir.path()), ["taken"], "no temporary file left");
    assert_eq!(names(&target), ["keep"]);

    // A parent that is a file cannot become a directory: the error names it.
    let file = dir.path().join("file");
    std::fs::write(&file, b"f").unwrap();
    let err = write_atomic(&file.join("x.json"), b"x").unwrap_err();
    assert_eq!(err.path, file, "{err}");
    assert!(std::error::Error::source(&err).is_some());
}

#[test]
fn sha256_of_known_contents() {
    // sha256("abc") from FIPS 180-2, appendix B.1; sha256("") is the well-known e3b0… digest.
    let abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
    let empty = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    assert_eq!(sha256_hex(b"abc"), abc);
    assert_eq!(sha256_hex(b""), empty);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("abc.txt");
    std::fs::write(&path, b"abc").unwrap();
    assert_eq!(sha256_file(&path).unwrap(), abc);
    // Longer than one read buffer: the stream gives the same digest as the bytes in memory.
    let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&path, &big).unwrap();
    assert_eq!(sha256_file(&path).unwrap(), sha256_hex(&big));
    let err = sha256_file(&dir.path().join("missing")).unwrap_err();
    assert_eq!(err.action, "opening");
    assert!(err.to_string().contains("missing"), "{err}");
}

/// The names in `dir`, sorted.
fn names(dir: &Path) -> Vec<String> {
    let entries = std::fs::read_dir(dir).unwrap();
    let mut names: Vec<String> = entries
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}
